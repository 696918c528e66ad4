"""covseg batch with the fake per-study task (tests/test_batch_support.py documents it).

Expected values come from the study specs (study i: lung 4000 + 10 i ml, infection 20 (i + 1) ml),
not from the code under test; parquet is read back by pyarrow and the plot by Pillow.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_batch_support import calls_per_key, fake_env, make_studies, write_list

from covseg.cli import run
from covseg.engine.batch import BatchOptions, run_batch
from covseg.engine.batch.longitudinal import longitudinal_rows
from covseg.engine.batch.summary import write_csv

TASK = "test_batch_support:fake_task"
TESTS = Path(__file__).resolve().parent


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def by_name(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {Path(r["input_path"]).name: r for r in rows}


def batch(*args: str) -> int:
    return run(["batch", *args, "--task", TASK])


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in fake_env(tmp_path / "calls").items():
        monkeypatch.setenv(name, value)
    return tmp_path / "calls"


def test_ten_studies_two_broken_give_eight_ok_two_failed_exit_8(tmp_path: Path, calls: Path) -> None:
    make_studies(tmp_path / "in", 10, broken=(3, 7))
    out = tmp_path / "out"
    assert batch(str(tmp_path / "in"), "--out", str(out)) == 8
    rows = by_name(read_rows(out / "summary.csv"))
    assert len(rows) == 10
    failed = {name for name, r in rows.items() if r["status"] == "failed"}
    assert failed == {"case_03.nii.gz", "case_07.nii.gz"}
    for name in failed:
        assert f"{name}: not a CT volume" in rows[name]["error"]
        assert (out / "studies" / rows[name]["key"] / "failed.json").is_file()
        assert not (out / "studies" / rows[name]["key"] / "done.json").exists()
    for index in (0, 1, 2, 4, 5, 6, 8, 9):
        row = rows[f"case_{index:02d}.nii.gz"]
        assert row["status"] == "ok" and row["error"] == ""
        assert float(row["infection.volume_ml"]) == 20 * (index + 1)
        assert float(row["infection.percent_of_lungs"]) == pytest.approx(100 * 20 * (index + 1) / (4000 + 10 * index))
        assert float(row["structures.lung_left.volume_ml"]) == (4000 + 10 * index) / 2
        assert row["structures.liver.volume_ml"] == ""  # null stays null, with its reason
        assert "liver model not run" in row["reasons"]
        assert row["models"] == "fake-lung;fake-infection" and row["model_sha256"] == f"{'a' * 64};{'b' * 64}"
        assert row["key"].startswith("file-") and "case" not in row["key"]
        assert (out / "studies" / row["key"] / "done.json").is_file()
    assert sum(calls_per_key(calls).values()) == 10


def test_parquet_and_plot_are_readable_by_other_libraries(tmp_path: Path, calls: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    from PIL import Image

    make_studies(tmp_path / "in", 4, broken=(1,))
    out = tmp_path / "out"
    assert batch(str(tmp_path / "in"), "--out", str(out)) == 8
    table = pq.read_table(out / "summary.parquet").to_pylist()
    csv_rows = read_rows(out / "summary.csv")
    assert [r["key"] for r in table] == [r["key"] for r in csv_rows]
    volumes = {Path(r["input_path"]).name: r["infection.volume_ml"] for r in table}
    assert volumes == {"case_00.nii.gz": 20.0, "case_01.nii.gz": None, "case_02.nii.gz": 60.0, "case_03.nii.gz": 80.0}
    with Image.open(out / "summary.png") as image:
        assert image.format == "PNG" and image.size[0] > 100


def test_killed_run_resumes_without_recomputing_finished_studies(tmp_path: Path, calls: Path) -> None:
    make_studies(tmp_path / "in", 9)
    reference = tmp_path / "reference"
    assert batch(str(tmp_path / "in"), "--out", str(reference)) == 0
    reference_csv = (reference / "summary.csv").read_text()
    for marker in calls.iterdir():
        marker.unlink()

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "COVSEG_FAKE_KILL_AFTER": "4"}
    killed = subprocess.run([sys.executable, "-m", "covseg", "batch", str(tmp_path / "in"), "--out", str(out),
                             "--task", TASK], env=env, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    finished = {p.parent.name for p in (out / "studies").glob("*/done.json")}
    assert len(finished) == 4
    assert batch(str(tmp_path / "in"), "--out", str(out)) == 5  # refuses to mix without --resume
    assert batch(str(tmp_path / "in"), "--out", str(out), "--resume") == 0
    counts = calls_per_key(calls)
    assert len(counts) == 9 and set(counts.values()) == {1}, counts  # nothing computed twice
    assert (out / "summary.csv").read_text() == reference_csv
    assert batch(str(tmp_path / "in"), "--out", str(out), "--resume") == 0  # all done: nothing runs
    assert sum(calls_per_key(calls).values()) == 9


def test_resume_recomputes_changed_inputs_damaged_outputs_and_new_settings(tmp_path: Path, calls: Path) -> None:
    paths = make_studies(tmp_path / "in", 4)
    out = tmp_path / "out"
    options = BatchOptions(out=out, task=TASK, resume=True, infer_options={"overlap": 0.5})
    first = run_batch([str(tmp_path / "in")], options)
    assert first.computed == 4 and first.reused == 0
    paths[0].write_text('{"lung_ml": 5000, "infection_ml": 500}')  # a changed input
    keys = {Path(r["input_path"]).name: r["key"] for r in first.rows}
    (out / "studies" / keys["case_01.nii.gz"] / "labels.nii.gz").unlink()  # a damaged output
    (out / "studies" / keys["case_02.nii.gz"] / "report.json").write_text("{}")  # a tampered report
    second = run_batch([str(tmp_path / "in")], options)
    assert (second.computed, second.reused) == (3, 1)
    assert by_name(read_rows(out / "summary.csv"))["case_00.nii.gz"]["infection.volume_ml"] == "500.0"
    third = run_batch([str(tmp_path / "in")], BatchOptions(out=out, task=TASK, resume=True,
                                                           infer_options={"overlap": 0.25}))
    assert (third.computed, third.reused) == (4, 0)
    assert calls_per_key(calls)[keys["case_03.nii.gz"]] == 2


def test_shards_merged_equal_the_unsharded_table(tmp_path: Path, calls: Path) -> None:
    make_studies(tmp_path / "in", 10, broken=(5,))
    assert batch(str(tmp_path / "in"), "--out", str(tmp_path / "all")) == 8
    reference = {name: (tmp_path / "all" / name).read_text() for name in ("summary.csv", "longitudinal.csv")}
    shard_keys = []
    for index in (1, 2, 3):  # a job array whose tasks write to their own folders
        code = batch(str(tmp_path / "in"), "--out", str(tmp_path / f"s{index}"), "--shard", f"{index}/3")
        assert code in (0, 8)
        shard_keys.append({r["key"] for r in read_rows(tmp_path / f"s{index}" / f"shard-{index}-of-3" / "summary.csv")})
    assert sum(len(k) for k in shard_keys) == 10 and len(set.union(*shard_keys)) == 10
    assert run(["batch-merge", *(str(tmp_path / f"s{i}") for i in (1, 2, 3)), "--out", str(tmp_path / "m")]) == 0
    assert {name: (tmp_path / "m" / name).read_text() for name in reference} == reference
    for index in (3, 1, 2):  # a job array sharing one folder: the tables do not overwrite each other
        assert batch(str(tmp_path / "in"), "--out", str(tmp_path / "shared"), "--shard", f"{index}/3") in (0, 8)
    assert run(["batch-merge", str(tmp_path / "shared"), "--out", str(tmp_path / "shared")]) == 0
    assert {name: (tmp_path / "shared" / name).read_text() for name in reference} == reference
    assert sum(calls_per_key(calls).values()) == 30


def test_bad_shard_and_missing_input_are_user_errors(tmp_path: Path) -> None:
    make_studies(tmp_path / "in", 1)
    assert batch(str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--shard", "4/3") == 2
    assert batch(str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--shard", "x") == 2
    assert batch(str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--backend", "ray") == 2
    assert batch(str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")) == 3
    assert batch(str(tmp_path / "in" / "*.nrrd"), "--out", str(tmp_path / "o")) == 3
    (tmp_path / "empty").mkdir()
    assert batch(str(tmp_path / "empty"), "--out", str(tmp_path / "o")) == 3


def test_csv_list_gives_longitudinal_deltas(tmp_path: Path, calls: Path) -> None:
    paths = make_studies(tmp_path / "in", 5)
    listing = write_list(tmp_path / "list.csv", [
        {"path": "in/case_02.nii.gz", "patient_id": "MRN-7", "study_date": "2020-03-11"},
        {"path": str(paths[0]), "patient_id": "MRN-7", "study_date": "20200301"},
        {"path": "in/case_04.nii.gz", "patient_id": "MRN-7", "study_date": "2020-03-21"},
        {"path": "in/case_01.nii.gz", "patient_id": "MRN-9", "study_date": "2020-04-01"},
        {"path": "in/case_03.nii.gz", "patient_id": "", "study_date": ""},
    ])
    out = tmp_path / "out"
    assert batch(str(listing), "--out", str(out)) == 0
    rows = read_rows(out / "longitudinal.csv")
    patients = [r["patient_id"] for r in rows]
    seven = [r for r in rows if patients.count(r["patient_id"]) == 3]
    assert [r["study_date"] for r in seven] == ["2020-03-01", "2020-03-11", "2020-03-21"]
    assert [r["delta_volume_ml"] for r in seven] == ["", "40.0", "40.0"]  # 20 -> 60 -> 100 ml
    assert [r["days_since_previous"] for r in seven] == ["", "10", "10"]
    assert float(seven[1]["relative_volume_change_percent"]) == pytest.approx(200.0)
    assert len(rows) == 4 and "MRN" not in (out / "summary.csv").read_text()  # pseudonyms only
    assert all(p.startswith("anon-") for p in patients) and len(set(patients)) == 2


def test_anonymize_withholds_paths_names_and_dates_but_keeps_follow_up_intervals(tmp_path: Path,
                                                                                 calls: Path) -> None:
    paths = make_studies(tmp_path / "in", 3)
    listing = write_list(tmp_path / "list.csv", [
        {"path": str(p), "patient_id": "MRN-7", "study_date": f"2020-03-{1 + 5 * i:02d}"} for i, p in enumerate(paths)])
    out = tmp_path / "out"
    assert batch(str(listing), "--out", str(out), "--anonymize") == 0
    text = "".join((out / name).read_text() for name in ("summary.csv", "longitudinal.csv"))
    assert "case_0" not in text and "2020" not in text and "MRN" not in text and str(tmp_path) not in text
    assert not any("case" in p.name for p in (out / "studies").iterdir())
    rows = read_rows(out / "longitudinal.csv")
    assert [r["days_since_first"] for r in rows] == ["0", "5", "10"]
    assert [r["delta_volume_ml"] for r in rows] == ["", "20.0", "20.0"]


def test_longitudinal_deltas_on_known_values() -> None:
    def row(key: str, patient: str | None, date: str | None, volume: float | None, percent: float | None,
            status: str = "ok") -> dict[str, object]:
        return {"key": key, "status": status, "patient_id": patient, "study_date": date,
                "infection.volume_ml": volume, "infection.percent_of_lungs": percent}

    table = longitudinal_rows([
        row("c", "A", "2020-03-11", 150.0, 3.0), row("a", "A", "2020-03-01", 100.0, 2.0),
        row("b", "A", "2020-03-05", 120.0, 2.5), row("d", "B", "2020-01-01", 0.0, 0.0),
        row("e", "B", "2020-01-08", 10.0, 0.25), row("f", "A", "2020-03-02", None, None, status="failed"),
        row("g", "A", None, 99.0, 9.0), row("h", None, "2020-03-02", 5.0, 1.0)])
    assert [(r["patient_id"], r["key"], r["follow_up"]) for r in table] == [
        ("A", "a", 0), ("A", "b", 1), ("A", "c", 2), ("B", "d", 0), ("B", "e", 1)]
    assert [r.get("delta_volume_ml") for r in table] == [None, 20.0, 30.0, None, 10.0]
    assert [r.get("delta_percent_points") for r in table] == [None, 0.5, 0.5, None, 0.25]
    assert [r.get("days_since_previous") for r in table] == [None, 4, 6, None, 7]
    assert [r["days_since_first"] for r in table] == [0, 4, 10, 0, 7]
    assert table[1]["relative_volume_change_percent"] == pytest.approx(20.0)
    assert table[2]["relative_volume_change_percent"] == pytest.approx(25.0)
    assert table[4]["relative_volume_change_percent"] is None  # from 0 ml a ratio has no meaning


def test_summary_write_crash_leaves_previous_summary_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "summary.csv"
    rows = [{"key": f"k{i}", "status": "ok", "infection.volume_ml": float(i)} for i in range(5)]
    write_csv(rows, target)
    before = target.read_text()
    written = []

    def crash(self: csv.DictWriter, row: dict[str, str]) -> None:
        written.append(row)
        if len(written) == 3:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerow", crash)
    with pytest.raises(OSError, match="No space"):
        write_csv([{**r, "infection.volume_ml": 0.0} for r in rows], target)
    assert target.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv"]  # no temporary left behind


@pytest.mark.slow
def test_two_process_workers_give_the_same_table(tmp_path: Path, calls: Path) -> None:
    make_studies(tmp_path / "in", 6, broken=(2,))
    assert batch(str(tmp_path / "in"), "--out", str(tmp_path / "one")) == 8
    assert batch(str(tmp_path / "in"), "--out", str(tmp_path / "two"), "--workers", "2",
                 "--threads-per-worker", "1") == 8
    assert (tmp_path / "two" / "summary.csv").read_text() == (tmp_path / "one" / "summary.csv").read_text()
    assert set(calls_per_key(calls).values()) == {2}


def test_model_identity_keys_resume_and_bad_packages_stop_early(tmp_path: Path, calls: Path) -> None:
    from model_factory import make_package

    lung = make_package(tmp_path / "models", "lung")
    other = make_package(tmp_path / "models2", "lung", seed=1, version="0.0.2")
    make_studies(tmp_path / "in", 3)
    out = tmp_path / "out"
    assert batch(str(tmp_path / "in"), "--out", str(out), "--model", str(lung)) == 0
    assert batch(str(tmp_path / "in"), "--out", str(out), "--model", str(lung), "--resume") == 0
    assert sum(calls_per_key(calls).values()) == 3  # same package: nothing recomputed
    assert batch(str(tmp_path / "in"), "--out", str(out), "--model", str(other), "--resume") == 0
    assert set(calls_per_key(calls).values()) == {2}  # another package: every study again
    (tmp_path / "broken").mkdir()
    assert batch(str(tmp_path / "in"), "--out", str(tmp_path / "o2"), "--model", str(tmp_path / "broken")) == 4
    assert sum(calls_per_key(calls).values()) == 6  # refused before any study ran


@pytest.mark.slow
def test_process_group_killed_at_a_random_moment_resumes_exactly(tmp_path: Path, calls: Path) -> None:
    import time

    make_studies(tmp_path / "in", 8, broken=(6,))
    assert batch(str(tmp_path / "in"), "--out", str(tmp_path / "reference")) == 8
    for marker in calls.iterdir():
        marker.unlink()
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "COVSEG_FAKE_DELAY_S": "0.3"}
    process = subprocess.Popen([sys.executable, "-m", "covseg", "batch", str(tmp_path / "in"), "--out", str(out),
                                "--task", TASK, "--workers", "2", "--threads-per-worker", "1"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 90
    while len(list(out.glob("studies/*/done.json"))) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the batch and its workers, as a job scheduler does
    assert process.wait(timeout=30) == -signal.SIGKILL
    finished = {p.parent.name for p in out.glob("studies/*/done.json")}
    assert 3 <= len(finished) < 7
    assert batch(str(tmp_path / "in"), "--out", str(out), "--resume") == 8
    counts = calls_per_key(calls)
    assert all(counts[key] == 1 for key in finished), counts  # nothing finished was computed again
    assert len(counts) == 8
    assert (out / "summary.csv").read_text() == (tmp_path / "reference" / "summary.csv").read_text()


@pytest.mark.slow
def test_a_study_that_kills_its_worker_fails_alone(tmp_path: Path, calls: Path) -> None:
    paths = make_studies(tmp_path / "in", 6)
    paths[2].write_text("CRASH")
    out = tmp_path / "out"
    assert batch(str(tmp_path / "in"), "--out", str(out), "--workers", "2", "--threads-per-worker", "1") == 8
    rows = by_name(read_rows(out / "summary.csv"))
    assert [rows[p.name]["status"] for p in paths] == ["ok", "ok", "failed", "ok", "ok", "ok"]
    assert "worker process died" in rows["case_02.nii.gz"]["error"]
    counts = calls_per_key(calls)
    assert counts[rows["case_02.nii.gz"]["key"]] == 2  # in the pool, then alone
    assert all(counts[rows[p.name]["key"]] <= 2 for p in paths)


def test_merge_keeps_the_best_row_of_a_study_and_refuses_non_batch_folders(tmp_path: Path) -> None:
    from covseg.engine.batch.summary import merge_rows

    first = [{"key": "a", "status": "failed", "error": "x"}, {"key": "b", "status": "ok"}]
    second = [{"key": "a", "status": "ok", "error": None}, {"key": "c", "status": "skipped"}]
    merged = merge_rows([first, second])
    assert [(r["key"], r["status"]) for r in merged] == [("a", "ok"), ("b", "ok"), ("c", "skipped")]
    (tmp_path / "empty").mkdir()
    assert run(["batch-merge", str(tmp_path / "empty"), "--out", str(tmp_path / "m")]) == 3


def test_batch_imports_neither_torch_nor_training() -> None:
    code = ("import sys, covseg.engine.batch.runner, covseg.engine.batch.dask_backend, covseg.engine.batch.sessions, "
            "covseg.engine.batch.plots, covseg.engine.batch.local_backend, covseg.commands.batch; "
            "print([m for m in ('torch', 'monai', 'covseg.training', 'covseg.export') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stderr


def test_ctrl_c_keeps_finished_work_and_the_running_table_shows_only_records(
        tmp_path: Path, calls: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from covseg.engine.batch import runner

    make_studies(tmp_path / "in", 5)
    out = tmp_path / "out"
    monkeypatch.setattr(runner, "REBUILD_EVERY_S", 0.0)  # refresh the table after every study
    monkeypatch.setenv("COVSEG_FAKE_INTERRUPT_AFTER", "3")
    seen = []

    def progress(event: runner.Progress) -> None:
        if event.last is not None and (out / "summary.csv").exists():
            seen.append([r["status"] for r in read_rows(out / "summary.csv")])

    with pytest.raises(KeyboardInterrupt):
        run_batch([str(tmp_path / "in")], BatchOptions(out=out, task=TASK), progress=progress)
    assert seen == [["ok"], ["ok", "ok"]]  # a refresh lists finished studies only (it follows the callback)
    rows = read_rows(out / "summary.csv")
    assert [r["status"] for r in rows].count("ok") == 3
    assert sum("not finished" in r["error"] for r in rows) == 2
    monkeypatch.delenv("COVSEG_FAKE_INTERRUPT_AFTER")
    resumed = run_batch([str(tmp_path / "in")], BatchOptions(out=out, task=TASK, resume=True))
    assert (resumed.computed, resumed.reused, resumed.count("ok")) == (2, 3, 5)
    assert set(calls_per_key(calls).values()) == {1}


def test_a_batch_folder_inside_the_input_is_not_searched(tmp_path: Path, calls: Path) -> None:
    make_studies(tmp_path / "in", 3)
    out = tmp_path / "in" / "results"
    assert batch(str(tmp_path / "in"), "--out", str(out)) == 0
    assert any(out.glob("studies/*/labels.nii.gz"))  # outputs that look like studies...
    assert batch(str(tmp_path / "in"), "--out", str(out), "--resume") == 0
    assert len(read_rows(out / "summary.csv")) == 3  # ...are never taken for inputs
    assert sum(calls_per_key(calls).values()) == 3


def test_threads_per_worker_keep_workers_times_threads_within_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from covseg.engine.batch import runner

    monkeypatch.setattr(runner, "available_cores", lambda: 8)
    notes: list[str] = []
    assert [runner.threads_for(w, None, notes) for w in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    assert runner.threads_for(2, 3, notes) == 3 and notes == []
    assert runner.threads_for(4, 4, notes) == 2 and "exceeds 8 cores" in notes[0]


def test_infection_threshold_enters_the_settings_only_when_set(tmp_path: Path, calls: Path) -> None:
    make_studies(tmp_path / "in", 2)
    out = str(tmp_path / "out")
    assert batch(str(tmp_path / "in"), "--out", out) == 0
    assert batch(str(tmp_path / "in"), "--out", out, "--resume") == 0  # unset: the earlier records stay valid
    assert sum(calls_per_key(calls).values()) == 2
    assert batch(str(tmp_path / "in"), "--out", out, "--resume", "--infection-threshold", "0.7") == 0
    assert sum(calls_per_key(calls).values()) == 4  # another operating point: recomputed
    assert batch(str(tmp_path / "in"), "--out", out, "--resume", "--infection-threshold", "1.2") == 2
    assert sum(calls_per_key(calls).values()) == 4
