"""Sliding-window inference over a predictor: a pure function of (image, predictor, options).

Windows of the patch size cover the image with first and last windows flush with the borders
(nnU-Net's step rule: as few steps as the overlap allows, spread evenly). Each window's logits are
turned into softmax probabilities, weighted by a Gaussian importance map and accumulated into
float32 buffers the size of the image; the result is the weighted mean. Hand-written rather than
MONAI's `sliding_window_inference` because the engine must not import torch; tests check that the
two agree.

The importance map is a sampled Gaussian, exp(-d^2 / (2 sigma^2)) with sigma = patch / 8 per axis and
d measured from the patch centre (patch - 1) / 2 (symmetric, so mirroring TTA stays consistent),
floored at max(smallest value, 1e-3) so that no voxel's weight is 0 (corners of flush windows must
still count). This is the map MONAI 1.6 computes for mode="gaussian", sigma_scale=0.125.

Skipping empty windows (`skip_empty`): when the callable says a window's input holds nothing to
segment (e.g. all voxels at the normalised value of air: `empty_below(value)`), the predictor is
not called and the window contributes probability 1 for class 0 (background) with its usual
weight. Voxels covered also by non-empty windows get a weighted mix, as with any overlap.

Mirroring TTA and sided classes (`x_mirror_channels`): a model that names sides (lung_left,
lung_right) sees, in a window mirrored along x (the left-right axis of the model grid, which
preprocessing puts in LPS), a left lung where the right one was; un-flipping the output puts it back
in place but under the other side's channel. Those channels are permuted back for every mirroring
that includes x; without it the sides' probabilities are averaged together and background wins at the
edges (measured: left/right lung DSC 0.951/0.931 instead of 0.965/0.982 on lungdx_a0001 series 2).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache

import numpy as np

Shape3 = tuple[int, int, int]
MIN_WEIGHT = 1e-3


@lru_cache(maxsize=16)
def importance_map(patch: Shape3, sigma_scale: float = 0.125) -> np.ndarray:
    """Gaussian weights of a patch (float32, read-only, cached per shape)."""
    weights = np.ones((1, 1, 1), dtype=np.float64)
    for axis, size in enumerate(patch):
        sigma = max(size * sigma_scale, 1e-6)
        offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
        shape = [1, 1, 1]
        shape[axis] = size
        weights = weights * np.exp(-(offsets**2) / (2.0 * sigma**2)).reshape(shape)
    floor = max(float(weights.min()), MIN_WEIGHT)
    result = np.maximum(weights, floor).astype(np.float32)
    result.setflags(write=False)
    return result


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices along one axis: cover [0, size), first at 0 and last at size - patch,
    the fewest steps of at most patch * (1 - overlap), spread evenly (nnU-Net's rule)."""
    if size <= patch:
        return [0]
    target = max(patch * (1.0 - overlap), 1.0)
    steps = math.ceil((size - patch) / target) + 1
    step = (size - patch) / (steps - 1)
    return [round(step * i) for i in range(steps)]


def window_slices(shape: Shape3, patch: Shape3, overlap: float) -> list[tuple[slice, slice, slice]]:
    """All windows over a (z, y, x) shape at least as large as the patch."""
    starts = [window_starts(s, p, overlap) for s, p in zip(shape, patch, strict=True)]
    return [tuple(slice(a, a + p) for a, p in zip(corner, patch, strict=True))  # type: ignore[misc]
            for corner in itertools.product(*starts)]


