"""`covseg experiment` and `covseg analyze` through the CLI entry point."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import covseg.training.experiment as experiment_module
from covseg.cli import run
from covseg.engine.geometry import Geometry
from covseg.engine.volume import Volume
from covseg.training.config import config_from_dict
from covseg.training.networks import build_network
from covseg.training.synthesis.dicom_series import write_nifti
from tests.test_experiment import Fake, _spec

TINY = {"network": {"features": [4, 8, 8], "strides": [1, 2, 2], "deep_supervision": 0},
        "schedule": {"patch_zyx": [8, 16, 16]}}


def test_experiment_command_writes_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Fake()
    monkeypatch.setattr(experiment_module, "_default_fit", lambda: fake.fit)
    monkeypatch.setattr(experiment_module, "_default_predict", fake.predict)
    monkeypatch.setattr(experiment_module, "_default_config", lambda d: d)
    assert run(["experiment", str(_spec(tmp_path)), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert (tmp_path / "out" / "table3.md").is_file() and len(fake.calls) == 6
    assert run(["experiment", str(tmp_path / "absent.toml"), "--out", str(tmp_path / "out")]) == 3


def _checkpoint(folder: Path, seed: int, config: Any, model: torch.nn.Module | None = None) -> Path:
    from covseg.training.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    return save_checkpoint(folder, model=model or build_network(config), config=config, epoch=0,
                           extra={"normalization": {"kind": "ct_clip_zscore", "clip_hu": [-1024, 600],
                                                    "mean": -500.0, "std": 300.0}})


def test_analyze_command_reports_similarity_and_feature_reuse(tmp_path: Path) -> None:
    geometry = Geometry(size=(24, 24, 12), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0))
    hu = np.random.default_rng(0).normal(-500, 300, geometry.shape_zyx).astype(np.float32)
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "labels").mkdir()
    write_nifti(Volume(hu, geometry), tmp_path / "data" / "images" / "x.nii.gz")
    config = config_from_dict(TINY)
    a = _checkpoint(tmp_path / "a", 0, config)
    init, trained = _checkpoint(tmp_path / "init", 1, config), _checkpoint(tmp_path / "trained", 2, config)
    out = tmp_path / "out"
    code = run(["analyze", str(a), str(a), "--data", str(tmp_path / "data"), "--out", str(out),
                "--random-init", str(init), "--scratch", str(trained), "--samples", "500", "--patches", "2"])
    assert code == 0
    with (out / "similarity.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["layer"] == "encoder.level0" and len(rows) == 5
    assert all(float(r["pwcca_pretrained_vs_finetuned"]) == pytest.approx(1.0, abs=1e-6) for r in rows)
    assert all(0 < float(r["feature_reuse"]) < 1 for r in rows)  # A vs A beats two random networks
    assert run(["analyze", str(a), str(a), "--data", str(tmp_path / "data"), "--out", str(out),
                "--random-init", str(init)]) == 3


def test_evaluate_command(tmp_path: Path) -> None:
    geometry = Geometry(size=(10, 10, 6), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0))
    truth = np.zeros(geometry.shape_zyx, dtype=np.uint8)
    truth[1:5, 2:8, 2:8] = 3
    for folder in ("truth", "pred"):
        (tmp_path / folder).mkdir()
        write_nifti(Volume(truth, geometry), tmp_path / folder / "a.nii.gz")
    out = tmp_path / "out"
    assert run(["evaluate", str(tmp_path / "pred"), str(tmp_path / "truth"), "--out", str(out)]) == 0
    structures = {r["structure"] for r in csv.DictReader((out / "cases.csv").open())}
    assert structures == {"infection", "infection_ground_glass"}  # absent structures left out
    assert run(["evaluate", str(tmp_path / "pred"), str(tmp_path / "truth"), "--out", str(out),
                "--structure", "inf=infection_ground_glass,4", "--structure", "liver=liver"]) == 0
    rows = list(csv.DictReader((out / "cases.csv").open()))
    assert [r["structure"] for r in rows] == ["inf", "liver"] and float(rows[0]["dsc"]) == 1.0
    assert run(["evaluate", str(tmp_path / "pred"), str(tmp_path / "truth"), "--out", str(out),
                "--structure", "x=nonsense"]) == 3
