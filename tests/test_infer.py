"""`covseg infer` end to end on a phantom DICOM series and NIfTI, with analytic packages."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

import covseg
from covseg.cli import run
from covseg.engine import pipeline
from covseg.engine.geometry import xyz_to_zyx
from covseg.engine.report import pseudonym
from covseg.training.synthesis.dicom_series import write_dicom_series, write_nifti
from tests.model_factory import make_package
from tests.test_infer_phantom import SPACING, Phantom, make_phantom
from tests.test_writers import check_report_schema

ML = SPACING**3 / 1000.0


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("infer")
    phantom = make_phantom()
    write_dicom_series(phantom.volume, root / "ct", uid_seed="infer-test")
    write_nifti(phantom.volume, root / "ct.nii.gz")
    packages = [make_package(root / "packages", kind, spacing_mm=(SPACING,) * 3, patch=(16, 32, 32))
                for kind in ("lung", "infection", "liver")]
    return {"root": root, "phantom": phantom, "packages": packages}


def _args(study: dict[str, object], source: str, out: Path, *extra: str) -> list[str]:
    models = [a for p in study["packages"] for a in ("--model", str(p))]  # type: ignore[attr-defined]
    return ["infer", str(study["root"] / source), "--out", str(out), *models,  # type: ignore[operator]
            "--device", "cpu", "--threads", "1", "--progress", "none", "--quiet", *extra]


def _truth_ml(phantom: Phantom) -> dict[str, float]:
    t = phantom.truth
    return {"lung_left": np.count_nonzero((t == 1) | (t == 3)) * ML, "lung_right": np.count_nonzero((t == 2) | (t == 4))
            * ML, "liver": np.count_nonzero(t == 5) * ML, "infection": np.count_nonzero((t == 3) | (t == 4)) * ML}


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".covseg-")]


@pytest.mark.slow
def test_dicom_end_to_end(study: dict[str, object], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(_args(study, "ct", out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["labels.nii.gz", "preview.png", "report.json", "seg.dcm"]
    report = json.loads((out / "report.json").read_text())
    check_report_schema(report)
    phantom: Phantom = study["phantom"]  # type: ignore[assignment]
    truth = _truth_ml(phantom)
    for name in ("lung_left", "lung_right", "liver"):
        assert report["structures"][name]["volume_ml"] == pytest.approx(truth[name], rel=0.02)
    assert report["infection"]["volume_ml"] == pytest.approx(truth["infection"], rel=0.02)
    assert report["infection"]["lesion_count"] == 2
    assert report["input"]["format"] == "dicom" and report["input"]["slices"] == phantom.truth.shape[0]
    source = pydicom.dcmread(next((study["root"] / "ct").iterdir()))  # type: ignore[operator]
    assert report["input"]["patient"] == pseudonym(source.PatientID) != source.PatientID
    labels = xyz_to_zyx(np.asarray(nib.load(out / "labels.nii.gz").dataobj))
    assert np.array_equal(labels, phantom.truth)
    seg = hd.seg.segread(out / "seg.dcm")
    assert seg.number_of_segments == 5 and seg.PatientID == source.PatientID
    assert not _leftovers(tmp_path)


@pytest.mark.slow
def test_nifti_end_to_end_anonymized_without_seg(study: dict[str, object], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(_args(study, "ct.nii.gz", out, "--anonymize", "--format", "nrrd")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["labels.nrrd", "preview.png", "report.json"]
    report = json.loads((out / "report.json").read_text())
    check_report_schema(report)
    assert report["outputs"]["seg"] is None and "nifti" in report["reasons"]["outputs.seg"]
    assert report["input"]["path"] is None
    truth = _truth_ml(study["phantom"])  # type: ignore[arg-type]
    assert report["structures"]["lung_left"]["volume_ml"] == pytest.approx(truth["lung_left"], rel=0.02)


def test_anonymized_seg_has_no_patient_identifiers(study: dict[str, object], tmp_path: Path) -> None:
    report = covseg.infer(study["root"] / "ct", tmp_path / "out", model_paths=study["packages"][:1],  # type: ignore
                          device="cpu", threads=1, anonymize=True)
    seg = pydicom.dcmread(tmp_path / "out" / "seg.dcm")
    source = pydicom.dcmread(next((study["root"] / "ct").iterdir()))  # type: ignore[operator]
    assert seg.PatientID != source.PatientID and str(seg.PatientName) != str(source.PatientName)
    assert seg.PatientID == report["input"]["patient"]
    assert report["infection"]["volume_ml"] is None
    assert report["reasons"]["infection.volume_ml"] == "infection model not run"


def test_existing_output_refused_and_untouched(study: dict[str, object], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert run(_args(study, "ct", out)) == 5
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and not _leftovers(tmp_path)


def test_overwrite_replaces_the_old_folder(study: dict[str, object], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert run(_args(study, "ct", out, "--overwrite")) == 0
    assert not (out / "old.txt").exists() and (out / "report.json").is_file()
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_failure_mid_write_leaves_nothing(study: dict[str, object], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        (tmp_path.glob(".covseg-tmp-*").__next__() / "partial.png").write_text("half")
        raise error

    monkeypatch.setattr(pipeline, "write_preview", broken)
    out = tmp_path / "out"
    code = run(_args(study, "ct", out))
    assert code == (5 if isinstance(error, OSError) else 130)
    assert not out.exists() and not _leftovers(tmp_path)


def test_failure_with_overwrite_keeps_the_old_folder(study: dict[str, object], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    monkeypatch.setattr(pipeline, "write_report", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EIO, "I/O")))
    assert run(_args(study, "ct", out, "--overwrite")) == 5
    assert [p.name for p in out.iterdir()] == ["old.txt"] and not _leftovers(tmp_path)


def test_unwritable_output_parent_names_the_folder(study: dict[str, object], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert run(_args(study, "ct", blocker / "out")) == 5
    assert str(blocker) in capsys.readouterr().err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert run(_args(study, "ct", locked / "out")) == 5
        assert str(locked) in capsys.readouterr().err


def test_json_progress_lines(study: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _args(study, "ct.nii.gz", tmp_path / "out")
    args[args.index("--progress") + 1] = "json"
    assert run(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    overall = [line["overall"] for line in lines]
    assert overall == sorted(overall) and overall[-1] == 1.0
    assert all({"stage", "fraction", "overall"} <= set(line) for line in lines)
    assert lines[-1]["stage"] == "done" and Path(lines[-1]["report"]) == tmp_path / "out" / "report.json"
    assert {"read", "lung", "infection", "liver", "postprocess", "write"} <= {line["stage"] for line in lines}


@pytest.mark.slow
def test_synthetic_chest_phantom_lungs(tmp_path: Path) -> None:
    """The procedural chest phantom (vessels, airways, texture, COVID lesions) as a DICOM series: the
    analytic lung model plus postprocessing recover each whole lung (lung + its lesions) within 5%."""
    from covseg.labels import Label
    from covseg.training.synthesis import PhantomConfig
    from covseg.training.synthesis import make_phantom as make_chest

    chest = make_chest(PhantomConfig(seed=1, size_xyz=(96, 96, 48), spacing_xyz=(3.5, 3.5, 3.5),
                                     lesions=("covid",)))
    write_dicom_series(chest.image, tmp_path / "ct", uid_seed="chest")
    package = make_package(tmp_path / "packages", "lung", spacing_mm=(3.5, 3.5, 3.5), patch=(16, 32, 32))
    report = covseg.infer(tmp_path / "ct", tmp_path / "out", model_paths=[package], device="cpu", threads=1)
    truth = chest.labels.array
    lesions = np.isin(truth, [int(Label.INFECTION_GROUND_GLASS), int(Label.INFECTION_CONSOLIDATION)])
    lung_ml = np.count_nonzero(np.isin(truth, [int(Label.LUNG_LEFT), int(Label.LUNG_RIGHT)]) | lesions) * ML
    found = report["structures"]["lung_left"]["volume_ml"] + report["structures"]["lung_right"]["volume_ml"]
    assert found == pytest.approx(lung_ml, rel=0.05)
    for side in (Label.LUNG_LEFT, Label.LUNG_RIGHT):
        side_ml = np.count_nonzero(truth == side) * ML
        assert report["structures"][side.name.lower()]["volume_ml"] == pytest.approx(side_ml, rel=0.10)


def test_seg_failure_costs_only_the_seg(study: dict[str, object], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise ValueError("source images have inconsistent frame of reference")

    monkeypatch.setattr(pipeline, "write_seg", refuse)
    report = covseg.infer(study["root"] / "ct", tmp_path / "out", model_paths=study["packages"][:1],  # type: ignore
                          device="cpu", threads=1)
    assert report["outputs"]["seg"] is None and "frame of reference" in report["reasons"]["outputs.seg"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["labels.nii.gz", "preview.png", "report.json"]


@pytest.mark.slow
def test_infer_runs_without_torch(study: dict[str, object], tmp_path: Path) -> None:
    """An inference-only install has no torch: block it and run `covseg infer` in a fresh interpreter."""
    import subprocess
    import sys

    args = _args(study, "ct.nii.gz", tmp_path / "out")
    script = ("import sys\nfor name in ('torch', 'monai', 'onnx'): sys.modules[name] = None\n"
              "from covseg.cli import run\ncode = run(sys.argv[1:])\n"
              "assert not any(m.startswith(('covseg.training', 'covseg.export')) for m in sys.modules)\n"
              "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "report.json").is_file()


# A memory limit too small is a resource error (6); an invalid option value is a usage error (2).
@pytest.mark.parametrize(("extra", "code"), [(("--max-memory", "1"), 6), (("--device", "gpu"), 2),
                                             (("--format", "dicom"), 2), (("--seg-type", "x"), 2),
                                             (("--infection-threshold", "1"), 2),
                                             (("--infection-threshold", "0"), 2)])
def test_refusals_before_any_output(study: dict[str, object], tmp_path: Path, extra: tuple[str, ...],
                                    code: int) -> None:
    result = run(_args(study, "ct.nii.gz", tmp_path / "out", *extra))
    assert result == code
    assert list(tmp_path.iterdir()) == []


def test_missing_input_is_an_input_error(study: dict[str, object], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert run(_args(study, "no-such-study", tmp_path / "out")) == 3
    assert "no-such-study" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_bar_progress_and_kept_identifiers(study: dict[str, object], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    args = _args(study, "ct", tmp_path / "out", "--keep-identifiers")
    args[args.index("--progress") + 1] = "bar"
    args.remove("--quiet")
    assert run(args) == 0
    out = capsys.readouterr().out
    assert "left lung" in out and "outputs in" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    source = pydicom.dcmread(next((study["root"] / "ct").iterdir()))  # type: ignore[operator]
    assert report["input"]["patient"] == source.PatientID
