"""Parity of an exported ONNX graph with the PyTorch network it came from.

Two kinds of input: seeded random normal windows (they exercise every weight with no structure)
and one real-like window (CT intensities with lungs, body and lesions, normalised as the package
says): the phantom of `covseg.training.synthesis` when it is available, a NIfTI file given with
--parity-data, and otherwise a small analytic chest (body ellipse, two lungs, ground-glass blobs)
drawn here. Per input we record the largest absolute logit difference and the fraction of voxels
whose argmax label agrees; the package records the worst of each.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from covseg.errors import InputError, ModelPackageError


def normalise_hu(hu: np.ndarray, normalization: Mapping[str, Any]) -> np.ndarray:
    """HU -> network input exactly as the engine does it (the engine's own Normalization)."""
    from covseg.engine.package import Normalization

    kind = str(normalization["kind"])
    if kind == "ct_window":
        low, high = normalization["window_hu"]
        norm = Normalization(kind, float(low), float(high))
    else:
        low, high = normalization["clip_hu"]
        norm = Normalization(kind, float(low), float(high), float(normalization["mean"]), float(normalization["std"]))
    return norm.apply(hu)


def random_inputs(channels: int, patch: Sequence[int], *, count: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"random-{i}": rng.standard_normal((1, channels, *patch)).astype(np.float32) for i in range(count)}


def _analytic_chest_hu(patch: Sequence[int], seed: int) -> np.ndarray:
    """Body, two lungs and ground-glass/consolidation blobs with noise. Hand-written as the last
    fallback so that export never depends on the training package's phantom being importable."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1.0, 1.0, int(n)) for n in patch), indexing="ij")
    hu = np.full(tuple(int(n) for n in patch), -1000.0, dtype=np.float32)
    hu[(y / 0.8) ** 2 + (x / 0.95) ** 2 < 1.0] = 40.0
    for side in (-0.45, 0.45):
        hu[((x - side) / 0.33) ** 2 + (y / 0.55) ** 2 + (z / 1.2) ** 2 < 1.0] = -850.0
    for _ in range(3):
        cz, cy, cx = rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.3), rng.choice([-0.45, 0.45])
        radius = rng.uniform(0.1, 0.25)
        hu[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 < radius**2] = rng.choice([-550.0, -50.0])
    return hu + rng.normal(0.0, 20.0, hu.shape).astype(np.float32)


def _phantom_hu(patch: Sequence[int], spacing_xyz: Sequence[float] | None, seed: int) -> np.ndarray | None:
    """A whole synthetic chest drawn on exactly one window's grid (the training package's phantom)."""
    drawn = _cached_phantom(tuple(int(n) for n in patch), tuple(float(v) for v in spacing_xyz or (1.5, 1.5, 2.5)),
                            seed)
    return None if drawn is None else drawn.copy()


@functools.lru_cache(maxsize=4)
def _cached_phantom(patch: tuple[int, int, int], spacing_xyz: tuple[float, float, float], seed: int
                    ) -> np.ndarray | None:
    # cached: variants and repeated exports of one network draw the same window
    try:
        from covseg.training.synthesis.config import PhantomConfig
        from covseg.training.synthesis.phantom import make_phantom
    except ImportError:
        return None
    size_xyz = tuple(max(8, int(n)) for n in reversed(tuple(patch)))
    config = PhantomConfig(seed=seed, size_xyz=size_xyz, spacing_xyz=spacing_xyz, lesions=("covid",),
                           lesion_count=3)
    hu = np.asarray(make_phantom(config).image.array, dtype=np.float32)
    return hu[tuple(slice(0, int(n)) for n in patch)]


def _nifti_hu(path: Path, patch: Sequence[int]) -> np.ndarray:
    """The central window of a CT file (native grid: parity compares two runtimes on one input)."""
    import SimpleITK as sitk

    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
    except RuntimeError as error:
        raise InputError(f"--parity-data {path}: not a readable image ({str(error).strip().splitlines()[-1]})") \
            from None
    if array.ndim != 3:
        raise InputError(f"--parity-data {path}: need a 3D CT volume, got {array.ndim} dimensions")
    short = [max(0, int(p) - s) for p, s in zip(patch, array.shape, strict=True)]
    pad = [(n // 2, n - n // 2) for n in short]
    array = np.pad(array, pad, constant_values=-1024.0)
    start = [(s - p) // 2 for s, p in zip(array.shape, patch, strict=True)]
    return array[tuple(slice(a, a + p) for a, p in zip(start, patch, strict=True))]


def real_like_input(channels: int, patch: Sequence[int], normalization: Mapping[str, Any], *,
                    parity_data: Path | None = None, spacing_xyz: Sequence[float] | None = None,
                    seed: int = 0) -> tuple[str, np.ndarray]:
    """(name, normalised (1, C, *patch) window) from --parity-data, the phantom, or the analytic chest."""
    if parity_data is not None:
        name, hu = f"nifti:{Path(parity_data).name}", _nifti_hu(Path(parity_data), patch)
    else:
        phantom = _phantom_hu(patch, spacing_xyz, seed)
        name, hu = ("phantom", phantom) if phantom is not None else ("analytic-chest", _analytic_chest_hu(patch, seed))
    window = normalise_hu(hu, normalization)
    return name, np.repeat(window[None, None], channels, axis=1).astype(np.float32)


def _ort_session(onnx_path: Path, providers: Sequence[str]) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), options, providers=list(providers))


def compare(reference: np.ndarray, candidate: np.ndarray, tie_margin: float = 0.0) -> dict[str, Any]:
    """Max abs logit difference and argmax agreement, over all voxels and over decisive ones.

    A voxel whose two best PyTorch logits lie within `tie_margin` (the tolerance) is a tie up to the
    numerical error we accept; either label is right there. Random-weight networks have many such
    voxels, trained ones few, so both figures are recorded.
    """
    if reference.shape != candidate.shape:
        raise ModelPackageError(f"parity: ONNX output shape {candidate.shape} != PyTorch {reference.shape}")
    diff = float(np.max(np.abs(reference.astype(np.float64) - candidate.astype(np.float64))))
    same = reference.argmax(axis=1) == candidate.argmax(axis=1)
    top2 = np.sort(reference, axis=1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > tie_margin
    return {"max_abs_logit_diff": diff, "label_agreement": float(np.mean(same)),
            "label_agreement_decisive": float(np.mean(same[decisive])) if decisive.any() else 1.0,
            "tie_voxels": int(np.count_nonzero(~decisive))}


def measure_parity(module: nn.Module, onnx_path: Path, inputs: Mapping[str, np.ndarray], *, tolerance: float,
                   providers: Sequence[str] = ("CPUExecutionProvider",)) -> dict[str, Any]:
    """Run every input through PyTorch (CPU, float32) and ONNX Runtime; worst case first."""
    import onnxruntime as ort

    session = _ort_session(onnx_path, providers)
    cases: list[dict[str, Any]] = []
    module.eval()
    for name, image in inputs.items():
        with torch.no_grad():
            reference = module(torch.from_numpy(image)).numpy()
        candidate = session.run(["logits"], {"image": image})[0]
        cases.append({"input": name, "shape": list(image.shape), **compare(reference, candidate, tolerance)})
    kinds = sorted({str(c["input"]).split("-")[0].split(":")[0] for c in cases})
    return {
        "max_abs_logit_diff": max(float(c["max_abs_logit_diff"]) for c in cases),
        "label_agreement": min(float(c["label_agreement"]) for c in cases),
        "label_agreement_decisive": min(float(c["label_agreement_decisive"]) for c in cases),
        "tolerance": tolerance,
        "inputs": " + ".join(kinds),
        "runtime": f"onnxruntime {ort.__version__} {session.get_providers()[0]} vs torch {torch.__version__} CPU",
        "cases": cases,
        "measured": True,
    }


def check_parity(parity: Mapping[str, Any], tolerance: float, what: str = "ONNX export") -> None:
    """Refuse a graph whose logits drift more than `tolerance` from PyTorch."""
    diff = float(parity["max_abs_logit_diff"])
    if not diff <= tolerance:
        worst = max(parity["cases"], key=lambda c: c["max_abs_logit_diff"])
        raise ModelPackageError(f"{what} parity failed: max abs logit difference {diff:.3g} > tolerance "
                                f"{tolerance:.3g} (input {worst['input']}, label agreement "
                                f"{parity['label_agreement']:.4f}); no package written")
