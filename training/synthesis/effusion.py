"""Dependent pleural effusion: fluid (0-20 HU) layering against the posterior chest wall.

The patient lies supine, so free fluid collects posteriorly and basally. In each chosen hemithorax,
the fluid occupies the lung space within a thickness T(z) of the lung's posterior surface; T is
largest at the base and fades upwards, giving the meniscus-shaped crescent seen on axial slices. The
lung it displaces is removed from the lung mask, and a thin band of compressed (passively
atelectatic) lung in front of the fluid becomes denser but stays labelled lung.
"""

from __future__ import annotations

import numpy as np

from covseg.training.synthesis import config as c
from covseg.training.synthesis.frame import Frame
from covseg.training.synthesis.lesions import LesionRecord, _record

COMPRESSED_BAND_MM = 4.0
COMPRESSED_FILL = 0.45


def _posterior_surface(frame: Frame, lung: np.ndarray) -> np.ndarray:
    """(nz, nx) y (reference mm) of the lung's posterior-most voxel per slice and column (-inf if none)."""
    ny = lung.shape[1]
    last = ny - 1 - np.argmax(lung[:, ::-1, :], axis=1)
    present = lung.any(axis=1)
    return np.where(present, frame.y[last], -np.inf)


def add_effusion(frame: Frame, rng: np.random.Generator, lungs: np.ndarray, scale: float
                 ) -> tuple[np.ndarray, np.ndarray, list[LesionRecord]]:
    """Effusion mask, compressed-lung fill field (float32) and records; `lungs` is not modified."""
    effusion = np.zeros(lungs.shape, dtype=bool)
    compressed = np.zeros(lungs.shape, dtype=np.float32)
    records = []
    sides = [frame.x < 0, frame.x > 0]  # right, left
    choice = int(rng.integers(3))  # right, left or both
    chosen = sides if choice == 2 else [sides[choice]]
    Y = frame.y[None, :, None]
    for columns in chosen:
        lung = lungs & columns[None, None, :]
        slices = np.flatnonzero(lung.any(axis=(1, 2)))
        if slices.size == 0:
            continue
        z_low = frame.z[slices[0]]
        z_top = z_low + rng.uniform(0.3, 0.55) * (frame.z[slices[-1]] - z_low)
        thickness = rng.uniform(25.0, 50.0) * scale * np.clip((z_top - frame.z) / (z_top - z_low), 0.0, 1.0) ** 0.6
        surface = _posterior_surface(frame, lung)  # (nz, nx)
        # Thinner towards the mediastinum and the lateral wall: a crescent, not a slab.
        lateral = np.clip(1.0 - (np.abs(frame.x) - 90.0) ** 2 / 90.0**2, 0.3, 1.0)
        level = surface - thickness[:, None] * lateral[None, :]  # (nz, nx)
        fluid = lung & (level[:, None, :] < Y)
        band = lung & ~fluid & (level[:, None, :] - COMPRESSED_BAND_MM < Y) & (thickness[:, None, None] > 0)
        effusion |= fluid
        compressed[band] = COMPRESSED_FILL
        if fluid.any():
            k, j, i = np.nonzero(fluid)
            centre = np.array([frame.x[i].mean(), frame.y[j].mean(), frame.z[k].mean()])
            records.append(_record(frame, "effusion", "effusion", centre, "procedural"))
    return effusion, compressed, records


def effusion_hu(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Effusion fluid HU: near water with slight heterogeneity."""
    return (c.EFFUSION_HU + 3.0 * rng.standard_normal(shape)).astype(np.float32)
