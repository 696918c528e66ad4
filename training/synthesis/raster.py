"""Draw tapered tubes (vessels, airways, aorta) as anti-aliased occupancy in [0, 1].

Hand-written because no dependency draws tapered capsules onto a grid: tubes thicker than about a
voxel are evaluated exactly (distance to the segment) inside their bounding box; thinner ones are
splatted along their centre line with the fraction of a voxel they fill, which the partial-volume
blur then spreads as a real scanner would.
"""

from __future__ import annotations

import numpy as np

from covseg.training.synthesis.frame import Frame


def _capsule(frame: Frame, out: np.ndarray, a: np.ndarray, b: np.ndarray, ra: float, rb: float,
             soft: float) -> None:
    reach = max(ra, rb) + soft
    box = frame.box(np.minimum(a, b) - reach, np.maximum(a, b) + reach)
    if box is None:
        return
    Z, Y, X = frame.box_coords(box)
    ab = b - a
    length2 = float(ab @ ab) or 1e-12
    px, py, pz = X - a[0], Y - a[1], Z - a[2]
    t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / length2, 0.0, 1.0)
    d = np.sqrt((px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (pz - t * ab[2]) ** 2)
    occupancy = np.clip((ra + t * (rb - ra) - d) / soft + 0.5, 0.0, 1.0).astype(np.float32)
    np.maximum(out[box], occupancy, out=out[box])


def _splat(frame: Frame, out: np.ndarray, starts: np.ndarray, ends: np.ndarray, radii: np.ndarray) -> None:
    voxel = frame.voxel
    step = 0.5 * float(voxel.min())
    lengths = np.linalg.norm(ends - starts, axis=1)
    counts = np.maximum(np.ceil(lengths / step).astype(int), 1) + 1
    owner = np.repeat(np.arange(len(starts)), counts)
    first = np.cumsum(counts) - counts
    t = (np.arange(owner.size) - first[owner]) / np.maximum(counts[owner] - 1, 1)
    points = starts[owner] + t[:, None] * (ends[owner] - starts[owner])
    index = np.rint(frame.to_index(points)).astype(int)
    size = np.array(frame.geometry.size)
    inside = np.all((index >= 0) & (index < size), axis=1)
    index, owner = index[inside], owner[inside]
    # Fraction of a voxel's cross-section the tube fills (voxel cross-section: its two smallest sides).
    cross = float(np.prod(np.sort(voxel)[:2]))
    value = np.clip(np.pi * radii[owner] ** 2 / cross, 0.0, 1.0).astype(np.float32)
    flat = np.ravel_multi_index((index[:, 2], index[:, 1], index[:, 0]), out.shape)
    np.maximum.at(out.reshape(-1), flat, value)


def draw_tubes(frame: Frame, out: np.ndarray, starts: np.ndarray, ends: np.ndarray, r_start: np.ndarray,
               r_end: np.ndarray) -> None:
    """Raise `out` (float32 (z, y, x), contiguous) to the occupancy of each tube start->end (reference mm)."""
    starts, ends = np.atleast_2d(starts).astype(float), np.atleast_2d(ends).astype(float)
    r_start, r_end = np.atleast_1d(r_start).astype(float), np.atleast_1d(r_end).astype(float)
    soft = float(frame.voxel.min())
    thick = np.maximum(r_start, r_end) >= 0.75 * soft
    for i in np.flatnonzero(thick):
        _capsule(frame, out, starts[i], ends[i], r_start[i], r_end[i], soft)
    thin = ~thick
    if thin.any():
        _splat(frame, out, starts[thin], ends[thin], 0.5 * (r_start[thin] + r_end[thin]))
