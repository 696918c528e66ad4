"""Texture fields and the scanner model: partial-volume blur and correlated noise."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], cell: tuple[float, ...]) -> np.ndarray:
    """Zero-mean, unit-variance random field varying over about `cell` voxels per axis (float32).

    White noise on a coarse lattice, trilinearly upsampled: far cheaper than filtering a full-size
    white-noise volume with a wide Gaussian, and smooth enough for tissue texture.
    """
    field = rng.standard_normal(
        tuple(int(np.ceil(n / max(c, 1.0))) + 2 for n, c in zip(shape, cell, strict=True))).astype(np.float32)
    for axis in reversed(range(len(shape))):
        n, c = shape[axis], cell[axis]
        # Separable linear interpolation as a small matrix product per axis.
        position = np.arange(n) / max(c, 1.0) + 0.5
        lower = np.floor(position).astype(int)
        weight = (position - lower).astype(np.float32)
        matrix = np.zeros((n, field.shape[axis]), dtype=np.float32)
        matrix[np.arange(n), lower] = 1.0 - weight
        matrix[np.arange(n), lower + 1] = weight
        field = np.moveaxis(np.tensordot(matrix, field, axes=([1], [axis])), 0, axis)
    field = np.ascontiguousarray(field)
    std = float(field[::3, ::3].std())  # a subsample estimates it well enough, at a fraction of the cost
    return field / std if std > 0 else field


def scanner(image: np.ndarray, rng: np.random.Generator, spacing_xyz: tuple[float, float, float],
            thickness_mm: float, noise_hu: float) -> np.ndarray:
    """Partial-volume blur (in-plane PSF ~ one voxel, slice profile FWHM = thickness) plus noise.

    CT noise is correlated in-plane by the reconstruction kernel and nearly independent between
    slices, hence the in-plane-only filter on the noise; it is rescaled to `noise_hu` exactly.
    """
    sz = spacing_xyz[2]
    sigma_z = max(thickness_mm / 2.355 / sz, 0.3)
    blurred = ndimage.gaussian_filter(image, sigma=(sigma_z, 0.5, 0.5), output=np.float32, truncate=3.0)
    if noise_hu > 0:
        noise = rng.standard_normal(image.shape, dtype=np.float32)
        ndimage.gaussian_filter(noise, sigma=(0.0, 0.7, 0.7), output=noise, truncate=3.0)
        noise *= np.float32(noise_hu / float(noise[::2, ::3, ::3].std()))
        blurred += noise
    return blurred
