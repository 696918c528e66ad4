"""Model packages (DESIGN.md section 3): a folder with model.onnx, model.json and MODEL_CARD.md.

`load_package` is the only way the engine gets a `ModelPackage`, and it refuses anything it
cannot fully check: the schema major version, every required key (one-line errors naming the
folder and the key), class names against covseg/labels.py, the sha256 of model.onnx (verified
before any ONNX Runtime session exists), external-data locations (must stay inside the folder),
the graph's input "image" / output "logits", and the copy of the metadata in the ONNX
metadata_props["covseg.model"], which must agree with model.json.

The ONNX checks read the protobuf with a small schema-aware wire-format scanner
(`covseg.engine.runtime.scan_onnx`), hand-written because the `onnx` package is not part of the inference install
and ONNX Runtime would load external data before we could check where it points.
Writing packages is the exporter's job; `package_metadata_dict` and `onnx_metadata_json`
give it the exact schema this loader reads.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covseg.errors import ModelPackageError
from covseg.labels import NAMES

SCHEMA_NAME = "covseg.model"
SCHEMA_MAJOR = 1
SCHEMA = f"{SCHEMA_NAME}/{SCHEMA_MAJOR}"
METADATA_KEY = "covseg.model"  # key in the ONNX metadata_props holding model.json (without onnx.sha256)
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
CROPS = ("body", "lung", "none")
NORMALIZATION_KINDS = ("ct_clip_zscore", "ct_window")
AIR_HU = -1024.0
REQUIRED_KEYS = (
    "schema", "name", "version", "task", "classes", "input.channels", "input.spacing_mm", "input.patch",
    "input.divisor", "input.crop", "input.normalization", "input.normalization.kind", "output.kind",
    "network.family", "onnx.file", "onnx.sha256", "onnx.opset", "provenance", "metrics", "licence",
)


@dataclass(frozen=True)
class Normalization:
    """HU -> network input. ct_clip_zscore: clip to [low, high] then (v - mean) / std;
    ct_window: clip to [low, high] then map linearly onto [0, 1]."""

    kind: str
    low_hu: float
    high_hu: float
    mean: float = 0.0
    std: float = 1.0

    def apply(self, hu: np.ndarray) -> np.ndarray:
        """Normalised float32 copy of an HU array."""
        out = np.clip(hu, self.low_hu, self.high_hu).astype(np.float32, copy=False)
        if self.kind == "ct_window":
            out = (out - np.float32(self.low_hu)) * np.float32(1.0 / (self.high_hu - self.low_hu))
        else:
            out = (out - np.float32(self.mean)) * np.float32(1.0 / self.std)
        return out.astype(np.float32, copy=False)

    def value_of(self, hu: float) -> float:
        """The normalised value of one HU value (e.g. air, to pad with)."""
        return float(self.apply(np.asarray([hu], dtype=np.float32))[0])

    def to_json(self) -> dict[str, Any]:
        if self.kind == "ct_window":
            return {"kind": self.kind, "window_hu": [self.low_hu, self.high_hu]}
        return {"kind": self.kind, "clip_hu": [self.low_hu, self.high_hu], "mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class NetworkInfo:
    family: str
    levels: int | None = None
    parameters: int | None = None
    macs_per_window: int | None = None
    truncated_at: int | None = None


@dataclass(frozen=True)
class ModelPackage:
    """A verified model package; construct it only through `load_package`."""

    name: str
    version: str
    task: str
    classes: dict[int, str]
    channels: int
    spacing_mm: tuple[float, float, float]  # (x, y, z)
    patch: tuple[int, int, int]  # (z, y, x)
    divisor: tuple[int, int, int]  # (z, y, x)
    crop: str
    normalization: Normalization
    network: NetworkInfo
    provenance: dict[str, Any]
    metrics: tuple[dict[str, Any], ...]
    licence: str
    path: Path
    onnx_path: Path
    sha256: str
    opset: int
    parity: dict[str, Any] | None = None
    threshold: float | None = None  # two-class models: foreground where its probability exceeds this
    mirror_axes: tuple[int, ...] | None = None  # axes (0 z, 1 y, 2 x) training mirrored; None: not stated
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def tta_axes(self) -> tuple[int, ...]:
        """The axes `--tta` mirrors: those training mirrored, all three when the package does not say."""
        return (0, 1, 2) if self.mirror_axes is None else self.mirror_axes

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return (self.spacing_mm[2], self.spacing_mm[1], self.spacing_mm[0])

    def class_index(self, name: str) -> int | None:
        """Output channel of a label name, None when this model does not predict it."""
        for index, class_name in self.classes.items():
            if class_name == name:
                return index
        return None


# --- reading model.json -----------------------------------------------------------------
class _Json:
    """Typed access to model.json with one-line errors naming the folder and the key."""

    def __init__(self, data: dict[str, Any], folder: Path) -> None:
        self.data, self.folder = data, folder

    def fail(self, key: str, problem: str) -> ModelPackageError:
        return ModelPackageError(f"model package {self.folder}: model.json key '{key}' {problem}")

    def get(self, key: str, default: Any = ...) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is not ...:
                    return default
                raise self.fail(key, "is missing")
            node = node[part]
        return node

    def text(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def number(self, key: str, value: Any = ..., *, positive: bool = False) -> float:
        value = self.get(key) if value is ... else value
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            raise self.fail(key, f"must be a finite number, got {value!r}")
        if positive and value <= 0:
            raise self.fail(key, f"must be positive, got {value!r}")
        return float(value)

    def triple(self, key: str, *, integer: bool) -> tuple[Any, Any, Any]:
        value = self.get(key)
        if not isinstance(value, list | tuple) or len(value) != 3:
            raise self.fail(key, f"must be a list of 3 numbers, got {value!r}")
        if integer and not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            raise self.fail(key, f"must be 3 positive integers, got {value!r}")
        numbers = [self.number(key, v, positive=True) for v in value]
        return tuple(int(v) for v in numbers) if integer else tuple(numbers)  # type: ignore[return-value]


def _parse_schema(reader: _Json) -> None:
    schema = reader.text("schema")
    match = re.fullmatch(r"covseg\.model/(\d+)(?:\.\d+)*", schema)
    if match is None:
        raise reader.fail("schema", f"must be '{SCHEMA}', got {schema!r}")
    if int(match.group(1)) != SCHEMA_MAJOR:
        raise reader.fail("schema", f"is {schema!r}, an unsupported major version (this covseg reads {SCHEMA})")


def _parse_classes(reader: _Json) -> dict[int, str]:
    raw = reader.get("classes")
    if not isinstance(raw, dict) or len(raw) < 2:
        raise reader.fail("classes", f"must map at least 2 indices to label names, got {raw!r}")
    known = set(NAMES.values())
    classes: dict[int, str] = {}
    for key, name in raw.items():
        if not str(key).isdigit():
            raise reader.fail(f"classes.{key}", "is not a channel index")
        if name not in known:
            raise reader.fail(f"classes.{key}", f"names {name!r}, not a label of covseg/labels.py")
        classes[int(key)] = name
    if sorted(classes) != list(range(len(classes))):
        raise reader.fail("classes", f"indices must be 0..{len(classes) - 1}, got {sorted(classes)}")
    if classes[0] != "background" or len(set(classes.values())) != len(classes):
        raise reader.fail("classes", "must have background at 0 and no repeated names")
    return classes


def _parse_normalization(reader: _Json) -> Normalization:
    kind = reader.text("input.normalization.kind")
    if kind == "ct_clip_zscore":
        low, high = _pair(reader, "input.normalization.clip_hu")
        std = reader.number("input.normalization.std", positive=True)
        return Normalization(kind, low, high, reader.number("input.normalization.mean"), std)
    if kind == "ct_window":
        low, high = _pair(reader, "input.normalization.window_hu")
        return Normalization(kind, low, high)
    raise reader.fail("input.normalization.kind", f"is {kind!r}; known: {', '.join(NORMALIZATION_KINDS)}")


def _pair(reader: _Json, key: str) -> tuple[float, float]:
    value = reader.get(key)
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise reader.fail(key, f"must be [low, high], got {value!r}")
    low, high = (reader.number(key, v) for v in value)
    if not low < high:
        raise reader.fail(key, f"must have low < high, got {value!r}")
    return low, high


def _optional_int(reader: _Json, key: str) -> int | None:
    value = reader.get(key, None)
    return None if value is None else int(reader.number(key, value))


def _parse(reader: _Json, folder: Path) -> dict[str, Any]:
    """All typed fields of ModelPackage except the ONNX-derived ones."""
    _parse_schema(reader)
    for key in REQUIRED_KEYS:
        reader.get(key)
    patch, divisor = reader.triple("input.patch", integer=True), reader.triple("input.divisor", integer=True)
    if any(p % d for p, d in zip(patch, divisor, strict=True)):
        raise reader.fail("input.patch", f"{list(patch)} is not a multiple of input.divisor {list(divisor)}")
    crop = reader.text("input.crop")
    if crop not in CROPS:
        raise reader.fail("input.crop", f"is {crop!r}; known: {', '.join(CROPS)}")
    if reader.text("output.kind") != "logits":
        raise reader.fail("output.kind", "must be 'logits'")
    metrics, provenance = reader.get("metrics"), reader.get("provenance")
    if not isinstance(metrics, list) or not all(isinstance(m, dict) for m in metrics):
        raise reader.fail("metrics", "must be a list of objects")
    if not isinstance(provenance, dict):
        raise reader.fail("provenance", "must be an object")
    parity = reader.get("parity", None)
    classes = _parse_classes(reader)
    return {
        "name": reader.text("name"), "version": reader.text("version"), "task": reader.text("task"),
        "classes": classes,
        "channels": int(reader.number("input.channels", positive=True)),
        "spacing_mm": reader.triple("input.spacing_mm", integer=False),
        "patch": patch, "divisor": divisor, "crop": crop, "normalization": _parse_normalization(reader),
        "network": NetworkInfo(reader.text("network.family"), _optional_int(reader, "network.levels"),
                               _optional_int(reader, "network.parameters"),
                               _optional_int(reader, "network.macs_per_window"),
                               _optional_int(reader, "network.truncated_at")),
        "provenance": provenance, "metrics": tuple(metrics), "licence": reader.text("licence"),
        "opset": int(reader.number("onnx.opset", positive=True)),
        "parity": parity if isinstance(parity, dict) else None,
        "threshold": _parse_threshold(reader, len(classes)),
        "mirror_axes": _parse_mirror_axes(reader),
    }


def _parse_mirror_axes(reader: _Json) -> tuple[int, ...] | None:
    """input.mirror_axes: the model-grid axes (0 z, 1 y, 2 x) its training mirrored, which `--tta`
    mirrors; absent in older packages (then all three)."""
    value = reader.get("input.mirror_axes", None)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= 2
                                              for a in value) or len(set(value)) != len(value):
        raise reader.fail("input.mirror_axes", f"must list distinct axes among 0, 1, 2, got {value!r}")
    return tuple(sorted(value))


def _parse_threshold(reader: _Json, num_classes: int) -> float | None:
    """output.threshold: the operating point of a two-class model (absent: argmax, i.e. 0.5)."""
    value = reader.get("output.threshold", None)
    if value is None:
        return None
    threshold = reader.number("output.threshold", value)
    if num_classes != 2:
        raise reader.fail("output.threshold", f"is only for two-class models; this one has {num_classes} classes")
    if not 0.0 < threshold < 1.0:
        raise reader.fail("output.threshold", f"must lie strictly between 0 and 1, got {threshold}")
    return threshold


def _package_folder(path: Path) -> Path:
    path = Path(path)
    if path.is_file() and path.name in ("model.json", "model.onnx"):
        path = path.parent
    if not path.is_dir():
        raise ModelPackageError(f"model package {path}: not a folder")
    if not (path / "model.json").is_file():
        raise ModelPackageError(f"model package {path}: model.json is missing")
    return path


def load_package(path: Path | str) -> ModelPackage:
    """Read and fully verify a package folder (or its model.json / model.onnx)."""
    folder = _package_folder(Path(path))
    try:
        data = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelPackageError(f"model package {folder}: model.json is not readable JSON ({error})") from None
    if not isinstance(data, dict):
        raise ModelPackageError(f"model package {folder}: model.json must hold an object")
    reader = _Json(data, folder)
    fields = _parse(reader, folder)
    onnx_name, expected = reader.text("onnx.file"), reader.text("onnx.sha256").lower()
    onnx_path = folder / onnx_name
    if Path(onnx_name).name != onnx_name or not onnx_path.is_file():
        raise reader.fail("onnx.file", f"must name a file inside the package folder, got {onnx_name!r}")
    content = onnx_path.read_bytes()
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected:
        raise ModelPackageError(f"model package {folder}: sha256 of {onnx_name} is {actual}, "
                                f"model.json says {expected} (file changed or corrupt)")
    package = ModelPackage(path=folder, onnx_path=onnx_path, sha256=actual, metadata=data, **fields)
    check_onnx(package, content)
    return package


def metadata_without_hash(metadata: dict[str, Any]) -> dict[str, Any]:
    """model.json as stored in the ONNX metadata_props: everything but onnx.sha256 (which
    cannot be inside the file it hashes)."""
    copy = json.loads(json.dumps(metadata))
    if isinstance(copy.get("onnx"), dict):
        copy["onnx"].pop("sha256", None)
    return copy


def onnx_metadata_json(metadata: dict[str, Any]) -> str:
    """The string the exporter stores under metadata_props["covseg.model"]."""
    return json.dumps(metadata_without_hash(metadata), sort_keys=True)


def package_metadata_dict(
    *, name: str, version: str, task: str, classes: dict[int, str], spacing_mm: tuple[float, float, float],
    patch: tuple[int, int, int], divisor: tuple[int, int, int], crop: str, normalization: Normalization,
    licence: str, channels: int = 1, network: dict[str, Any] | None = None, opset: int = 17,
    sha256: str = "", provenance: dict[str, Any] | None = None, metrics: list[dict[str, Any]] | None = None,
    parity: dict[str, Any] | None = None, onnx_file: str = "model.onnx",
) -> dict[str, Any]:
    """A complete model.json dict in the schema `load_package` reads (sha256 filled in later)."""
    return {
        "schema": SCHEMA, "name": name, "version": version, "task": task,
        "classes": {str(k): v for k, v in sorted(classes.items())},
        "input": {"channels": channels, "spacing_mm": [float(v) for v in spacing_mm], "patch": list(patch),
                  "divisor": list(divisor), "crop": crop, "normalization": normalization.to_json()},
        "output": {"kind": "logits"},
        "network": network or {"family": "unknown", "levels": None, "parameters": None, "macs_per_window": None,
                               "truncated_at": None},
        "onnx": {"file": onnx_file, "sha256": sha256, "opset": opset},
        "parity": parity,
        "provenance": provenance or {"strategy": "unknown", "pretrained_from": None, "training_data": []},
        "metrics": metrics or [],
        "licence": licence,
    }


# --- the ONNX file ------------------------------------------------------------------------
def _check_shape(package: ModelPackage, what: str, dims: tuple[int | str | None, ...], channels: int) -> None:
    """Rank 5 and the channel count, where the graph states them (an undeclared shape passes here
    and is caught by the test inference of `verify_package`)."""
    if not dims:
        return
    if len(dims) != 5:
        raise ModelPackageError(f"model package {package.path}: ONNX {what} has rank {len(dims)}, expected 5 "
                                "(N, C, z, y, x)")
    if isinstance(dims[1], int) and dims[1] != channels:
        raise ModelPackageError(f"model package {package.path}: ONNX {what} has {dims[1]} channels, "
                                f"model.json says {channels}")


def check_onnx(package: ModelPackage, content: bytes) -> Any:
    """Input/output names and shapes, external-data confinement and metadata agreement."""
    from covseg.engine.runtime import OnnxSummary, scan_onnx

    folder = package.path
    summary: OnnxSummary
    try:
        summary = scan_onnx(content)
    except (ValueError, UnicodeDecodeError, KeyError) as error:
        raise ModelPackageError(f"model package {folder}: {package.onnx_path.name} is not an ONNX model "
                                f"({error})") from None
    if list(summary.inputs) != [INPUT_NAME]:
        raise ModelPackageError(f"model package {folder}: ONNX inputs are {list(summary.inputs)}, "
                                f"expected exactly ['{INPUT_NAME}']")
    if OUTPUT_NAME not in summary.outputs:
        raise ModelPackageError(f"model package {folder}: ONNX outputs are {list(summary.outputs)}, "
                                f"expected '{OUTPUT_NAME}'")
    _check_shape(package, f"input '{INPUT_NAME}'", summary.inputs[INPUT_NAME], package.channels)
    _check_shape(package, f"output '{OUTPUT_NAME}'", summary.outputs[OUTPUT_NAME], package.num_classes)
    root = folder.resolve()
    for location in summary.external_locations:
        target = (folder / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(root):
            raise ModelPackageError(f"model package {folder}: external data location {location!r} "
                                    "points outside the package folder")
        if not target.is_file():
            raise ModelPackageError(f"model package {folder}: external data file {location!r} is missing")
    stored = summary.metadata.get(METADATA_KEY)
    if stored is None:
        raise ModelPackageError(f"model package {folder}: ONNX metadata_props has no '{METADATA_KEY}' entry")
    try:
        agrees = json.loads(stored) == metadata_without_hash(package.metadata)
    except json.JSONDecodeError:
        agrees = False
    if not agrees:
        raise ModelPackageError(f"model package {folder}: ONNX metadata_props['{METADATA_KEY}'] disagrees "
                                "with model.json")
    if summary.opset is not None and summary.opset < 17:
        raise ModelPackageError(f"model package {folder}: ONNX opset {summary.opset} < 17")
    return summary
