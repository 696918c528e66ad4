"""COVID-19 lesions synthesised into real chest CT (issue 11: "lesions synthesised into real CT").

The phantom generator's lesion code (sites, shapes, fill patterns) runs on a real CT: a drawing
frame is laid over the real grid so that the lung bases and apices fall where the phantom's do
(the lower-lobe and subpleural weighting of `Sites` then holds), lesion shapes come from a chosen
subset of the MosMed masks (train / validation / test split by mask) or from procedural blobs, and
the real HU are mixed with fluid exactly as in the phantom: HU' = HU + fill * (FLUID_HU - HU), so
vessels stay visible through ground glass. The real scanner noise stays; consolidation, which
replaces most of the air, gets noise of the same level added back in proportion to its fill.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from covseg.engine.geometry import Geometry
from covseg.engine.volume import Volume
from covseg.labels import DEFAULT_CONSOLIDATION_THRESHOLD_HU, LUNG_LABELS, Label
from covseg.training.synthesis import config as c
from covseg.training.synthesis.frame import Frame
from covseg.training.synthesis.lesions import LesionFields, LesionRecord, add_covid
from covseg.training.synthesis.sites import Sites

# Reference heights (phantom frame) of the lung base and apex; see synthesis.anatomy.
REFERENCE_LUNG_BASE, REFERENCE_LUNG_APEX = 95.0, 285.0
NOISE_HU = 18.0  # approximate noise of the shared CTs in homogeneous tissue; restored inside consolidation


@dataclass(frozen=True)
class InsertedCase:
    image: Volume  # HU with lesions
    labels: Volume  # lung_left / lung_right, infection_ground_glass / infection_consolidation on top
    lesions: tuple[LesionRecord, ...]


def real_ct_frame(geometry: Geometry, lungs: np.ndarray) -> Frame:
    """A phantom drawing frame over a real, axis-aligned LPS grid, anchored on its lungs.

    In-plane: real millimetres centred on the lungs' left-right midpoint and front-back centre.
    Along z: the real lung base and apex are mapped to the phantom's, so lobe weights apply.
    """
    if not np.allclose(geometry.direction_matrix, np.eye(3), atol=1e-3):
        raise ValueError("lesion insertion needs an axis-aligned LPS grid (orient the image first)")
    z_idx, y_idx, x_idx = np.nonzero(lungs)
    if z_idx.size == 0:
        raise ValueError("no lung voxels: cannot place lesions")
    sx, sy, sz = geometry.spacing
    nx, ny, nz = geometry.size
    x = (np.arange(nx) - 0.5 * (x_idx.min() + x_idx.max())) * sx
    y = (np.arange(ny) - float(np.mean(y_idx))) * sy
    base, apex = float(z_idx.min()), float(max(z_idx.max(), z_idx.min() + 1))
    per_slice = (REFERENCE_LUNG_APEX - REFERENCE_LUNG_BASE) / max((apex - base) * sz, 150.0) * sz
    z = REFERENCE_LUNG_BASE + (np.arange(nz) - base) * per_slice
    return Frame(geometry=geometry, scale=1.0, x=x, y=y, z=z)


def _cavity(frame: Frame, lungs: np.ndarray) -> tuple[float, float, float]:
    """(semi-axis x, semi-axis y, centre y) of the chest cavity, from the lungs' in-plane extent."""
    _, y_idx, x_idx = np.nonzero(lungs)
    xs, ys = frame.x[x_idx], frame.y[y_idx]
    return (max(float(np.abs(xs).max()), 1.0), max(0.5 * float(ys.max() - ys.min()), 1.0),
            0.5 * float(ys.max() + ys.min()))


def insert_covid(image: Volume, lung_labels: np.ndarray, *, seed: int, count: int, scale: float = 1.0,
                 shape_files: tuple[Path, ...] | None = None, ggo_fill: tuple[float, float] = c.GGO_FILL
                 ) -> InsertedCase:
    """Draw `count` COVID-19 lesions into the lungs of a real CT; labels are exact by construction.

    `shape_files`: MosMed masks to take shapes from (None: procedural blobs); `ggo_fill`: the ground glass's
    fill range (config.GGO_FILL, up to ~-410 HU; DENSE_GGO_FILL, up to ~-150; FAINT_GGO_FILL, ~-720 to -590).
    The fill range changes the HU only: the same seed draws the same lesions.
    """
    rng = np.random.default_rng(seed)
    lungs = np.isin(lung_labels, LUNG_LABELS)
    frame = real_ct_frame(image.geometry, lungs)
    sites = Sites.from_lungs(frame, lungs, _cavity(frame, lungs))
    fields = LesionFields.empty(frame.shape)
    maker = None
    if shape_files is not None:
        from covseg.training.synthesis.mosmed_shapes import MosmedShapes

        maker = MosmedShapes(frame, rng, files=shape_files)
    records = add_covid(frame, rng, sites, lungs, fields, count, scale, maker, ggo_fill)
    hu = image.array.astype(np.float32, copy=True)
    # Airway lumen (air inside the lung mask) stays air: air bronchograms, as in the phantom.
    lumen = ndimage.binary_opening(lungs & (hu < -950.0), iterations=1)
    fill = fields.fill * (lungs & ~lumen)
    hu += fill * (c.FLUID_HU - hu)
    hu += (rng.normal(0.0, NOISE_HU, hu.shape).astype(np.float32) * np.clip(fill - 0.5, 0.0, 0.5) * 2.0)
    np.clip(np.rint(hu, out=hu), c.HU_MIN, c.HU_MAX, out=hu)
    labels = np.where(lungs, lung_labels, 0).astype(np.uint8)
    infection = fields.infection & lungs & ~lumen
    consolidation = hu >= DEFAULT_CONSOLIDATION_THRESHOLD_HU
    labels[infection & ~consolidation] = Label.INFECTION_GROUND_GLASS
    labels[infection & consolidation] = Label.INFECTION_CONSOLIDATION
    dtype = image.array.dtype if np.issubdtype(image.array.dtype, np.floating) else np.int16  # HU are integers
    return InsertedCase(image.with_array(hu.astype(dtype, copy=False)), image.with_array(labels), tuple(records))


def split_mosmed(files: tuple[Path, ...], *, seed: int = 11, fractions: tuple[float, float] = (0.6, 0.2)
                 ) -> dict[str, tuple[Path, ...]]:
    """Split the MosMed masks by file (one study, one split): train / validation / test."""
    order = np.random.default_rng(seed).permutation(len(files))
    n_train = round(fractions[0] * len(files))
    n_val = round(fractions[1] * len(files))
    pick = [files[i] for i in order]
    return {"train": tuple(sorted(pick[:n_train])), "validation": tuple(sorted(pick[n_train:n_train + n_val])),
            "test": tuple(sorted(pick[n_train + n_val:]))}
