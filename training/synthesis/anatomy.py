"""Body, chest wall, diaphragm, lungs, mediastinum and upper abdomen of the phantom (HU and masks).

All shapes are analytic in the reference frame (see `frame.py`; +x = patient's left, +y = posterior,
+z = superior), so the right lung and the liver lie at negative x. Seeded parameters vary body size,
fat, diaphragm height and heart position a little between phantoms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from covseg.training.synthesis import config as c
from covseg.training.synthesis.frame import HEIGHT, Frame
from covseg.training.synthesis.imaging import smooth_noise
from covseg.training.synthesis.raster import draw_tubes


@dataclass(frozen=True)
class AnatomyParams:
    """Seeded shape parameters, reference mm."""

    body_a: float  # body semi-axis, left-right
    body_b: float  # body semi-axis, antero-posterior
    body_yc: float
    fat: float  # subcutaneous fat thickness
    muscle: float
    dome_right: float  # height of the right hemidiaphragm dome (higher than the left)
    dome_left: float
    apex: float  # height of the lung apices
    heart: tuple[float, float, float]  # centre
    heart_axes: tuple[float, float, float]
    heart_angle: float  # radians; long axis points to the patient's left and anterior

    @classmethod
    def sample(cls, rng: np.random.Generator) -> AnatomyParams:
        u = rng.uniform
        dome_right = u(98.0, 110.0)
        dome_left = dome_right - u(8.0, 18.0)
        return cls(body_a=165.0 * u(0.95, 1.04), body_b=112.0 * u(0.95, 1.04), body_yc=6.0, fat=u(7.0, 16.0),
                   muscle=u(8.0, 12.0), dome_right=dome_right, dome_left=dome_left, apex=u(280.0, 290.0),
                   heart=(u(14.0, 24.0), u(-26.0, -16.0), dome_left + u(38.0, 46.0)),
                   heart_axes=(u(54.0, 62.0), u(42.0, 48.0), u(42.0, 48.0)), heart_angle=np.deg2rad(u(30.0, 45.0)))

    @property
    def cavity_axes(self) -> tuple[float, float]:
        """Semi-axes of the inner thoracic/abdominal cavity (inside fat, muscle and ribs)."""
        wall = self.fat + self.muscle + 8.0
        return self.body_a - wall, self.body_b - wall


# Fixed tube anatomy, reference mm: (start xyz, end xyz, radius at start, radius at end).
TRACHEA_BOTTOM = (0.0, 25.0, 0.63 * HEIGHT)
HILUM_RIGHT = (-50.0, 22.0, 0.56 * HEIGHT)
HILUM_LEFT = (50.0, 24.0, 0.54 * HEIGHT)
VERTEBRA_CENTRE = (0.0, 70.0)
VERTEBRA_AXES = (19.0, 15.0)


@dataclass
class Anatomy:
    """The healthy phantom: HU image (float32) and the masks lesions and labels build on."""

    hu: np.ndarray
    lungs: np.ndarray  # bool, both lungs (left: x > 0)
    liver: np.ndarray  # bool
    airway_lumen: np.ndarray  # float32 occupancy of air inside airways (air bronchograms stay air)
    params: AnatomyParams
    heart: np.ndarray  # bool, the heart (myocardium and chambers)
    great_vessels: np.ndarray  # float32 occupancy of the aorta, pulmonary trunk and arteries, SVC
    spleen: np.ndarray  # bool


def diaphragm_height(frame: Frame, p: AnatomyParams) -> np.ndarray:
    """(ny, nx) height of the lung base: two domes, lowest in the posterior costophrenic recesses."""
    Y, X = frame.plane()
    right = p.dome_right - 60.0 * (((X + 70.0) / 85.0) ** 2 + ((Y + 5.0) / 80.0) ** 2)
    left = p.dome_left - 60.0 * (((X - 70.0) / 85.0) ** 2 + ((Y + 5.0) / 80.0) ** 2)
    return np.where(X < 0, right, left)


def lung_top(frame: Frame, p: AnatomyParams) -> np.ndarray:
    """(ny, nx) height of the lung apex dome above each point."""
    Y, X = frame.plane()
    return p.apex - ((np.abs(X) - 55.0) ** 2 + (Y - 15.0) ** 2) / 90.0


def _ellipse(Y: np.ndarray, X: np.ndarray, centre: tuple[float, float], axes: tuple[float, float]) -> np.ndarray:
    return ((X - centre[0]) / axes[0]) ** 2 + ((Y - centre[1]) / axes[1]) ** 2


def _body_layers(frame: Frame, p: AnatomyParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ny, nx) in-plane HU of the wall, body mask and cavity mask (the same on every slice)."""
    Y, X = frame.plane()
    dy = Y - p.body_yc
    # Flatter posteriorly, where the patient lies on the table.
    exponent = np.where(dy > 0, 3.0, 2.0)
    body = (np.abs(X) / p.body_a) ** 2 + (np.abs(dy) / p.body_b) ** exponent < 1.0
    depth = ndimage.distance_transform_edt(body, sampling=(frame.voxel[1], frame.voxel[0]))
    a_c, b_c = p.cavity_axes
    cavity = _ellipse(Y, X, (0.0, p.body_yc), (a_c, b_c)) < 1.0
    wall = np.full(body.shape, c.AIR_HU, dtype=np.float32)
    wall[body] = c.FAT_HU
    wall[body & (depth <= 2.0)] = c.SKIN_HU
    wall[body & (depth > p.fat) & ~cavity] = c.MUSCLE_HU
    return wall, body, cavity


