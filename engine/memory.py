"""Peak-memory estimate of a run, made from the input geometry and the packages before anything
big is allocated, and the --max-memory guard.

The model is a sum of the arrays the pipeline holds at its peak: the Python process with its
libraries, the input volume and the output labels, plus the largest model stage (preprocessing
copies of the crop, the model-grid image, probability and weight buffers, a batch of windows and
the network's activations, the undo's per-class arrays at input resolution). Activations depend on
the network; the default allowance (ACTIVATION_BYTES_PER_VOXEL per window voxel) is the measured
order for nnU-Net-like U-Nets with 16-32 first-level features (see docs/benchmarks/sliding_window.md).
It is an estimate for refusing hopeless runs early, not a bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from covseg.engine.geometry import Geometry
from covseg.engine.package import ModelPackage
from covseg.errors import ResourceLimitError

MB = 1024.0 * 1024.0
BASE_PROCESS_MB = 350.0  # interpreter, numpy, SimpleITK, ONNX Runtime and their libraries
INPUT_BYTES_PER_VOXEL = 4 + 1 + 3  # float32 HU, uint8 labels, postprocessing masks
PREPROCESS_BYTES_PER_VOXEL = 3 * 4  # float32 crop copy, SimpleITK image, reoriented image
UNDO_BYTES_PER_VOXEL = 4 + 4 + 4 + 1 + 1  # running max, candidate, resampler output, labels, mask
ACTIVATION_BYTES_PER_VOXEL = 256  # per window voxel and batch element (about 4 tensors of 16 float32 features)


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak in MB, with the parts it is made of (for the error message and reports)."""

    total_mb: float
    parts_mb: dict[str, float] = field(default_factory=dict)

    def largest_part(self) -> str:
        return max(self.parts_mb, key=lambda k: self.parts_mb[k]) if self.parts_mb else "none"


def _model_grid_voxels(crop_mm: tuple[float, float, float], package: ModelPackage) -> int:
    """Voxels of the padded model grid for a crop of this physical size (x, y, z mm)."""
    total = 1
    for extent, spacing, patch, divisor in zip(crop_mm, package.spacing_mm, package.patch[::-1],
                                               package.divisor[::-1], strict=True):
        size = max(1, round(extent / spacing))
        total *= max(patch, math.ceil(size / divisor) * divisor)
    return total


def package_stage_mb(geometry: Geometry, package: ModelPackage, *, crop_fraction: float = 1.0,
                     batch_size: int = 2, tta: bool = False, onnx_mb: float = 0.0) -> float:
    """Peak of one model's stage; crop_fraction: share of the input extent (per axis) it sees."""
    crop_voxels = math.prod(geometry.size) * crop_fraction**3
    crop_mm = tuple(n * s * crop_fraction for n, s in zip(geometry.size, geometry.spacing, strict=True))
    grid = _model_grid_voxels(crop_mm, package)
    window = math.prod(package.patch)
    buffers = grid * 4 * (package.channels + package.num_classes + 1)
    windows = batch_size * window * 4 * (package.channels + 2 * package.num_classes) * (2 if tta else 1)
    activations = batch_size * window * ACTIVATION_BYTES_PER_VOXEL
    preprocess = crop_voxels * PREPROCESS_BYTES_PER_VOXEL
    undo = crop_voxels * UNDO_BYTES_PER_VOXEL + buffers  # probabilities are held while undoing
    inference = buffers + windows + activations
    return (max(preprocess, inference, undo) + onnx_mb * MB) / MB


def estimate_memory(geometry: Geometry, packages: Sequence[ModelPackage], *, batch_size: int = 2,
                    tta: bool = False, crop_fractions: Sequence[float] | None = None) -> MemoryEstimate:
    """Estimated peak of a run over `geometry` with `packages` run one after the other."""
    fractions = list(crop_fractions) if crop_fractions is not None else [1.0] * len(packages)
    parts = {"process": BASE_PROCESS_MB,
             "input and outputs": math.prod(geometry.size) * INPUT_BYTES_PER_VOXEL / MB}
    for package, fraction in zip(packages, fractions, strict=True):
        onnx_mb = package.onnx_path.stat().st_size / MB if package.onnx_path.is_file() else 0.0
        parts[f"model {package.name}"] = package_stage_mb(geometry, package, crop_fraction=fraction,
                                                          batch_size=batch_size, tta=tta, onnx_mb=onnx_mb)
    stages = [v for k, v in parts.items() if k.startswith("model ")]
    total = parts["process"] + parts["input and outputs"] + (max(stages) if stages else 0.0)
    return MemoryEstimate(total_mb=total, parts_mb=parts)


def check_memory(estimate: MemoryEstimate | float, max_memory_mb: float | None) -> None:
    """Raise ResourceLimitError when the estimate exceeds --max-memory (None: no limit)."""
    if max_memory_mb is None:
        return
    total = estimate.total_mb if isinstance(estimate, MemoryEstimate) else float(estimate)
    if total > max_memory_mb:
        detail = f" (largest part: {estimate.largest_part()})" if isinstance(estimate, MemoryEstimate) else ""
        raise ResourceLimitError(f"estimated peak memory {total:.0f} MB exceeds --max-memory "
                                 f"{max_memory_mb:.0f} MB{detail}")
