"""Dependent density: the denser band of normal lung along the posterior pleura of a supine patient.

Gravity compresses the most dependent alveoli (and 5 mm slices average them with the pleura), so
real CTs without disease show a smooth subpleural band of -650 to -300 HU at the posterior lung
bases, a few millimetres to a centimetre thick, thinning towards the apex. It is normal lung, not
infection; on lungdx_a0001 (no COVID-19) the infection model 1.1.0 called such bands, and density
along the heart border and diaphragm, infection (docs/evaluation/infection-1.1.0: 25-28 mL). Phantoms
with this band, labelled lung, are the negatives that teach the difference: COVID-19 lesions are
patchy and rounded, the dependent band smooth and continuous along the whole posterior wall.

The band is a fill fraction (as lesions are: HU = parenchyma + fill x (fluid - parenchyma)) of the
lung voxels within a varying thickness of the most posterior lung voxel of their (z, x) column.
"""

from __future__ import annotations

import numpy as np

from covseg.training.synthesis.frame import HEIGHT, Frame
from covseg.training.synthesis.imaging import smooth_noise

THICKNESS_MM = (4.0, 14.0)  # at the lung base; the band thins linearly to nothing at BAND_TOP
FILL = (0.25, 0.6)  # about -630 ... -320 HU on -850 HU parenchyma
BAND_TOP = 0.55 * HEIGHT  # reference mm above the bottom slice: no band above mid-lung
EDGE_MM = 1.5  # soft inner edge of the band


def dependent_fill(frame: Frame, rng: np.random.Generator, lungs: np.ndarray) -> np.ndarray:
    """Fill fraction (float32, 0 outside the band) of the dependent band of `lungs`."""
    out = np.zeros(frame.shape, dtype=np.float32)
    if not lungs.any():
        return out
    vox = frame.voxel
    ny = lungs.shape[1]
    # The most posterior lung voxel of each (z, x) column: +y is posterior.
    posterior = ny - 1 - np.argmax(lungs[:, ::-1, :], axis=1)  # (nz, nx)
    has_lung = lungs.any(axis=1)
    base_thickness = rng.uniform(*THICKNESS_MM)
    fill = rng.uniform(*FILL)
    wobble = 1.0 + 0.35 * smooth_noise(rng, (lungs.shape[0], lungs.shape[2]), (20.0 / vox[2], 20.0 / vox[0]))
    lowest = float(frame.z[np.flatnonzero(lungs.any(axis=(1, 2)))[0]])
    taper = np.clip((BAND_TOP - frame.z) / max(BAND_TOP - lowest, 1.0), 0.0, 1.0)[:, None]  # 1 at the base
    thickness = np.where(has_lung, base_thickness * taper * np.clip(wobble, 0.3, None), 0.0)  # (nz, nx) mm
    depth = (posterior[:, None, :] - np.arange(ny)[None, :, None]) * vox[1]  # mm anterior of the last voxel
    weight = np.clip((thickness[:, None, :] - depth) / EDGE_MM, 0.0, 1.0)  # 0 where the band is 0 mm thick
    out[lungs] = (fill * weight[lungs]).astype(np.float32)
    return out
