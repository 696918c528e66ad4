"""`covseg export` from training checkpoints: metadata read from the checkpoint, the engine's
`covseg models verify` on every package and variant, truncation refused / untrained / fine-tuned,
and one-line errors that leave nothing behind. TorchScript exporter for speed (see test_export.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from covseg.cli import run
from covseg.errors import ModelPackageError

NORMALIZATION = {"kind": "ct_clip_zscore", "clip_hu": [-1024.0, 600.0], "mean": -480.0, "std": 430.0}
NETWORK = {"features": [4, 8, 16, 32], "strides": [1, 2, 2, 2], "out_channels": 2, "deep_supervision": 1}
DATA = {"source": "spheres", "classes": ["background", "infection"], "cases": 3, "validation_cases": 1,
        "shape_zyx": [32, 32, 32]}


def _config(**network: Any) -> Any:
    from covseg.training.config import config_from_dict

    return config_from_dict({"network": {**NETWORK, **network}, "data": DATA,
                             "schedule": {"patch_zyx": [32, 32, 32], "epochs": 1, "iterations_per_epoch": 2,
                                          "batch_size": 1},
                             "augmentation": {"enabled": False}, "run": {"device": "cpu", "amp": False}})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from covseg.training.checkpoint import save_checkpoint
    from covseg.training.networks import build_network

    config = _config()
    folder = tmp_path_factory.mktemp("ck") / "run"
    history = [{"epoch": 1, "val_dice": 0.41}, {"epoch": 2, "val_dice": 0.62}]
    return save_checkpoint(folder, model=build_network(config), config=config, epoch=2,
                           extra={"normalization": NORMALIZATION, "history": history})


def _meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "model.json").read_text())


@pytest.mark.slow
def test_export_checkpoint_with_variants_passes_models_verify(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "infection-test"
    assert run(["export", str(checkpoint), "--out", str(out), "--exporter", "torchscript", "--optimize",
                "--fp16", "--version", "0.2.0"]) == 0
    for folder in (out, tmp_path / "infection-test-ort-optimized", tmp_path / "infection-test-fp16"):
        assert run(["models", "verify", str(folder)]) == 0, folder
    meta = _meta(out)
    assert meta["task"] == "infection" and meta["version"] == "0.2.0" and meta["input"]["crop"] == "lung"
    assert meta["classes"] == {"0": "background", "1": "infection_ground_glass"}
    assert meta["output"]["class_groups"]["1"] == ["infection_ground_glass", "infection_consolidation"]
    assert meta["input"]["normalization"] == NORMALIZATION
    assert meta["input"]["spacing_mm"] == [6.0, 6.0, 6.0]  # the spheres grid (data.phantom_spacing_zyx_mm)
    assert meta["input"]["divisor"] == [8, 8, 8]
    assert meta["metrics"][0]["dsc"] == 0.62 and meta["provenance"]["epochs"] == 2
    assert meta["licence"] == "research use only"
    assert meta["parity"]["inputs"] == "phantom + random" and meta["parity"]["max_abs_logit_diff"] < 1e-4
    fp16 = _meta(tmp_path / "infection-test-fp16")
    assert fp16["onnx"]["precision"].startswith("float16")
    assert fp16["onnx"]["variant_of"] == meta["name"] == "infection-run"
    assert fp16["parity"]["measured"] and fp16["parity"]["max_abs_logit_diff"] < 5e-2
    assert fp16["network"]["file_bytes"] < 0.7 * meta["network"]["file_bytes"]


def test_truncation_without_training_is_refused(checkpoint: Path, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "cut"
    assert run(["export", str(checkpoint), "--out", str(out), "--truncate", "2"]) == ModelPackageError.exit_code
    assert "--allow-untrained" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert run(["export", str(checkpoint), "--out", str(out), "--truncate", "4", "--allow-untrained"]) == 4
    assert run(["export", str(checkpoint), "--out", str(out), "--head", "x", "--exporter", "torchscript"]) == 4
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_untrained_truncation_says_so(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut"
    assert run(["export", str(checkpoint), "--out", str(out), "--truncate", "2", "--allow-untrained",
                "--exporter", "torchscript"]) == 0
    assert run(["models", "verify", str(out)]) == 0
    meta = _meta(out)
    assert meta["network"]["truncated_at"] == 2 and meta["network"]["levels"] == 2
    assert "untrained" in meta["provenance"]["truncation"]["decoder"]
    assert meta["metrics"] == []  # the full model's Dice does not describe the truncated one
    assert "untrained" in (out / "MODEL_CARD.md").read_text()
    finer = tmp_path / "finer"
    assert run(["export", str(checkpoint), "--out", str(finer), "--truncate", "2", "--truncate-convs", "1",
                "--allow-untrained", "--exporter", "torchscript"]) == 0
    assert _meta(finer)["provenance"]["truncation"]["cutoff_convs"] == 1
    assert _meta(finer)["network"]["parameters"] < meta["network"]["parameters"]
    slim = tmp_path / "slim"
    assert run(["export", str(checkpoint), "--out", str(slim), "--truncate", "2", "--decoder-width", "0.5",
                "--allow-untrained", "--exporter", "torchscript"]) == 0
    assert _meta(slim)["provenance"]["truncation"]["decoder_width"] == 0.5
    assert _meta(slim)["network"]["macs_per_window"] < meta["network"]["macs_per_window"]
    assert run(["export", str(checkpoint), "--out", str(tmp_path / "bad"), "--truncate", "2", "--decoder-width",
                "1.5", "--allow-untrained"]) == 4
    assert run(["export", str(checkpoint), "--out", str(tmp_path / "bad"), "--decoder-width", "0.5"]) == 4
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_truncation_fine_tuned_with_the_training_loop(checkpoint: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(_config(deep_supervision=0).to_dict()))
    out, work = tmp_path / "pkg" / "cut", tmp_path / "work"
    assert run(["export", str(checkpoint), "--out", str(out), "--truncate", "2", "--finetune", str(recipe),
                "--work-dir", str(work), "--exporter", "torchscript"]) == 0
    meta = _meta(out)
    truncation = meta["provenance"]["truncation"]
    assert truncation["decoder"].startswith("fine-tuned") and meta["provenance"]["strategy"] == "truncated"
    assert (work / "checkpoints" / "last" / "model.safetensors").is_file()
    assert meta["metrics"] and meta["metrics"][0]["cases"] == 1
    assert meta["network"]["parameters"] < _meta_full_parameters() / 4


def _meta_full_parameters() -> int:
    from covseg.export.complexity import count_parameters
    from covseg.training.networks import build_network

    return count_parameters(build_network(_config()))


@pytest.mark.slow
@pytest.mark.parametrize(("family", "extra"), [("multi_lesion", {"heads": ["nodules", "effusions"]}),
                                               ("hybrid", {"fusion_min_channels": 2})])
def test_other_families_from_checkpoints(family: str, extra: dict[str, Any], tmp_path: Path) -> None:
    from covseg.export.complexity import count_parameters
    from covseg.training.checkpoint import save_checkpoint
    from covseg.training.networks import build_network

    config = _config(family=family, **extra)
    network = build_network(config)
    folder = save_checkpoint(tmp_path / "ck", model=network, config=config, epoch=1,
                             extra={"normalization": NORMALIZATION})
    out = tmp_path / "pkg"
    head = ["--head", "effusions"] if family == "multi_lesion" else []
    assert run(["export", str(folder), "--out", str(out), "--exporter", "torchscript", *head]) == 0
    assert run(["models", "verify", str(out)]) == 0
    net = _meta(out)["network"]
    assert net["family"] == family
    if family == "multi_lesion":
        assert net["head"] == "effusions"
        assert net["parameters"] == count_parameters(network) - count_parameters(network.decoders["nodules"])
    else:
        assert net["parameters"] == count_parameters(network)
