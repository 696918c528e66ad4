"""Fine-tuning from model packages: weights recovered from the ONNX graph equal the checkpoint's
(every family, both exporters' naming), the shipped packages come back with ONNX Runtime parity,
and `covseg finetune --from PACKAGE` trains, evaluates on held-out cases and exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from covseg.cli import run  # noqa: E402
from covseg.errors import ModelPackageError  # noqa: E402
from covseg.training.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from covseg.training.config import config_from_dict  # noqa: E402
from covseg.training.networks import build_network  # noqa: E402
from covseg.training.package_weights import checkpoint_from_package  # noqa: E402
from tests.test_loop_cli import _pairs_dataset  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NORMALIZATION = {"kind": "ct_clip_zscore", "clip_hu": [-1024.0, 600.0], "mean": -480.0, "std": 430.0}


def _config(**network: Any) -> Any:
    return config_from_dict({
        "network": {"features": [4, 8, 16], "strides": [1, 2, 2], "out_channels": 2, "deep_supervision": 1,
                    **network},
        "data": {"source": "spheres", "classes": ["background", "infection"], "shape_zyx": [24, 24, 24],
                 "phantom_spacing_zyx_mm": [8.0, 8.0, 8.0]},
        "schedule": {"patch_zyx": [16, 16, 16], "epochs": 1, "iterations_per_epoch": 2, "batch_size": 1},
        "augmentation": {"enabled": False}, "run": {"device": "cpu", "amp": False}})


def _exported(tmp_path: Path, exporter: str, **network: Any) -> tuple[Path, dict[str, Any]]:
    config = _config(**network)
    torch.manual_seed(3)
    model = build_network(config)
    folder = save_checkpoint(tmp_path / "ck", model=model, config=config, epoch=3,
                             extra={"normalization": NORMALIZATION})
    assert run(["export", str(folder), "--out", str(tmp_path / "pkg"), "--exporter", exporter]) == 0
    return tmp_path / "pkg", model.state_dict()


@pytest.mark.slow
@pytest.mark.parametrize(("exporter", "network"), [
    ("torchscript", {}), ("dynamo", {}), ("torchscript", {"family": "hybrid", "fusion_min_channels": 2}),
    ("torchscript", {"decoder_width": 0.5, "kernel_size": 3, "convs_per_level": 1})])
def test_recovered_weights_equal_the_checkpoint(tmp_path: Path, exporter: str, network: dict[str, Any]) -> None:
    package, original = _exported(tmp_path, exporter, **network)
    recovered = checkpoint_from_package(package, tmp_path / "back")
    assert recovered.max_abs_logit_diff < 1e-4
    state = load_checkpoint(tmp_path / "back").model_state
    deep_supervision = {k for k in original if k.startswith("decoder.heads.1.")}  # not in the inference graph
    assert set(state) == set(original)
    assert {k.split(":")[0] for k in recovered.report.skipped} == deep_supervision
    for key in set(original) - deep_supervision:
        assert torch.equal(state[key], original[key]), key
    config = load_checkpoint(tmp_path / "back").config
    assert config.network.family == network.get("family", "unet")
    assert config.network.decoder_width == network.get("decoder_width", 1.0)
    assert config.data.classes == ("background", "infection")  # the grouped class comes back as its group


def test_shipped_packages_come_back_with_onnx_parity(tmp_path: Path) -> None:
    from covseg.training.finetune import resolve_source

    for name, family in (("lung", "unet"), ("infection", "hybrid")):
        source = resolve_source(name, tmp_path / name)
        assert source.folder == tmp_path / name / "source_checkpoint"
        assert source.config.network.family == family
        state = json.loads((source.folder / "state.json").read_text())
        assert state["package"]["name"] == name and len(state["package"]["sha256"]) == 64
    mtime = (tmp_path / "lung" / "source_checkpoint" / "model.safetensors").stat().st_mtime_ns
    resolve_source("lung", tmp_path / "lung")  # a resumed run reuses the recovered weights
    assert (tmp_path / "lung" / "source_checkpoint" / "model.safetensors").stat().st_mtime_ns == mtime


def _rehash(package: Path) -> None:
    """Make model.json and the ONNX metadata agree with an edited package, as its author would."""
    import hashlib

    import onnx

    from covseg.engine.package import METADATA_KEY

    meta = json.loads((package / "model.json").read_text())
    model = onnx.load(str(package / "model.onnx"))
    stored = dict(meta)
    stored["onnx"] = {k: v for k, v in meta["onnx"].items() if k != "sha256"}
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = json.dumps(stored)
    onnx.save(model, str(package / "model.onnx"))
    meta["onnx"]["sha256"] = hashlib.sha256((package / "model.onnx").read_bytes()).hexdigest()
    (package / "model.json").write_text(json.dumps(meta))


def test_unnamed_weights_come_back_by_call_order_and_wrong_metadata_is_refused(tmp_path: Path) -> None:
    import onnx

    from covseg.training.checkpoint import WeightMismatchError

    package, original = _exported(tmp_path, "torchscript")
    model = onnx.load(str(package / "model.onnx"))
    key = "network.encoder.levels.0.0.conv.bias"
    next(i for i in model.graph.initializer if i.name == key).name = "onnx::Conv_999"
    for node in model.graph.node:
        node.input[:] = ["onnx::Conv_999" if name == key else name for name in node.input]
    onnx.save(model, str(package / "model.onnx"))
    with pytest.raises(ModelPackageError, match="sha256"):
        checkpoint_from_package(package, tmp_path / "back")  # an edited graph no longer matches its hash
    _rehash(package)
    checkpoint_from_package(package, tmp_path / "back")
    assert torch.equal(load_checkpoint(tmp_path / "back").model_state["encoder.levels.0.0.conv.bias"],
                       original["encoder.levels.0.0.conv.bias"])
    meta = json.loads((package / "model.json").read_text())
    meta["network"]["features"] = [4, 8, 32]  # model.json no longer describes the graph
    (package / "model.json").write_text(json.dumps(meta))
    _rehash(package)
    meta = json.loads((package / "model.json").read_text())
    with pytest.raises(WeightMismatchError, match=r"encoder.levels.2.0.conv.weight: .*shape"):
        checkpoint_from_package(package, tmp_path / "other")
    assert not (tmp_path / "other").exists()
    meta["onnx"]["precision"] = "float16 weights, float32 IO"
    (package / "model.json").write_text(json.dumps(meta))
    _rehash(package)
    with pytest.raises(ModelPackageError, match="float32 package"):
        checkpoint_from_package(package, tmp_path / "other")


@pytest.mark.slow
def test_finetune_from_a_package_trains_evaluates_and_exports(tmp_path: Path) -> None:
    package, _ = _exported(tmp_path, "torchscript")
    data = _pairs_dataset(tmp_path / "data")
    out = tmp_path / "site"
    assert run(["finetune", "--from", str(package), "--data", str(data), "--strategy", "body_finetune",
                "--out", str(out), "--epochs", "1", "--validation-cases", "1"]) == 0
    assert json.loads((out / "checkpoints/last/state.json").read_text())["load_report"]["loaded"]
    summary = (out / "evaluation" / "summary.md").read_text()
    assert "case2" in (out / "evaluation" / "cases.md").read_text() and "dsc" in summary.lower()
    structures = {line.split("|")[1].strip() for line in summary.splitlines() if line.startswith("| ")} - {"structure"}
    assert structures == {"infection"}  # only what the model was trained to predict
    assert run(["models", "verify", str(out / "package")]) == 0
    meta = json.loads((out / "package" / "model.json").read_text())
    assert meta["provenance"]["strategy"] == "body_finetune"
    assert meta["provenance"]["pretrained_from"] == str(out / "source_checkpoint")
    assert run(["finetune", "--from", "no-such-model", "--data", str(data), "--strategy", "hybrid",
                "--out", str(tmp_path / "x")]) == ModelPackageError.exit_code


def test_a_recovered_checkpoint_resumes_under_the_recipe_strategy_on_its_schedule(tmp_path: Path) -> None:
    """A package recovered into a run's checkpoints/last continues training (the infection
    dependent-density experiment was made so): it carries no strategy, so the recipe's applies, and the
    learning rate is the poly schedule's at the recovered epoch, not the schedule's start."""
    package, _ = _exported(tmp_path, "torchscript", family="hybrid", fusion_min_channels=2)
    out = tmp_path / "run"
    checkpoint_from_package(package, out / "checkpoints" / "last")  # epoch 3, as exported
    data = _pairs_dataset(tmp_path / "data")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f"""
[data]
source = "dataset"
path = "{data}"
classes = ["background", "infection"]
spacing_zyx_mm = [8.0, 8.0, 8.0]
validation_cases = 1
[network]
family = "hybrid"
features = [4, 8, 16]
strides = [1, 2, 2]
deep_supervision = 1
fusion_min_channels = 2
[strategy]
name = "hybrid"
pretrained = "{out / 'not-read-on-resume'}"
[schedule]
epochs = 4
patch_zyx = [16, 16, 16]
iterations_per_epoch = 1
batch_size = 1
[augmentation]
enabled = false
[run]
device = "cpu"
amp = false
""")
    assert run(["train", "--config", str(recipe), "--out", str(out), "--resume"]) == 0
    state = json.loads((out / "checkpoints/last/state.json").read_text())
    assert state["epoch"] == 4
    lrs = [entry["lr"] for entry in state["history"]]
    base = json.loads((out / "checkpoints/last/config.json").read_text())["optimiser"]["lr"]
    assert len(lrs) == 1 and lrs[0][0] == pytest.approx(base * (1 - 3 / 4) ** 0.9)  # epoch 4 of 4, not 1 of 4
