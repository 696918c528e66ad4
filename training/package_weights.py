"""A training checkpoint rebuilt from an ONNX model package, so `covseg finetune --from PACKAGE`
starts from the models covseg ships.

Packages carry ONNX only (shipping PyTorch weights beside them would double the wheel). The
exporters keep every parameter as an ONNX initializer named after its state-dict key (behind the
export wrapper's prefix), so the network is rebuilt from model.json and loaded key by key with
every shape checked (`load_matching`); training-only parts the graph does not hold (the
deep-supervision heads) start from their initialisation and are listed. The rebuilt network's
logits are then compared with ONNX Runtime's on a random window: a package whose weights do not
come back exactly is refused rather than fine-tuned from the wrong weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from covseg.errors import ModelPackageError
from covseg.training.checkpoint import LoadReport, load_matching, save_checkpoint
from covseg.training.config import (
    AugmentationConfig,
    Config,
    DataConfig,
    NetworkConfig,
    ScheduleConfig,
    StrategyConfig,
)
from covseg.training.networks import build_network

TRAINING_ONLY = ("decoder.heads.1.", "decoder.heads.2.", "decoder.heads.3.", "decoder.heads.4.")  # deep supervision
PARITY_TOLERANCE = 1e-3  # largest |logit| difference rebuilt network vs ONNX Runtime (the export's own tolerance)


@dataclass(frozen=True)
class RecoveredCheckpoint:
    folder: Path
    report: LoadReport
    max_abs_logit_diff: float


def _initializers(graph: Any) -> dict[str, torch.Tensor]:
    """Initializers by state-dict name (wrapper prefix kept). The TorchScript exporter stores equal
    tensors once and names the others through Identity nodes (whose outputs carry the parameter
    names), and a Linear layer's weight transposed for a MatMul under a generated name, whose node
    scope (/network/fusion.0/squeeze/MatMul) names the layer; both are put back under their names."""
    from onnx import numpy_helper

    arrays = {init.name: numpy_helper.to_array(init).astype(np.float32) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in arrays:
            arrays[node.output[0]] = arrays[node.input[0]]
    for node in graph.node:
        generated = [name for name in node.input[1:] if name in arrays and name.startswith("onnx::")]
        if node.op_type == "MatMul" and generated and node.name.count("/") >= 2:
            scope = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
            arrays[f"{scope}.weight"] = arrays.pop(generated[0]).T
    return {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in arrays.items()}


PARAMETER_OPS = {"Conv": "Conv3d", "ConvTranspose": "ConvTranspose3d", "InstanceNormalization": "InstanceNorm3d"}


def _fill_by_call_order(model: torch.nn.Module, graph: Any, where: Path, state: dict[str, torch.Tensor],
                        in_channels: int, divisor: list[int]) -> None:
    """Parameters the graph does not name (the dynamo exporter stores equal tensors once and lets
    every node read the survivor): the graph's Conv / ConvTranspose / InstanceNormalization nodes
    run in the order PyTorch calls those modules, so the i-th node's weight and bias are the i-th
    module's. Only keys still missing are filled; the ONNX Runtime parity check judges the result."""
    from onnx import numpy_helper

    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    nodes = [n for n in graph.node if n.op_type in PARAMETER_OPS]
    called: list[tuple[str, torch.nn.Module]] = []
    hooks = [module.register_forward_hook(lambda m, _i, _o, name=name: called.append((name, m)))
             for name, module in model.named_modules() if type(module).__name__ in PARAMETER_OPS.values()]
    with torch.inference_mode():
        model.eval()(torch.zeros(1, in_channels, *(2 * d for d in divisor)))
    for hook in hooks:
        hook.remove()
    if [PARAMETER_OPS[n.op_type] for n in nodes] != [type(m).__name__ for _, m in called]:
        raise ModelPackageError(f"{where}: its layers do not follow the network rebuilt from model.json")
    for node, (name, _module) in zip(nodes, called, strict=True):
        for position, kind in ((1, "weight"), (2, "bias")):
            key = f"{name}.{kind}"
            if key not in state and len(node.input) > position and node.input[position] in arrays:
                state[key] = torch.from_numpy(arrays[node.input[position]].astype(np.float32).copy())


