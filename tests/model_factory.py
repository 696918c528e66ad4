"""Small, valid covseg model packages for tests, built with onnx.helper (no torch).

    from tests.model_factory import make_package
    folder = make_package(tmp_path, "lung")            # -> tmp_path / "lung-test"
    package = load_package(folder)

Kinds (all take normalised CT from the package's "ct_clip_zscore" normalisation, clip [-1024, 600] HU,
mean -500, std 450; the analytic ones output logits that are exact functions of the voxel's own HU, so
the expected label of any image is known):
- "lung": classes background, lung_left, lung_right. Voxels in [-950, -550) HU are lung; every lung voxel
  comes out as lung_left (lung_right's logit is always 1 below it): intensity cannot tell sides, the
  postprocessing splits them.
- "infection": background, infection_ground_glass [-750, -300) HU, infection_consolidation [-300, 100) HU.
- "liver": background, liver [40, 80) HU.
- "random": a 6-layer random-weight conv net (two stride-2 convolutions, two stride-2 transposed
  convolutions): spatial sizes must be multiples of 4 (divisor 4); classes background, lung_left, lung_right.

`make_package` keyword overrides: any argument of `package_metadata_dict` (name, version, task, classes,
spacing_mm, patch, divisor, crop, normalization, licence, metrics, ...), plus test knobs:
input_name / output_name (graph names), external_data (store initializers in this file, a path relative
to the package folder), metadata_props (False: leave the ONNX metadata out), edit (a function that changes
the model.json dict after the sha256 is set: to break it on purpose), seed (random kind).
`analytic_labels(hu, kind)` gives the label (class index) the analytic kinds produce for HU values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from covseg.engine.package import Normalization, onnx_metadata_json, package_metadata_dict

NORMALIZATION = Normalization("ct_clip_zscore", -1024.0, 600.0, -500.0, 450.0)
SCALE = 50.0  # logit per normalised unit: argmax is the band indicator, softmax is sharp
KINDS = ("lung", "infection", "liver", "random")
# class index -> (low HU, high HU, logit offset)
BANDS: dict[str, dict[int, tuple[float, float, float]]] = {
    "lung": {1: (-950.0, -550.0, 0.0), 2: (-950.0, -550.0, -1.0)},
    "infection": {1: (-750.0, -300.0, 0.0), 2: (-300.0, 100.0, 0.0)},
    "liver": {1: (40.0, 80.0, 0.0)},
}
CLASSES: dict[str, dict[int, str]] = {
    "lung": {0: "background", 1: "lung_left", 2: "lung_right"},
    "infection": {0: "background", 1: "infection_ground_glass", 2: "infection_consolidation"},
    "liver": {0: "background", 1: "liver"},
    "random": {0: "background", 1: "lung_left", 2: "lung_right"},
}
TASKS = {"lung": "lung", "infection": "infection", "liver": "liver", "random": "lung"}


def analytic_labels(hu: np.ndarray, kind: str) -> np.ndarray:
    """The class index (uint8) an analytic kind predicts for each HU value (half-open bands)."""
    labels = np.zeros(np.shape(hu), dtype=np.uint8)
    for index, (low, high, offset) in sorted(BANDS[kind].items(), reverse=True):
        if offset == 0.0:
            labels[(hu >= low) & (hu < high)] = index
    return labels


def _const(name: str, value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def _io(input_name: str, output_name: str, classes: int) -> tuple[Any, Any]:
    return (helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 1, "z", "y", "x"]),
            helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", classes, "z", "y", "x"]))


def _band_graph(kind: str, input_name: str, output_name: str) -> onnx.GraphProto:
    """logit_c = SCALE * min(x - low_c, high_c - x) + offset_c for c >= 1; background 0.
    The band edges go in as normalised values; the half-open upper edge is nudged down a hair."""
    bands = BANDS[kind]
    count = len(bands)
    shape = (1, count, 1, 1, 1)
    low = np.array([NORMALIZATION.value_of(bands[c][0]) for c in sorted(bands)]).reshape(shape)
    high = np.array([NORMALIZATION.value_of(bands[c][1]) - 1e-6 for c in sorted(bands)]).reshape(shape)
    offset = np.array([bands[c][2] for c in sorted(bands)]).reshape(shape)
    initializers = [_const("low", low), _const("high", high), _const("offset", offset),
                    _const("scale", np.full((1,), SCALE)), _const("zero", np.zeros((1,)))]
    nodes = [
        helper.make_node("Sub", [input_name, "low"], ["above"]),
        helper.make_node("Sub", ["high", input_name], ["below"]),
        helper.make_node("Min", ["above", "below"], ["inside"]),
        helper.make_node("Mul", ["inside", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "offset"], ["bands"]),
        helper.make_node("Mul", [input_name, "zero"], ["background"]),
        helper.make_node("Concat", ["background", "bands"], [output_name], axis=1),
    ]
    inp, out = _io(input_name, output_name, count + 1)
    return helper.make_graph(nodes, f"covseg-{kind}", [inp], [out], initializers)


def _random_graph(input_name: str, output_name: str, classes: int, seed: int) -> onnx.GraphProto:
    rng = np.random.default_rng(seed)
    layers = [  # (op, in, out, kernel, stride)
        ("Conv", 1, 4, 3, 1), ("Conv", 4, 8, 3, 2), ("Conv", 8, 8, 3, 2),
        ("ConvTranspose", 8, 8, 2, 2), ("ConvTranspose", 8, 4, 2, 2), ("Conv", 4, classes, 1, 1),
    ]
    nodes, initializers, current = [], [], input_name
    for i, (op, cin, cout, k, s) in enumerate(layers):
        wshape = (cout, cin, k, k, k) if op == "Conv" else (cin, cout, k, k, k)
        weight = rng.normal(0.0, np.sqrt(2.0 / (cin * k**3)), wshape)
        initializers += [_const(f"w{i}", weight), _const(f"b{i}", rng.normal(0.0, 0.1, cout))]
        pads = [k // 2] * 6 if op == "Conv" else [0] * 6
        last = i == len(layers) - 1
        target = output_name if last else f"h{i}"
        nodes.append(helper.make_node(op, [current, f"w{i}", f"b{i}"], [target], kernel_shape=[k] * 3,
                                      strides=[s] * 3, pads=pads))
        if not last:
            nodes.append(helper.make_node("Relu", [target], [f"r{i}"]))
            current = f"r{i}"
    inp, out = _io(input_name, output_name, classes)
    return helper.make_graph(nodes, "covseg-random", [inp], [out], initializers)


def build_model(kind: str, *, input_name: str = "image", output_name: str = "logits", seed: int = 0) -> onnx.ModelProto:
    """The ONNX model of a kind (opset 17), without covseg metadata."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {KINDS}")
    if kind == "random":
        graph = _random_graph(input_name, output_name, len(CLASSES[kind]), seed)
    else:
        graph = _band_graph(kind, input_name, output_name)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="covseg-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_package(
    tmp_path: Path, kind: str = "lung", *, input_name: str = "image", output_name: str = "logits",
    external_data: str | None = None, metadata_props: bool = True,
    edit: Callable[[dict[str, Any]], None] | None = None, seed: int = 0, **overrides: Any,
) -> Path:
    """Write a package folder under tmp_path (named after the package) and return its path."""
    settings: dict[str, Any] = {
        "name": f"{kind}-test", "version": "0.0.1", "task": TASKS.get(kind, kind), "classes": CLASSES[kind],
        "spacing_mm": (3.0, 3.0, 3.0), "patch": (16, 32, 32), "divisor": (4, 4, 4), "crop": "none",
        "normalization": NORMALIZATION, "licence": "test only",
        "network": {"family": "analytic" if kind != "random" else "random-conv", "levels": 1, "parameters": 0,
                    "macs_per_window": 0, "truncated_at": None},
        "metrics": [{"data": "none", "cases": 0, "dsc": None}],
        "provenance": {"strategy": "none", "pretrained_from": None,
                       "training_data": [{"name": "none", "licence": "n/a"}], "epochs": 0},
    }
    settings.update(overrides)
    metadata = package_metadata_dict(**settings)
    folder = Path(tmp_path) / str(settings["name"])
    folder.mkdir(parents=True, exist_ok=True)
    model = build_model(kind, input_name=input_name, output_name=output_name, seed=seed)
    if metadata_props:
        helper.set_model_props(model, {"covseg.model": onnx_metadata_json(metadata)})
    onnx_path = folder / "model.onnx"
    if external_data is None:
        onnx.save_model(model, onnx_path)
    else:
        _save_external(model, onnx_path, external_data)
    metadata["onnx"]["sha256"] = sha256_of(onnx_path)
    if edit is not None:
        edit(metadata)
    (folder / "model.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    (folder / "MODEL_CARD.md").write_text(_card(metadata), encoding="utf-8")
    return folder


def _save_external(model: onnx.ModelProto, onnx_path: Path, location: str) -> None:
    """Initializers in one external file at `location` (relative to the folder; may point outside
    it on purpose: onnx refuses to write such a model, so the location is patched in afterwards)."""
    onnx.save_model(model, onnx_path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    if location == "weights.bin":
        return
    stored = onnx.load(str(onnx_path), load_external_data=False)
    for tensor in stored.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    target = onnx_path.parent / location
    target.parent.mkdir(parents=True, exist_ok=True)
    (onnx_path.parent / "weights.bin").replace(target)
    onnx_path.write_bytes(stored.SerializeToString())


def _card(metadata: dict[str, Any]) -> str:
    classes = ", ".join(f"{k}: {v}" for k, v in metadata.get("classes", {}).items())
    return (f"# {metadata.get('name')} {metadata.get('version')}\n\nTest package made by tests/model_factory.py; "
            f"not a trained model.\n\n- task: {metadata.get('task')}\n- classes: {classes}\n"
            f"- licence: {metadata.get('licence')}\n")


def set_in_model_json(folder: Path, key: str, value: object | None) -> None:
    """Set (or, with None, delete) the dotted `key` of a package's model.json: to break it on purpose."""
    meta = json.loads((folder / "model.json").read_text())
    *parents, leaf = key.split(".")
    target = meta
    for part in parents:
        target = target[part]
    if value is None:
        del target[leaf]
    else:
        target[leaf] = value
    (folder / "model.json").write_text(json.dumps(meta))
