"""Network -> verified model package (and its fp16 / ORT-optimised variants), all or nothing.

`export_network` is the core: it takes any eval-mode network plus a `PackageSpec`, exports the
ONNX graph, measures parity against PyTorch on random and real-like windows, refuses the export
above the tolerance, measures size and cost, and writes the package through a staging folder.
`covseg.export.checkpoint.export_checkpoint` wraps it for training checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx
from torch import nn

from covseg.errors import ModelPackageError
from covseg.export import complexity, parity, variants
from covseg.export.metadata import PackageSpec
from covseg.export.onnx_export import LogitsOnly, export_onnx, graph_opset, save_onnx
from covseg.export.package_writer import staged_folder, write_package_files


@dataclass
class ExportOptions:
    """Knobs of one export (the CLI's options)."""

    opset: int = 17
    exporter: str = "dynamo"
    tolerance: float = 1e-3
    fp16: bool = False
    fp16_tolerance: float = variants.FP16_TOLERANCE
    optimize: bool = False
    parity_data: Path | None = None
    random_windows: int = 2
    measure_latency: bool = True
    latency_repeats: int = 3
    overwrite: bool = False


@dataclass
class ExportResult:
    """Where each package went and what its model.json says."""

    packages: dict[str, Path]
    metadata: dict[str, dict[str, Any]]


def divisor_of(strides: Sequence[int], dims: int = 3) -> tuple[int, int, int]:
    """Total stride of the encoder per axis: valid window sizes are its multiples."""
    total = 1
    for stride in strides:
        total *= int(stride)
    return (total,) * dims  # type: ignore[return-value]


def _parity_inputs(spec: PackageSpec, options: ExportOptions) -> dict[str, Any]:
    inputs = parity.random_inputs(spec.channels, spec.patch, count=options.random_windows)
    name, window = parity.real_like_input(spec.channels, spec.patch, spec.normalization,
                                          parity_data=options.parity_data, spacing_xyz=spec.spacing_mm)
    inputs[name] = window
    return inputs


def _measure(module: nn.Module, graph: Path, spec: PackageSpec, options: ExportOptions,
             tolerance: float, what: str) -> dict[str, Any]:
    result = parity.measure_parity(module, graph, _parity_inputs(spec, options), tolerance=tolerance)
    parity.check_parity(result, tolerance, what)
    return result


def _cost(module: nn.Module, graph: Path, spec: PackageSpec, options: ExportOptions) -> dict[str, Any]:
    window = (spec.channels, *spec.patch)
    cost: dict[str, Any] = {"parameters": complexity.count_parameters(module),
                            "macs_per_window": complexity.count_macs(module, window),
                            "file_bytes": complexity.file_size(graph)}
    if options.measure_latency:
        cost["cpu_seconds_per_window"] = round(complexity.onnx_latency(
            graph, window, threads=2, repeats=options.latency_repeats), 5)
    return cost


def _variant(name: str, model: onnx.ModelProto, module: nn.Module, spec: PackageSpec, options: ExportOptions,
             scratch: Path) -> tuple[onnx.ModelProto, PackageSpec]:
    derived = variants.to_float16(model) if name == "fp16" else variants.ort_optimized(model)
    graph = save_onnx(derived, scratch / f"{name}.onnx")
    tolerance = options.fp16_tolerance if name == "fp16" else options.tolerance
    try:
        result = _measure(module, graph, spec, options, tolerance, f"{name} variant")
    except ModelPackageError:
        raise
    except Exception as error:  # e.g. no float16 kernels in this ONNX Runtime's CPU provider
        if name != "fp16":
            raise
        result = {"measured": False, "reason": f"CPU ONNX Runtime cannot run the float16 graph "
                                               f"({type(error).__name__}); measure on a GPU",
                  "max_abs_logit_diff": None, "label_agreement": None, "inputs": None, "tolerance": tolerance}
    network = {**spec.network, **_cost(module, graph, spec, options)}
    derived_spec = replace(spec, name=f"{spec.name}-{name}", network=network, parity=result,
                           precision="float16 (float32 IO)" if name == "fp16" else spec.precision,
                           variant_of=spec.name, metrics=copy.deepcopy(spec.metrics))
    return derived, derived_spec


def export_network(network: nn.Module, spec: PackageSpec, out: Path, options: ExportOptions | None = None,
                   *, head: str | None = None) -> ExportResult:
    """Export, check and write `out` (plus `out`-fp16 / `out`-ort-optimized when asked)."""
    options = options or ExportOptions()
    module = LogitsOnly(network, head)
    wanted = [name for name, on in (("fp16", options.fp16), ("ort-optimized", options.optimize)) if on]
    outs = {"float32": Path(out), **{name: Path(out).with_name(f"{Path(out).name}-{name}") for name in wanted}}
    results: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        folders = {key: stack.enter_context(staged_folder(path, overwrite=options.overwrite))
                   for key, path in outs.items()}
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        model = export_onnx(module, channels=spec.channels, patch=spec.patch, divisor=spec.divisor,
                            opset=options.opset, exporter=options.exporter)
        graph = save_onnx(model, scratch / "model.onnx")
        spec = replace(spec, opset=graph_opset(model), exporter=options.exporter,
                       parity=_measure(module, graph, spec, options, options.tolerance, "ONNX export"))
        spec.network = {**spec.network, **_cost(module, graph, spec, options)}
        for name in wanted:
            derived, derived_spec = _variant(name, onnx.load_model(str(graph)), module, spec, options, scratch)
            results[name] = write_package_files(folders[name], derived, derived_spec)
        results["float32"] = write_package_files(folders["float32"], model, spec)
    return ExportResult(packages=outs, metadata=results)