def _state_from_initializers(initializers: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """ONNX initializer names -> the state-dict keys of a plain network (export wrapper prefixes removed)."""
    state: dict[str, torch.Tensor] = {}
    for name, tensor in initializers.items():
        if name.startswith("network."):
            key = name.removeprefix("network.")
            state["decoder." + key if family == "multi_lesion" else key] = tensor
        elif name.startswith("encoder.") and family == "multi_lesion":
            state[name] = tensor
    return state


def _units_in_level(state: dict[str, torch.Tensor], prefix: str, level: int) -> int:
    return sum(1 for key in state if key.startswith(f"{prefix}levels.{level}.") and key.endswith(".conv.weight"))


def network_config(meta: dict[str, Any], state: dict[str, torch.Tensor]) -> NetworkConfig:
    """The network section from model.json, with the shape details older packages do not record
    (kernel size, convolutions per level, decoder width) read off the weights."""
    net = meta["network"]
    family = "unet" if net["family"] == "multi_lesion" else str(net["family"])
    encoder = "dedicated." if family == "hybrid" else "encoder."
    first = state.get(f"{encoder}levels.0.0.conv.weight")
    if first is None:
        raise ModelPackageError(f"{meta.get('name')}: the ONNX graph holds no '{encoder}levels.0.0.conv.weight'; "
                                "it was not exported by covseg from a U-Net family network")
    levels = int(net["levels"])
    head = state.get("decoder.heads.0.conv.conv.weight")
    decoder_width = float(net.get("decoder_width", 1.0 if head is None else head.shape[1] / first.shape[0]))
    convs = int(net.get("convs_per_level", _units_in_level(state, encoder, 0)))
    last = _units_in_level(state, encoder, levels - 1)
    truncated_at = net.get("truncated_at")
    truncate_convs = net.get("truncate_convs", last if truncated_at and last != convs else None)
    return NetworkConfig(
        family=family, in_channels=int(meta["input"]["channels"]), out_channels=len(meta["classes"]),
        features=tuple(int(f) for f in net["features"]), strides=tuple(int(s) for s in net["strides"]),
        kernel_size=int(net.get("kernel_size", first.shape[-1])), convs_per_level=convs,
        deep_supervision=min(2, max(0, levels - 2)),
        fusion_reduction=int(net.get("fusion_reduction", 16)),
        fusion_min_channels=int(net.get("fusion_min_channels", 8)),
        truncate_at=int(truncated_at) if truncated_at else None,
        truncate_convs=truncate_convs, decoder_width=decoder_width)


def _class_names(meta: dict[str, Any]) -> tuple[str, ...]:
    """Package classes back to training class names (a grouped class is its group: infection)."""
    from covseg.export.checkpoint import GROUPS

    groups = meta.get("output", {}).get("class_groups", {})
    names = []
    for index in sorted(meta["classes"], key=int):
        members = tuple(groups.get(str(index), ()))
        group = next((name for name, values in GROUPS.items() if tuple(values) == members), None)
        names.append(group or meta["classes"][index])
    return tuple(names)


def _augmentation(meta: dict[str, Any]) -> AugmentationConfig:
    """The package's mirror axes become the recovered run's flip axes (all three when not stated)."""
    axes = meta["input"].get("mirror_axes")
    return AugmentationConfig() if axes is None else AugmentationConfig(flip_axes=tuple(int(a) for a in axes))


def _data_config(meta: dict[str, Any]) -> DataConfig:
    spacing = tuple(float(v) for v in reversed(meta["input"]["spacing_mm"]))
    norm = meta["input"]["normalization"]
    if norm.get("kind") == "ct_window":
        return DataConfig(source="dataset", spacing_zyx_mm=spacing, normalization="window",
                          clip_hu=tuple(float(v) for v in norm["window_hu"]), classes=_class_names(meta))
    return DataConfig(source="dataset", spacing_zyx_mm=spacing, classes=_class_names(meta))


def _ort_logits(onnx_path: Path, image: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: image})[0])


def checkpoint_from_package(package: Path, out: Path) -> RecoveredCheckpoint:
    """Write a training checkpoint folder at `out` holding the package's network and weights."""
    from covseg.engine.package import load_package

    package = load_package(package).path  # hash and metadata verified before a weight is read
    meta = json.loads((package / "model.json").read_text(encoding="utf-8"))
    onnx_path = package / meta["onnx"]["file"]
    if not str(meta["onnx"].get("precision", "float32")).startswith("float32"):
        raise ModelPackageError(f"{package}: a {meta['onnx']['precision']} variant; fine-tune from the float32 "
                                "package it was made from (half-precision weights would not come back exactly)")
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    state = _state_from_initializers(_initializers(graph), str(meta["network"]["family"]))
    network = network_config(meta, state)
    config = Config(data=_data_config(meta), network=network, strategy=StrategyConfig(),
                    schedule=ScheduleConfig(patch_zyx=tuple(int(v) for v in meta["input"]["patch"])),
                    augmentation=_augmentation(meta))
    model = build_network(config.validate())
    divisor = [int(v) for v in meta["input"]["divisor"]]
    if any(key not in state for key in model.state_dict() if not key.startswith(TRAINING_ONLY)):
        _fill_by_call_order(model, graph, onnx_path, state, network.in_channels, divisor)
    report = load_matching(model, state, [("", "")], optional=TRAINING_ONLY, what=f"{package} (ONNX initializers)")
    model.eval()
    image = np.random.default_rng(0).standard_normal((1, network.in_channels, *(2 * d for d in divisor)))
    image = image.astype(np.float32)
    with torch.inference_mode():
        ours = model(torch.from_numpy(image)).numpy()
    diff = float(np.abs(ours - _ort_logits(onnx_path, image)).max())
    if not diff <= PARITY_TOLERANCE:
        raise ModelPackageError(f"{package}: the network rebuilt from its ONNX weights differs from ONNX Runtime by "
                                f"{diff:.3g} (> {PARITY_TOLERANCE}); its weights cannot be recovered for fine-tuning")
    normalization = dict(meta["input"]["normalization"])
    save_checkpoint(out, model=model, config=config, epoch=int(meta.get("provenance", {}).get("epochs", 0)),
                    extra={"normalization": normalization, "recovered_from_package": str(package),
                           "package": {"name": meta.get("name"), "version": meta.get("version"),
                                       "sha256": meta["onnx"].get("sha256")}})
    return RecoveredCheckpoint(Path(out), report, diff)
