"""ONNX Runtime predictors, provider selection, package verification, and a reader of the
ONNX file that needs neither the `onnx` package nor a session.

A `Predictor` maps a float32 batch (N, C, z, y, x) to float32 logits (N, K, z, y, x); nothing
above it knows which backend runs. Device choice is explicit: "auto" takes TensorRT, then CUDA,
when ONNX Runtime offers them, else the CPU; "cuda" or "tensorrt" requested but not available
raises RuntimeUnavailableError and never falls back silently to the CPU (a user who asked for a
GPU and got a 20x slower run should be told, not surprised). ONNX Runtime itself drops a provider
whose libraries fail to load; `create_predictor` checks the session's providers afterwards for
the same reason.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from covseg.engine.package import INPUT_NAME, OUTPUT_NAME, ModelPackage, load_package
from covseg.errors import ModelPackageError, RuntimeUnavailableError

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


class Predictor(Protocol):
    """float32 (N, C, z, y, x) -> float32 (N, K, z, y, x) logits."""

    provider: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def select_providers(device: str, available: Sequence[str]) -> list[str]:
    """The ONNX Runtime provider chain for a device (pure: tested without GPUs). The CPU
    provider always closes the chain so that operators a GPU provider lacks still run."""
    have = set(available)
    if device not in DEVICES:
        raise RuntimeUnavailableError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return [CPU]
    if device == "auto":
        return [p for p in (TENSORRT, CUDA) if p in have] + [CPU]
    wanted = TENSORRT if device == "tensorrt" else CUDA
    if wanted not in have:
        raise RuntimeUnavailableError(
            f"device {device!r} requested but ONNX Runtime offers only {', '.join(sorted(have)) or 'nothing'}; "
            "install covseg[gpu] (onnxruntime-gpu) with a working CUDA, or run with --device cpu")
    return [wanted] + ([CUDA] if wanted == TENSORRT and CUDA in have else []) + [CPU]


def physical_cores() -> int:
    """Physical cores (hyper-threads slow convolutions down), at least 1."""
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except ImportError:
        cores = None
    return max(1, int(cores or os.cpu_count() or 1))


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeUnavailableError("ONNX Runtime is not installed; install covseg[cpu] (onnxruntime) "
                                      "or covseg[gpu] (onnxruntime-gpu)") from None
    return onnxruntime


class OnnxPredictor:
    """A Predictor over an ONNX Runtime session (input "image", output "logits")."""

    def __init__(self, session: Any, provider: str, batch_dim: int | str | None) -> None:
        self.session = session
        self.provider = provider
        self._fixed_batch = batch_dim if isinstance(batch_dim, int) else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._fixed_batch is not None and batch.shape[0] != self._fixed_batch:
            # A graph exported with a fixed batch size: run it window by window.
            step = self._fixed_batch
            parts = [self(batch[i:i + step]) for i in range(0, batch.shape[0], step)]
            return np.concatenate(parts, axis=0)
        logits = self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        return np.asarray(logits, dtype=np.float32)


def create_predictor(package: ModelPackage, *, device: str = "auto", threads: int | None = None) -> OnnxPredictor:
    """An ONNX Runtime predictor for a verified package.

    threads: intra-op threads; None = all physical cores. device: auto | cpu | cuda | tensorrt.
    """
    ort = _import_ort()
    providers = select_providers(device, ort.get_available_providers())
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(threads) if threads else physical_cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = _verified_model(package)
    try:
        session = ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as error:  # ORT raises its own exception types; all mean "cannot load"
        raise ModelPackageError(f"model package {package.path}: ONNX Runtime cannot load "
                                f"{package.onnx_path.name} ({' '.join(str(error).split())[:300]})") from None
    active = session.get_providers()
    if device != "auto" and active[0] != providers[0]:
        raise RuntimeUnavailableError(f"device {device!r} requested but ONNX Runtime could not start "
                                      f"{providers[0]} (active: {', '.join(active)}); check the CUDA installation")
    batch_dim = next((i.shape[0] for i in session.get_inputs() if i.name == INPUT_NAME), None)
    return OnnxPredictor(session, active[0], batch_dim)


def _verified_model(package: ModelPackage) -> bytes | str:
    """The model as ONNX Runtime will load it, its sha256 checked again now (the file may have
    changed since `load_package`): the verified bytes themselves, or the path when the weights
    live in external data files (which ONNX Runtime resolves relative to the file)."""
    content = package.onnx_path.read_bytes()
    if hashlib.sha256(content).hexdigest() != package.sha256:
        raise ModelPackageError(f"model package {package.path}: {package.onnx_path.name} changed since it was "
                                "verified (sha256 differs from model.json)")
    return str(package.onnx_path) if scan_onnx(content).external_locations else content


@dataclass(frozen=True)
class VerifyResult:
    """What `verify_package` checked, for `covseg models verify`."""

    package: ModelPackage
    provider: str
    output_shape: tuple[int, ...]
    seconds: float
    checks: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def verify_package(path: Path | str, *, device: str = "cpu", threads: int | None = None) -> VerifyResult:
    """Load a package (hash, schema, metadata, ONNX names, shapes, external data) and run one
    inference on a zero patch; raises ModelPackageError naming what failed."""
    package = load_package(path)
    checks = [
        ("schema", str(package.metadata.get("schema"))),
        ("sha256", f"{package.onnx_path.name} matches model.json ({package.sha256[:16]}...)"),
        ("metadata", "model.json complete; ONNX metadata_props agree"),
        ("graph", f"input '{INPUT_NAME}' (N, {package.channels}, z, y, x), output '{OUTPUT_NAME}'; "
                  "external data inside the folder"),
    ]
    predictor = create_predictor(package, device=device, threads=threads)
    start = time.perf_counter()
    zeros = np.zeros((1, package.channels, *package.patch), dtype=np.float32)
    try:
        logits = predictor(zeros)
    except Exception as error:  # a broken graph fails in ORT's own exception types
        raise ModelPackageError(f"model package {package.path}: test inference on a zero patch failed "
                                f"({' '.join(str(error).split())[:300]})") from None
    seconds = time.perf_counter() - start
    expected = (1, package.num_classes, *package.patch)
    if tuple(logits.shape) != expected:
        raise ModelPackageError(f"model package {package.path}: a zero patch of {package.patch} gave logits of "
                                f"shape {tuple(logits.shape)}, expected {expected}")
    if not np.all(np.isfinite(logits)):
        raise ModelPackageError(f"model package {package.path}: a zero patch gave non-finite logits")
    checks.append(("inference", f"zero patch {package.patch} -> {expected} on {predictor.provider} "
                                f"in {seconds:.2f} s"))
    return VerifyResult(package, predictor.provider, expected, seconds, tuple(checks))


# --- reading the ONNX file --------------------------------------------------------------
# Hand-written: the `onnx` package is not in the inference install, and an ONNX Runtime session
# would load external data before the loader could check where it points.
# Field numbers of onnx.proto3 that the scan follows (ModelProto, GraphProto, NodeProto,
# AttributeProto, TensorProto, SparseTensorProto, FunctionProto, TrainingInfoProto).
_MODEL_GRAPH, _MODEL_OPSET, _MODEL_METADATA, _MODEL_TRAINING, _MODEL_FUNCTIONS = 7, 8, 14, 20, 25
_GRAPH_NODE, _GRAPH_INIT, _GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_SPARSE_INIT = 1, 5, 11, 12, 15
_NODE_ATTRIBUTE, _FUNCTION_NODE = 5, 7
_ATTR_TENSOR, _ATTR_GRAPH, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_TENSOR_NAME, _TENSOR_EXTERNAL = 8, 13


@dataclass
class OnnxSummary:
    """What the loader needs from model.onnx, read without the onnx package."""

    inputs: dict[str, tuple[int | str | None, ...]] = field(default_factory=dict)
    outputs: dict[str, tuple[int | str | None, ...]] = field(default_factory=dict)
    external_locations: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    opset: int | None = None


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> list[tuple[int, Any]]:
    """(field number, value) pairs of one protobuf message: ints or memoryviews."""
    out: list[tuple[int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated message")
        out.append((number, value))
    return out


def _entries(values: list[memoryview]) -> dict[str, str]:
    """StringStringEntryProto list (key = 1, value = 2) as a dict."""
    result = {}
    for entry in values:
        parts = dict(_fields(entry))
        result[bytes(parts.get(1, b"")).decode()] = bytes(parts.get(2, b"")).decode()
    return result


def _scan_tensor(buf: memoryview, summary: OnnxSummary, sparse: bool = False) -> None:
    for number, value in _fields(buf):
        if sparse and number in (1, 2):
            _scan_tensor(value, summary)
        elif not sparse and number == _TENSOR_EXTERNAL:
            location = _entries([value]).get("location")
            if location is not None:
                summary.external_locations.append(location)


def _scan_nodes(nodes: list[memoryview], summary: OnnxSummary) -> None:
    for node in nodes:
        for number, attribute in _fields(node):
            if number != _NODE_ATTRIBUTE:
                continue
            for kind, value in _fields(attribute):
                if kind in (_ATTR_TENSOR, _ATTR_TENSORS):
                    _scan_tensor(value, summary)
                elif kind in (_ATTR_SPARSE, _ATTR_SPARSES):
                    _scan_tensor(value, summary, sparse=True)
                elif kind in (_ATTR_GRAPH, _ATTR_GRAPHS):
                    _scan_graph(value, summary, top=False)


def _value_info(buf: memoryview) -> tuple[str, tuple[int | str | None, ...]]:
    """Name and shape of a ValueInfoProto (name 1, type 2 -> tensor_type 1 -> shape 2 -> dim 1)."""
    parts = _fields(buf)
    name = next((bytes(v).decode() for n, v in parts if n == 1), "")
    dims: list[int | str | None] = []
    for _, type_proto in (p for p in parts if p[0] == 2):
        for _, tensor in (p for p in _fields(type_proto) if p[0] == 1):
            for _, shape in (p for p in _fields(tensor) if p[0] == 2):
                for _, dim in (p for p in _fields(shape) if p[0] == 1):
                    d = dict(_fields(dim))
                    dims.append(int(d[1]) if 1 in d else bytes(d[2]).decode() if 2 in d else None)
    return name, tuple(dims)


def _scan_graph(buf: memoryview, summary: OnnxSummary, *, top: bool) -> None:
    parts = _fields(buf)
    initializers: set[str] = set()
    for number, value in parts:
        if number == _GRAPH_INIT:
            _scan_tensor(value, summary)
            initializers.update(bytes(v).decode() for n, v in _fields(value) if n == _TENSOR_NAME)
        elif number == _GRAPH_SPARSE_INIT:
            _scan_tensor(value, summary, sparse=True)
    _scan_nodes([v for n, v in parts if n == _GRAPH_NODE], summary)
    if top:
        for number, value in parts:
            if number in (_GRAPH_INPUT, _GRAPH_OUTPUT):
                name, dims = _value_info(value)
                if number == _GRAPH_OUTPUT:
                    summary.outputs[name] = dims
                elif name not in initializers:
                    summary.inputs[name] = dims


def scan_onnx(content: bytes) -> OnnxSummary:
    """Inputs, outputs, external-data locations, metadata_props and default-domain opset of an
    ONNX model, read from its protobuf bytes (raises ValueError when they are not protobuf)."""
    summary = OnnxSummary()
    parts = _fields(memoryview(content))
    for number, value in parts:
        if number == _MODEL_GRAPH:
            _scan_graph(value, summary, top=True)
        elif number == _MODEL_OPSET:
            opset = dict(_fields(value))
            if bytes(opset.get(1, b"")).decode() not in ("", "ai.onnx"):
                continue
            summary.opset = int(opset.get(2, 0))
        elif number == _MODEL_FUNCTIONS:
            _scan_nodes([v for n, v in _fields(value) if n == _FUNCTION_NODE], summary)
        elif number == _MODEL_TRAINING:
            for _, graph in (p for p in _fields(value) if p[0] in (1, 2)):
                _scan_graph(graph, summary, top=False)
    summary.metadata = _entries([v for n, v in parts if n == _MODEL_METADATA])
    return summary