def empty_below(value: float) -> Callable[[np.ndarray], bool]:
    """A `skip_empty` test: the window's input is nowhere above `value` (e.g. normalised air + margin)."""
    def is_empty(window: np.ndarray) -> bool:
        return bool(window.max() <= value)
    return is_empty


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax in float32 (in place on a float32 copy)."""
    out = np.array(logits, dtype=np.float32, copy=True)
    out -= out.max(axis=axis, keepdims=True)
    np.exp(out, out=out)
    out /= out.sum(axis=axis, keepdims=True)
    return out


def _flips(axes: Sequence[int] = (0, 1, 2)) -> list[tuple[int, ...]]:
    """The mirror combinations over the given spatial axes (0 z, 1 y, 2 x) as batch axes (2, 3, 4):
    8 for all three, the identity first."""
    batch_axes = tuple(2 + int(a) for a in sorted(set(axes)))
    return [combo for r in range(len(batch_axes) + 1) for combo in itertools.combinations(batch_axes, r)]


X_AXIS = 4  # of a (N, C, z, y, x) batch


def _predict(batch: np.ndarray, predictor: Callable[[np.ndarray], np.ndarray], tta: bool,
             apply_softmax: bool, x_mirror_channels: Sequence[int] | None = None,
             tta_axes: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """Probabilities of a batch of windows, averaged over mirrorings when tta."""
    def one(flip: tuple[int, ...]) -> np.ndarray:
        source = np.ascontiguousarray(np.flip(batch, flip)) if flip else batch
        out = np.asarray(predictor(source), dtype=np.float32)
        if out.ndim != 5 or out.shape[0] != batch.shape[0] or out.shape[2:] != batch.shape[2:]:
            raise ValueError(f"predictor returned shape {out.shape} for a batch of shape {batch.shape}")
        out = softmax(out) if apply_softmax else out
        if X_AXIS in flip and x_mirror_channels is not None:
            out = out[:, list(x_mirror_channels)]
        return np.flip(out, flip) if flip else out

    flips = _flips(tta_axes) if tta else [()]
    total = one(())
    for flip in flips[1:]:
        total += one(flip)
    if len(flips) > 1:
        total *= np.float32(1.0 / len(flips))
    return total


def _pad(image: np.ndarray, patch: Shape3, value: float) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad (symmetrically) to at least the patch; return the padded image and the crop back."""
    short = [max(p - s, 0) for s, p in zip(image.shape[1:], patch, strict=True)]
    if not any(short):
        return image, (slice(None),) * 4
    widths = [(0, 0)] + [(d // 2, d - d // 2) for d in short]
    padded = np.pad(image, widths, mode="constant", constant_values=value)
    crop = (slice(None), *tuple(slice(w[0], w[0] + s) for w, s in zip(widths[1:], image.shape[1:], strict=True)))
    return padded, crop


def _batches(items: list[tuple[slice, slice, slice]], size: int) -> Iterator[list[tuple[slice, slice, slice]]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def sliding_window(
    image: np.ndarray, predictor: Callable[[np.ndarray], np.ndarray], *, patch: tuple[int, int, int],
    overlap: float = 0.5, batch_size: int = 2, tta: bool = False,
    skip_empty: Callable[[np.ndarray], bool] | None = None, progress: Callable[[float], None] | None = None,
    pad_value: float = 0.0, apply_softmax: bool = True, num_classes: int | None = None,
    x_mirror_channels: Sequence[int] | None = None, tta_axes: Sequence[int] = (0, 1, 2),
) -> np.ndarray:
    """Softmax probabilities (K, z, y, x) float32 of a (C, z, y, x) image, window by window.

    overlap in [0, 1); batch_size windows per predictor call; tta: average over the 8 mirrorings
    (8x the work); skip_empty: see the module docstring; pad_value: what an image smaller than the
    patch is padded with (the normalised value of air, for CT); apply_softmax=False when the predictor
    already returns probabilities; num_classes: K, needed only when every window may be skipped;
    x_mirror_channels: with tta, the channel order of an x-mirrored window's output (sided classes swap;
    see the module docstring), None when no class names a side; tta_axes: the image axes (0 z, 1 y, 2 x)
    tta mirrors, those the model was trained to be indifferent to (none: tta does nothing).
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if image.ndim != 4:
        raise ValueError(f"image must be (C, z, y, x), got shape {image.shape}")
    if len(patch) != 3 or any(int(p) < 1 for p in patch):
        raise ValueError(f"patch must be 3 positive sizes, got {patch}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    patch = (int(patch[0]), int(patch[1]), int(patch[2]))
    padded, crop = _pad(np.asarray(image, dtype=np.float32), patch, pad_value)
    shape: Shape3 = padded.shape[1:]
    weights = importance_map(patch)
    windows = window_slices(shape, patch, overlap)
    total_weight = np.zeros(shape, dtype=np.float32)
    probabilities: np.ndarray | None = None
    empty: list[tuple[slice, slice, slice]] = []
    done = 0
    for group in _batches(windows, batch_size):
        work = [w for w in group if skip_empty is None or not skip_empty(padded[(slice(None), *w)])]
        empty += [w for w in group if w not in work]
        if work:
            batch = np.stack([padded[(slice(None), *w)] for w in work])
            out = _predict(batch, predictor, tta, apply_softmax, x_mirror_channels, tta_axes)
            if probabilities is None:
                probabilities = np.zeros((out.shape[1], *shape), dtype=np.float32)
            for window, window_probs in zip(work, out, strict=True):
                probabilities[(slice(None), *window)] += window_probs * weights
                total_weight[window] += weights
        done += len(group)
        if progress is not None:
            progress(done / len(windows))
    if probabilities is None:  # every window was empty: the predictor never told us K
        if num_classes is None:
            raise ValueError("every window was skipped as empty; pass num_classes to get all background")
        probabilities = np.zeros((num_classes, *shape), dtype=np.float32)
    for window in empty:
        probabilities[(0, *window)] += weights
        total_weight[window] += weights
    probabilities /= total_weight
    return np.ascontiguousarray(probabilities[crop])
