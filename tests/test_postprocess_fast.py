"""The fast forms of two post-processing steps equal their plain definitions on random masks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from covseg.engine.geometry import Geometry
from covseg.engine.postprocess import FACE, grow_sides, near_mm


def _ball_dilation(mask: np.ndarray, spacing_zyx: np.ndarray, radius_mm: float) -> np.ndarray:
    radii = np.floor(radius_mm / spacing_zyx).astype(int)
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radii)]
    ball = sum((g * s) ** 2 for g, s in zip(grids, spacing_zyx, strict=True)) <= radius_mm**2
    return ndimage.binary_dilation(mask, structure=ball)


def _grow_everywhere(left: np.ndarray, right: np.ndarray, extra: np.ndarray, steps: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    a, b, free = left.copy(), right.copy(), extra & ~left & ~right
    for _ in range(steps):
        grow_a = ndimage.binary_dilation(a, FACE) & free
        grow_b = ndimage.binary_dilation(b, FACE) & free & ~grow_a
        a, b, free = a | grow_a, b | grow_b, free & ~(grow_a | grow_b)
    return a, b


@pytest.mark.parametrize("seed", range(6))
def test_near_mm_is_a_ball_dilation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (14, 22, 20)
    mask = ndimage.binary_opening(rng.random(shape) < 0.35)
    candidates = rng.random(shape) < 0.3
    spacing_xyz = tuple(float(v) for v in rng.uniform(0.6, 2.5, 3))
    geometry = Geometry(size=shape[::-1], spacing=spacing_xyz, origin=(0.0, 0.0, 0.0))
    radius = float(rng.uniform(0.5, 5.0))
    expected = candidates & _ball_dilation(mask, np.asarray(spacing_xyz[::-1]), radius)
    assert np.array_equal(near_mm(mask, candidates, geometry, radius), expected)


@pytest.mark.parametrize("seed", range(6))
def test_grow_sides_on_the_free_box_equals_growing_everywhere(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    shape = (12, 18, 24)
    left = np.zeros(shape, bool)
    right = np.zeros(shape, bool)
    left[:, :, :6], right[:, :, 18:] = True, True
    extra = ndimage.binary_dilation(rng.random(shape) < 0.08, iterations=2)
    got = grow_sides(left, right, extra, steps=5)
    want = _grow_everywhere(left, right, extra, steps=5)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
