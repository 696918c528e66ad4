"""Experiment runner end to end with a fake fit and predictor: plan, fold hygiene, tables, resume."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from covseg.engine.geometry import Geometry
from covseg.engine.volume import Volume
from covseg.errors import InputError
from covseg.labels import Label
from covseg.training.datasets import Case
from covseg.training.experiment import load_spec, run_experiment
from covseg.training.splits import read_splits
from covseg.training.synthesis.dicom_series import write_nifti

GEOMETRY = Geometry(size=(12, 12, 6), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0))


def _dataset(root: Path, cases: int = 5) -> Path:
    for i in range(cases):
        image = np.full(GEOMETRY.shape_zyx, -700.0, dtype=np.float32)
        labels = np.zeros(GEOMETRY.shape_zyx, dtype=np.uint8)
        labels[1:5, 2 + i % 3:8, 2:10] = Label.INFECTION_GROUND_GLASS
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        write_nifti(Volume(image, GEOMETRY), root / "images" / f"c{i}.nii.gz")
        write_nifti(Volume(labels, GEOMETRY), root / "labels" / f"c{i}.nii.gz")
    return root


@dataclass
class FakeResult:
    config: dict[str, Any]
    seconds_per_epoch: float


class Fake:
    """fit records what it was asked; predict is perfect except for scratch, which misses half the lesion."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def fit(self, config: dict[str, Any], *, out_dir: Path, resume: bool = True, progress: Any = None) -> FakeResult:
        assert resume
        out_dir.mkdir(parents=True, exist_ok=True)
        self.calls.append(config)
        return FakeResult(config, seconds_per_epoch=10.0 + config["data"]["fold"])

    def predict(self, result: FakeResult, config: Any, case: Case, image: Volume) -> Volume:
        splits = read_splits(config["data"]["splits"])
        assert case.id not in splits.fold(config["data"]["fold"]).train  # never scored on a training case
        truth = case.load_labels().array.copy()
        if config["strategy"]["name"] == "scratch":
            z = np.nonzero(truth.any(axis=(1, 2)))[0]
            truth[z[len(z) // 2]:] = 0  # keeps half of the lesion's slices: DSC 2/3
        return Volume(truth, image.geometry)


def _spec(tmp_path: Path) -> Path:
    _dataset(tmp_path / "data")
    path = tmp_path / "experiment.toml"
    path.write_text("""
name = "tiny"
data = "data"
folds = 5
scheme = "inverse"
run_folds = [0, 1]
strategies = ["scratch", "hybrid"]
table3_pretrained = "multi_lesion"
[pretrained]
msd = "ckpt/msd"
multi_lesion = "ckpt/multi"
[training.schedule]
epochs = 3
""")
    return path


def test_experiment_runs_every_combination_and_writes_paper_tables(tmp_path: Path) -> None:
    fake = Fake()
    rows = run_experiment(_spec(tmp_path), tmp_path / "out", fit=fake.fit, predict=fake.predict,
                          make_config=lambda d: d)
    runs = {(c["strategy"]["name"], c["strategy"]["pretrained"], c["data"]["fold"]) for c in fake.calls}
    assert len(fake.calls) == len(runs) == (1 + 2) * 2  # scratch once, others per pre-trained model
    assert (("scratch", None, 0) in runs) and (("hybrid", str(tmp_path / "ckpt" / "multi"), 1) in runs)
    assert fake.calls[0]["schedule"]["epochs"] == 3  # base training configuration kept
    assert len(rows) == 6 * 4  # inverse 5-fold on 5 cases: 1 training case, 4 test cases per run
    out = tmp_path / "out"
    with (out / "table2.csv").open() as handle:
        table2 = {(r["strategy"], r["pretrained"]): r for r in csv.DictReader(handle)}
    assert float(table2[("scratch", "none")]["f1_mean"]) == pytest.approx(2 / 3)
    assert float(table2[("hybrid", "msd")]["f1_mean"]) == pytest.approx(1.0)
    table1 = (out / "table1.md").read_text()
    assert "DSC fold 0" in table1 and "DSC fold AVG" in table1
    assert "| scratch | none | 0.667 ± 0.000" in table1
    table3 = (out / "table3.md").read_text()
    assert "hybrid Time" in table3 and "scratch DSC" in table3 and "msd" not in table3
    assert "| AVG | avg | 0.667" in table3 and "| 10.5s |" in table3 and "| 0.7s |" in table3  # std over folds
    assert "| 0 | avg | 0.667" in table3 and "| 10.0s |" in table3 and "| 11.0s |" in table3  # fake: 10 s + fold
    for name in ("cases.csv", "summary.md", "table1.csv", "table3.csv", "splits.json"):
        assert (out / name).is_file()


def test_experiment_resumes_and_skips_finished_runs(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    first = Fake()
    run_experiment(spec, tmp_path / "out", fit=first.fit, predict=first.predict, make_config=lambda d: d)
    again = Fake()
    run_experiment(spec, tmp_path / "out", fit=again.fit, predict=again.predict, make_config=lambda d: d)
    assert again.calls == []
    (tmp_path / "out" / "runs" / "hybrid__msd__fold1" / "result.json").unlink()
    rows = run_experiment(spec, tmp_path / "out", fit=again.fit, predict=again.predict, make_config=lambda d: d)
    assert [(c["strategy"]["name"], c["data"]["fold"]) for c in again.calls] == [("hybrid", 1)]
    assert len(rows) == 24
    saved = json.loads((tmp_path / "out" / "runs" / "scratch__none__fold0" / "result.json").read_text())
    assert saved["seconds_per_epoch"] == 10.0


def test_spec_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('data = "x"\nstrategiez = []\n')
    with pytest.raises(InputError, match="unknown key"):
        load_spec(bad)
    bad.write_text('data = "x"\n[structures]\ninfection = ["no_such_label"]\n')
    with pytest.raises(InputError, match="no_such_label"):
        load_spec(bad)
    _dataset(tmp_path / "data", cases=5)
    bad.write_text('data = "data"\nstrategies = ["hybrid"]\n')
    with pytest.raises(InputError, match="needs a pre-trained model"):
        run_experiment(bad, tmp_path / "out", fit=Fake().fit, predict=Fake().predict, make_config=lambda d: d)


@pytest.mark.slow
def test_experiment_with_the_real_training_loop(tmp_path: Path) -> None:
    pytest.importorskip("covseg.training.loop")
    _dataset(tmp_path / "data", cases=5)
    spec = tmp_path / "experiment.json"
    spec.write_text(json.dumps({
        "name": "real", "data": "data", "folds": 5, "run_folds": [0], "strategies": ["scratch"],
        "training": {
            "data": {"validation_cases": 0},
            "network": {"features": [4, 8], "strides": [1, 2], "deep_supervision": 0},
            "schedule": {"epochs": 1, "iterations_per_epoch": 1, "batch_size": 1, "patch_zyx": [6, 12, 12]},
            "augmentation": {"enabled": False},
            "run": {"device": "cpu", "amp": False, "num_threads": 1},
        },
    }))
    rows = run_experiment(spec, tmp_path / "out")
    assert len(rows) == 4 and all(r["strategy"] == "scratch" and r["fold"] == 0 for r in rows)
    assert all(isinstance(r["dsc"], float) and 0.0 <= r["dsc"] <= 1.0 for r in rows)  # type: ignore[operator]
    assert (tmp_path / "out" / "runs" / "scratch__none__fold0" / "train" / "log.jsonl").is_file()
    assert "scratch Time" in (tmp_path / "out" / "table3.md").read_text()


def test_changed_folds_refuse_to_resume(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    fake = Fake()
    run_experiment(spec, tmp_path / "out", fit=fake.fit, predict=fake.predict, make_config=lambda d: d)
    spec.write_text(spec.read_text().replace('name = "tiny"', 'name = "tiny"\nseed = 9'))
    with pytest.raises(InputError, match="differs from the folds"):
        run_experiment(spec, tmp_path / "out", fit=fake.fit, predict=fake.predict, make_config=lambda d: d)
