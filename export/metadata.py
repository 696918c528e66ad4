"""model.json (schema covseg.model/1, DESIGN.md section 3) as the exporter writes it.

The ONNX file carries a copy of model.json in metadata_props["covseg.model"]. That copy cannot
hold the sha256 of the file it sits in, so it is model.json without the one field
"onnx.sha256", serialised as JSON with sorted keys; the engine's loader compares
`json.loads(copy) == model.json minus onnx.sha256` (covseg.engine.package.metadata_without_hash).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from covseg import __version__
from covseg.labels import NAMES

SCHEMA = "covseg.model/1"
METADATA_KEY = "covseg.model"
TASKS = ("lung", "infection", "liver")
# Tasks -> (crop, default classes): the crop is what the engine's cascade feeds each model.
TASK_DEFAULTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "lung": ("body", ("background", "lung_left", "lung_right")),
    "infection": ("lung", ("background", "infection_ground_glass", "infection_consolidation")),
    "liver": ("body", ("background", "liver")),
}
_NON_COMMERCIAL = re.compile(r"(\bNC\b|-NC|non-?commercial|unknown)", re.IGNORECASE)


@dataclass
class PackageSpec:
    """Everything model.json says, before the ONNX hash is known."""

    name: str
    version: str
    task: str
    classes: dict[int, str]
    spacing_mm: tuple[float, float, float]  # (x, y, z), as DESIGN.md writes spacing
    patch: tuple[int, int, int]  # (z, y, x)
    divisor: tuple[int, int, int]  # (z, y, x)
    normalization: dict[str, Any]
    network: dict[str, Any]
    provenance: dict[str, Any]
    channels: int = 1
    crop: str = "body"
    metrics: list[dict[str, Any]] = field(default_factory=list)
    opset: int = 17
    exporter: str = "dynamo"
    precision: str = "float32"
    variant_of: str | None = None
    parity: dict[str, Any] | None = None
    output_groups: dict[str, list[str]] = field(default_factory=dict)  # channel -> labels it stands for
    threshold: float | None = None  # two-class models: the operating point (None: argmax)
    mirror_axes: tuple[int, ...] | None = None  # axes the training mirrored (what --tta may mirror)


def licence_for(training_data: Sequence[Mapping[str, Any]]) -> str:
    """Research use always; non-commercial as soon as one training set's licence says so, or is unknown."""
    if any(_NON_COMMERCIAL.search(str(item.get("licence", ""))) for item in training_data):
        return "research use only, non-commercial"
    return "research use only"


def check_classes(classes: Mapping[int, str]) -> dict[int, str]:
    """Class names must be labels of covseg/labels.py, background at 0."""
    known = set(NAMES.values())
    unknown = [name for name in classes.values() if name not in known]
    if unknown or classes.get(0) != "background":
        raise ValueError(f"classes {dict(classes)}: names must come from covseg/labels.py with background at 0")
    return {int(k): str(v) for k, v in sorted(classes.items())}


def build_metadata(spec: PackageSpec, sha256: str = "") -> dict[str, Any]:
    """The model.json dict (sha256 empty until the ONNX file is final)."""
    provenance = {"strategy": "unknown", "pretrained_from": None, "training_data": [], "epochs": 0,
                  "trained_on": "unknown", **spec.provenance, "covseg_version": __version__}
    onnx_block: dict[str, Any] = {"file": "model.onnx", "sha256": sha256, "opset": int(spec.opset),
                                  "exporter": spec.exporter, "precision": spec.precision}
    if spec.variant_of:
        onnx_block["variant_of"] = spec.variant_of
    if spec.threshold is not None and (len(spec.classes) != 2 or not 0.0 < spec.threshold < 1.0):
        raise ValueError(f"threshold {spec.threshold}: only for two-class models, strictly between 0 and 1 "
                         f"(classes {dict(spec.classes)})")
    return {
        "schema": SCHEMA, "name": spec.name, "version": spec.version, "task": spec.task,
        "classes": {str(k): v for k, v in check_classes(spec.classes).items()},
        "input": {"channels": int(spec.channels), "spacing_mm": [float(v) for v in spec.spacing_mm],
                  "patch": [int(v) for v in spec.patch], "divisor": [int(v) for v in spec.divisor],
                  "crop": spec.crop, "normalization": dict(spec.normalization),
                  **({"mirror_axes": sorted(int(a) for a in spec.mirror_axes)} if spec.mirror_axes is not None
                     else {})},
        "output": {"kind": "logits", **({"class_groups": spec.output_groups} if spec.output_groups else {}),
                   **({"threshold": float(spec.threshold)} if spec.threshold is not None else {})},
        "network": dict(spec.network),
        "onnx": onnx_block,
        "parity": copy.deepcopy(spec.parity),
        "provenance": provenance,
        "metrics": [dict(m) for m in spec.metrics],
        "licence": licence_for(provenance.get("training_data") or []),
    }


def metadata_without_hash(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """model.json minus onnx.sha256: the copy stored inside model.onnx."""
    stripped: dict[str, Any] = json.loads(json.dumps(metadata))
    stripped.get("onnx", {}).pop("sha256", None)
    return stripped


def onnx_metadata_json(metadata: Mapping[str, Any]) -> str:
    return json.dumps(metadata_without_hash(metadata), sort_keys=True)
