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
    variance = 1.0
    for axis in reversed(range(len(shape))):
        n, c = shape[axis], cell[axis]
        # Separable linear interpolation with elementwise arithmetic only (no BLAS), so the result does
        # not depend on the CPU's matrix kernels: the committed sample must regenerate bit for bit.
        position = np.arange(n) / max(c, 1.0) + 0.5
        lower = np.floor(position).astype(int)
        weight = (position - lower).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(len(shape))])
        field = (np.take(field, lower, axis=axis) * (np.float32(1.0) - weight)
                 + np.take(field, lower + 1, axis=axis) * weight)
        variance *= float(np.mean((1.0 - weight) ** 2 + weight**2))  # expected variance after this axis
    field *= np.float32(1.0 / np.sqrt(variance))
    return np.ascontiguousarray(field)


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
