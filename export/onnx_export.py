"""PyTorch network -> ONNX graph with input "image" and output "logits".

Exporter path: `torch.onnx.export(..., dynamo=True)`, the torch.export-based exporter that is
the default and the maintained path in torch 2.13 (the TorchScript exporter is deprecated there).
It records dynamic batch and spatial axes as multiples of the network's divisor (the package's
`input.divisor`), so the graph states which window sizes are valid. The TorchScript exporter stays
selectable (`exporter="torchscript"`) as a fallback for a network that torch.export cannot trace;
which one produced a package is recorded in model.json (`onnx.exporter`).

The dynamo exporter implements opset 18 and converts down when 17 is asked for (onnx's version
converter); where that conversion is impossible it keeps 18. The package records the opset the
file really has.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from covseg.errors import ModelPackageError

EXPORTERS = ("dynamo", "torchscript")
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
SPATIAL_AXES = ("z", "y", "x")


class LogitsOnly(nn.Module):
    """Eval-mode view of a network that returns one logits tensor (N, K, z, y, x).

    Deep-supervision lists keep only their first (full-resolution) entry; a multi-head network is
    reduced to its encoder and the chosen decoder, so the graph and the parameter count hold only
    what the chosen head uses.
    """

    def __init__(self, network: nn.Module, head: str | None = None) -> None:
        super().__init__()
        decoders = getattr(network, "decoders", None)
        self.head = head
        if isinstance(decoders, nn.ModuleDict):
            name = head or getattr(network, "default_head", None) or next(iter(decoders))
            if name not in decoders:
                raise ModelPackageError(f"--head {name!r}: this network has heads {', '.join(decoders)}")
            self.head = name
            self.encoder: nn.Module | None = network.encoder  # type: ignore[assignment]
            self.network: nn.Module = decoders[name]
        else:
            if head is not None:
                raise ModelPackageError(f"--head {head!r}: this {type(network).__name__} has a single head")
            self.encoder = None
            self.network = network
        self.eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out: Any = self.network(self.encoder(image)) if self.encoder is not None else self.network(image)
        if isinstance(out, list | tuple):
            out = out[0]
        return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress and warnings on stdout/stderr; the CLI prints its own summary."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _dynamic_shapes(divisor: Sequence[int]) -> dict[str, dict[int, Any]]:
    batch = torch.export.Dim("batch", min=1, max=1024)
    shapes: dict[int, Any] = {0: batch}
    for axis, (name, step) in enumerate(zip(SPATIAL_AXES, divisor, strict=True), start=2):
        dim = torch.export.Dim(f"{name}_blocks", min=1, max=4096 // int(step))
        shapes[axis] = int(step) * dim if int(step) > 1 else dim
    return {"image": shapes}


def _export_dynamo(module: nn.Module, example: torch.Tensor, divisor: Sequence[int], opset: int) -> onnx.ModelProto:
    program = torch.onnx.export(module, (example,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                opset_version=opset, dynamo=True, dynamic_shapes=_dynamic_shapes(divisor),
                                optimize=True, verbose=False)
    if program is None:
        raise ModelPackageError("the dynamo ONNX exporter returned no program")
    return program.model_proto


def _export_torchscript(module: nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    axes = {0: "batch", 2: "z", 3: "y", 4: "x"}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        torch.onnx.export(module, (example,), path, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=opset, dynamo=False, do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes})
        return onnx.load_model(str(path))


def graph_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset the file declares."""
    return max((int(entry.version) for entry in model.opset_import if entry.domain in ("", "ai.onnx")), default=0)


def export_onnx(module: nn.Module, *, channels: int, patch: Sequence[int], divisor: Sequence[int],
                opset: int = 17, exporter: str = "dynamo") -> onnx.ModelProto:
    """Trace `module` (already a `LogitsOnly`) on a zero window of `patch` and return the checked graph."""
    if exporter not in EXPORTERS:
        raise ModelPackageError(f"--exporter {exporter!r}: choose one of {', '.join(EXPORTERS)}")
    if opset < 17:
        raise ModelPackageError(f"--opset {opset}: model packages need opset >= 17")
    if any(int(p) % int(d) for p, d in zip(patch, divisor, strict=True)):
        raise ModelPackageError(f"patch {list(patch)} is not a multiple of the network divisor {list(divisor)}")
    module.eval()
    example = torch.zeros((1, channels, *(int(p) for p in patch)), dtype=torch.float32)
    try:
        with _quiet(), torch.no_grad():
            if exporter == "dynamo":
                model = _export_dynamo(module, example, divisor, opset)
            else:
                model = _export_torchscript(module, example, opset)
    except ModelPackageError:
        raise
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelPackageError(f"ONNX export ({exporter}) failed: {first}; try --exporter "
                                f"{'torchscript' if exporter == 'dynamo' else 'dynamo'}") from error
    _check_io(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def _check_io(model: onnx.ModelProto) -> None:
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise ModelPackageError(f"exported graph has inputs {inputs} and outputs {outputs}; "
                                f"expected ['{INPUT_NAME}'] and ['{OUTPUT_NAME}']")


def save_onnx(model: onnx.ModelProto, path: Path) -> Path:
    """One self-contained file (no external data: our networks are far below 2 GB)."""
    onnx.save_model(model, str(path), save_as_external_data=False)
    return path
