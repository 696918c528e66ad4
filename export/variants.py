"""Derived graphs of an exported model, each shipped as its own package with its own parity.

- fp16: weights and arithmetic in float16 for GPUs, converted with onnxconverter-common
  (`convert_float_to_float16`, keep_io_types=True so that the package input and output stay
  float32 as DESIGN.md section 3 requires). Its parity is measured with the CPU provider of ONNX
  Runtime when that provider runs the float16 graph, and flagged "not measured" otherwise.
- ort-optimized: the graph after ONNX Runtime's extended graph optimisations (constant folding,
  Conv+activation fusion, ...), saved with SessionOptions.optimized_model_filepath. The fused
  operators are ONNX Runtime contrib operators for the CPU provider: the variant targets
  `--device cpu` with ONNX Runtime and is not portable to other runtimes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

from covseg.errors import RuntimeUnavailableError

VARIANTS = ("fp16", "ort-optimized")
FP16_TOLERANCE = 5e-2  # float16 keeps ~3 decimal digits; logits of order 10 drift by ~1e-2


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise RuntimeUnavailableError("--fp16 needs the onnxconverter-common package "
                                      "(pip install onnxconverter-common)") from None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns for every tiny weight it rounds to float16's range
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.checker.check_model(converted, full_check=True)
    return converted


def ort_optimized(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph as ONNX Runtime's CPU provider rewrites it at ORT_ENABLE_EXTENDED."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as scratch:
        source, target = Path(scratch) / "in.onnx", Path(scratch) / "out.onnx"
        onnx.save_model(model, str(source))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load_model(str(target))
    onnx.checker.check_model(optimized)
    return optimized
