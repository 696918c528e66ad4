"""`covseg train` and `covseg finetune` end to end on tiny synthetic data (in-process CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

from covseg.cli import run


def _pairs_dataset(root: Path) -> Path:
    from covseg.training.data import spheres_case
    from covseg.training.synthesis.dicom_series import write_nifti

    for name in ("images", "labels"):
        (root / name).mkdir(parents=True)
    for i in range(3):
        image, labels = spheres_case((24, 24, 24), 50 + i, (8.0, 8.0, 8.0))
        write_nifti(image, root / "images" / f"case{i}.nii.gz")
        write_nifti(labels, root / "labels" / f"case{i}.nii.gz")
    return root


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_train_recipe_then_finetune_with_hybrid(tmp_path: Path) -> None:
    pre = tmp_path / "pre"
    assert run(["train", "--recipe", "smoke", "--out", str(pre), "--epochs", "1"]) == 0
    assert (pre / "checkpoints/last/model.safetensors").is_file()
    assert run(["train", "--recipe", "smoke", "--out", str(pre), "--epochs", "1"]) == 5  # exists, no --resume
    assert run(["train", "--recipe", "smoke", "--out", str(pre), "--epochs", "2", "--resume"]) == 0
    assert len((pre / "log.jsonl").read_text().splitlines()) == 2
    data = _pairs_dataset(tmp_path / "data")
    out = tmp_path / "hybrid"
    code = run(["finetune", "--from", str(pre / "checkpoints/last"), "--data", str(data), "--strategy", "hybrid",
                "--out", str(out), "--epochs", "1"])
    assert code == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["network"]["family"] == "hybrid" and saved["strategy"]["pretrained"].endswith("last")
    state = json.loads((out / "checkpoints/last/state.json").read_text())
    assert state["frozen"] > 0 and state["load_report"]["loaded"]
    # the smoke recipe sets no spacing: its run records the median grid of its cases (6 mm phantoms), and
    # fine-tuning keeps the source model's grid (the site data, 8 mm spheres, is resampled to it)
    pre_config = json.loads((pre / "checkpoints/last/config.json").read_text())
    assert pre_config["data"]["spacing_zyx_mm"] == [6.0, 6.0, 6.0]
    assert saved["data"]["spacing_zyx_mm"] == [6.0, 6.0, 6.0]
    assert json.loads((out / "package" / "model.json").read_text())["input"]["spacing_mm"] == [6.0, 6.0, 6.0]


def test_usage_errors_are_one_line_and_coded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["train", "--recipe", "nope", "--out", str(tmp_path)]) == 3
    assert "unknown recipe 'nope'; known:" in capsys.readouterr().err
    assert run(["train", "--out", str(tmp_path)]) == 3
    bad = tmp_path / "bad.toml"
    bad.write_text('[network]\nfamily = "resnet"\n')
    assert run(["train", "--config", str(bad), "--out", str(tmp_path / "o")]) == 3
    assert "network.family='resnet'" in capsys.readouterr().err
    assert run(["finetune", "--from", str(tmp_path), "--data", str(tmp_path), "--strategy", "hybrid",
                "--out", str(tmp_path / "f")]) == 3