def _heart(frame: Frame, p: AnatomyParams, scale: float = 1.0) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    axes = np.asarray(p.heart_axes) * scale
    centre = np.asarray(p.heart)
    box = frame.box(centre - axes.max(), centre + axes.max())
    assert box is not None, "the heart lies inside every frame"
    Z, Y, X = frame.box_coords(box)
    cos, sin = np.cos(p.heart_angle), np.sin(p.heart_angle)
    u = (X - centre[0]) * cos - (Y - centre[1]) * sin  # along the long axis (left-anterior)
    v = (X - centre[0]) * sin + (Y - centre[1]) * cos
    inside = (u / axes[0]) ** 2 + (v / axes[1]) ** 2 + ((Z - centre[2]) / axes[2]) ** 2 < 1.0
    return box, inside


def _central_tubes(frame: Frame, p: AnatomyParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Occupancy of great vessels, of all soft-tissue tubes (the vessels and the central airway walls)
    and of the airways' air lumen."""
    top = HEIGHT + 20.0
    hz = p.heart[2]
    vessels = [  # aorta (ascending, arch, descending), pulmonary trunk and arteries, SVC, oesophagus
        ((5.0, -18.0, hz), (5.0, -18.0, 0.8 * HEIGHT), 13.0, 13.0),
        ((5.0, -18.0, 0.8 * HEIGHT), (12.0, 10.0, 0.86 * HEIGHT), 12.0, 11.0),
        ((12.0, 10.0, 0.86 * HEIGHT), (22.0, 45.0, 0.8 * HEIGHT), 11.0, 10.0),
        ((22.0, 45.0, 0.8 * HEIGHT), (18.0, 50.0, -10.0), 10.0, 10.0),
        ((10.0, -35.0, hz + 15.0), (14.0, -5.0, 0.6 * HEIGHT), 13.0, 12.0),
        ((14.0, -5.0, 0.6 * HEIGHT), (HILUM_LEFT[0] - 6.0, 12.0, HILUM_LEFT[2] + 4.0), 10.0, 8.0),
        ((14.0, -5.0, 0.6 * HEIGHT), (HILUM_RIGHT[0] + 6.0, 10.0, HILUM_RIGHT[2] + 4.0), 10.0, 8.0),
        ((-24.0, -12.0, hz + 20.0), (-24.0, -12.0, top), 9.0, 9.0),
        ((-4.0, 44.0, top), (-4.0, 44.0, p.dome_left - 10.0), 7.0, 7.0),
    ]
    airways = [  # trachea, right and left main bronchi: (lumen radius, wall)
        ((0.0, 25.0, top), TRACHEA_BOTTOM, 8.5, 8.0),
        (TRACHEA_BOTTOM, HILUM_RIGHT, 6.5, 5.5),
        (TRACHEA_BOTTOM, HILUM_LEFT, 6.0, 5.0),
    ]
    great = np.zeros(frame.shape, dtype=np.float32)
    lumen = np.zeros(frame.shape, dtype=np.float32)
    for start, end, r0, r1 in vessels[:-1]:  # the last is the oesophagus: soft tissue without blood
        draw_tubes(frame, great, np.array(start), np.array(end), np.array([r0]), np.array([r1]))
    tissue = great.copy()  # draw_tubes raises to the occupancy: the other tubes join as a maximum
    draw_tubes(frame, tissue, *(np.atleast_1d(np.asarray(v, dtype=float)) for v in vessels[-1]))
    for start, end, r0, r1 in airways:
        draw_tubes(frame, tissue, np.array(start), np.array(end), np.array([r0 + 2.0]), np.array([r1 + 1.8]))
        draw_tubes(frame, lumen, np.array(start), np.array(end), np.array([r0]), np.array([r1]))
    # Oesophagus: a collapsed lumen with a little air.
    draw_tubes(frame, lumen, np.array((-4.0, 44.0, top)), np.array((-4.0, 44.0, p.heart[2])), np.array([2.0]),
               np.array([1.5]))
    return great, tissue, lumen


def _ellipsoid(frame: Frame, centre: tuple[float, float, float], axes: tuple[float, float, float]
               ) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Bounding box and mask of an axis-aligned ellipsoid (None when it misses the grid)."""
    box = frame.box(np.subtract(centre, axes), np.add(centre, axes))
    if box is None:
        return None
    Z, Y, X = frame.box_coords(box)
    inside = ((X - centre[0]) / axes[0]) ** 2 + ((Y - centre[1]) / axes[1]) ** 2 + ((Z - centre[2]) / axes[2]) ** 2
    return box, inside < 1.0


def _abdomen(frame: Frame, p: AnatomyParams, rng: np.random.Generator, below: np.ndarray, hu: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Fill the cavity below the diaphragm: liver (right), stomach and spleen (left), bowel and fat.
    Returns the liver and spleen masks."""
    Z, Y, X = frame.grids()
    vox = frame.voxel
    top = int(np.searchsorted(frame.z, max(p.dome_right, p.dome_left) + 1.0))  # slices below the domes
    sub = (slice(0, top), slice(None), slice(None))
    texture = smooth_noise(rng, hu[sub].shape, (12.0 / vox[2], 12.0 / vox[1], 12.0 / vox[0]))
    low = below[sub]
    hu[sub][low] = (-30.0 + 45.0 * texture[low])
    liver = np.zeros(frame.shape, dtype=bool)
    liver_side = (X + 0.6 * (Y + 10.0) < 25.0)[0]
    floor = 15.0 + 0.45 * (X[0] + 150.0)  # (1, nx): the liver's lower edge rises towards the left
    roof = diaphragm_height(frame, p)[None] - 4.0
    liver[sub] = low & liver_side[None] & (Z[sub[0]] > floor[None]) & (Z[sub[0]] < roof)
    hu[sub][liver[sub]] = c.LIVER_HU + 4.0 * texture[liver[sub]]
    spleen = np.zeros(frame.shape, dtype=bool)
    for centre, axes, value in (((62.0, -25.0, p.dome_left - 42.0), (38.0, 35.0, 35.0), 15.0),
                                ((92.0, 48.0, p.dome_left - 45.0), (24.0, 38.0, 40.0), c.SPLEEN_HU)):
        found = _ellipsoid(frame, centre, axes)
        if found is None:
            continue
        box, organ = found
        organ &= below[box]
        hu[box][organ] = value
        liver[box] &= ~organ
        if value == c.SPLEEN_HU:
            spleen[box] |= organ
        if value == 15.0:  # stomach: gas rises to the front of the supine patient
            gas = organ & (frame.y[box[1]] < centre[1] - 12.0)[None, :, None]
            hu[box][gas] = c.AIR_HU
    return liver, spleen


def _lung_texture(frame: Frame, rng: np.random.Generator, p: AnatomyParams, lungs: np.ndarray) -> np.ndarray:
    """Parenchyma HU of the `lungs` voxels (1-D): -850, fine texture, denser posteriorly, faint fissures."""
    vox = frame.voxel
    texture = smooth_noise(rng, frame.shape, (4.0 / vox[2], 4.0 / vox[1], 4.0 / vox[0]))[lungs]
    k, j, i = np.nonzero(lungs)
    Z, Y, X = frame.z[k], frame.y[j], frame.x[i]
    hu = c.LUNG_HU + 18.0 * texture + 0.3 * (Y - p.body_yc)
    # Oblique fissures (both lungs) and the horizontal fissure (right lung): thin sheets of denser tissue.
    width = max(0.8, 0.6 * float(vox[2]))
    peak = 250.0 * 0.8 / width
    oblique = (Z - oblique_fissure_height(Y, X)) * 0.6
    hu += peak * np.exp(-((oblique / width) ** 2))
    horizontal = np.where((X < 0) & (oblique > 0), Z - 0.58 * HEIGHT - 0.12 * Y + 0.1 * (X + 70.0), np.inf)
    hu += peak * np.exp(-((horizontal / width) ** 2))
    return hu.astype(np.float32)


def oblique_fissure_height(Y: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Height of the oblique fissure at (Y, X), reference mm: below it lies the lower lobe."""
    return 0.72 * HEIGHT + (Y - 85.0) * (0.36 * HEIGHT) / 165.0 + 0.25 * (np.abs(X) - 70.0)


def _tapered_cavity(frame: Frame, p: AnatomyParams) -> np.ndarray:
    """(z, y, x) cavity that narrows towards the apices, as the upper chest does."""
    Z, Y, X = frame.grids()
    a_c, b_c = p.cavity_axes
    s = np.clip((Z - 0.45 * HEIGHT) / (0.55 * HEIGHT), 0.0, 1.0) ** 2
    return (X / (a_c * (1.0 - 0.25 * s))) ** 2 + ((Y - p.body_yc) / (b_c * (1.0 - 0.08 * s))) ** 2 < 1.0


def build_anatomy(frame: Frame, rng: np.random.Generator) -> Anatomy:
    """The healthy chest: wall, bones are added by `bones.add_bones`; lungs get their trees later."""
    p = AnatomyParams.sample(rng)
    Z, Y, X = frame.grids()
    wall, _, cavity = _body_layers(frame, p)
    hu = np.broadcast_to(wall, frame.shape).copy()
    base = diaphragm_height(frame, p)[None]
    inside = cavity[None] & np.ones((frame.shape[0], 1, 1), dtype=bool)
    below = inside & (base > Z)
    hu[inside & ~below] = c.SOFT_TISSUE_HU
    liver, spleen = _abdomen(frame, p, rng, below, hu)

    hbox, heart = _heart(frame, p)
    fbox, fat_rim = _heart(frame, p, scale=1.08)
    hu[fbox][fat_rim & (hu[fbox] > -500)] = c.FAT_HU
    hu[hbox][heart] = c.SOFT_TISSUE_HU
    great_vessels, tissue, lumen = _central_tubes(frame, p)

    spine = _ellipse(Y, X, VERTEBRA_CENTRE, (VERTEBRA_AXES[0] + 6.0, VERTEBRA_AXES[1] + 6.0))[0] < 1.0
    mediastinum = (np.abs(X) < 7.0) | spine[None] | (tissue > 0.05)
    mediastinum[fbox] |= fat_rim
    lungs = _tapered_cavity(frame, p) & ~below & (lung_top(frame, p)[None] > Z) & ~mediastinum & (base + 1.0 < Z)
    hu[inside & ~below & ~lungs & (np.abs(X) > 60.0)] = c.MUSCLE_HU  # chest wall where the cavity narrows
    hu[lungs] = _lung_texture(frame, rng, p, lungs)
    hu += tissue * (c.SOFT_TISSUE_HU - hu)
    hu += lumen * (c.AIR_HU - hu)
    liver &= tissue < 0.5
    heart_mask = np.zeros(frame.shape, dtype=bool)
    heart_mask[hbox] = heart
    return Anatomy(hu=hu, lungs=lungs, liver=liver, airway_lumen=lumen, params=p, heart=heart_mask,
                   great_vessels=great_vessels, spleen=spleen & ~lungs)
