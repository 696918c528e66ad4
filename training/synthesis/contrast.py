"""The portal venous phase of a phantom: iodinated blood and enhancing organs, and the kidneys.

A liver model trained on unenhanced phantoms only has never seen blood brighter than the liver: on
contrast-enhanced CT (3D-IRCADb 1.17) the liver model 1.0.0 took about 190 mL of the enhanced heart
and parts of a kidney. This phase gives the phantoms those bright neighbours, with their true labels
(background), so that intensity alone cannot say "liver".

Every enhancement is "unenhanced value + scale x (enhanced - unenhanced)" with one scale per phantom
(a bolus and a patient differ), applied to the anatomy's own voxels so that textures, partial volume
at edges and the labels are the same as in the unenhanced phantom of the seed, the kidneys apart.
"""

from __future__ import annotations

import numpy as np

from covseg.training.synthesis import config as c
from covseg.training.synthesis.anatomy import Anatomy
from covseg.training.synthesis.frame import Frame
from covseg.training.synthesis.raster import draw_tubes

# Kidneys, reference mm (x, y, z centre; semi-axes): posterior, beside the spine, upper poles at the
# level of the liver's lower posterior edge (the right one a little lower, under the liver).
KIDNEYS = (((-68.0, 48.0, 28.0), (26.0, 20.0, 48.0)), ((68.0, 48.0, 38.0), (26.0, 20.0, 48.0)))
BLOOD_POOL_SCALE = 0.72  # chambers: the heart ellipsoid shrunk; the shell around them is myocardium
# Liver vessel trees, reference mm: (root, branches, radius at the root, at the tip): the portal vein
# from the porta hepatis, the hepatic veins towards the inferior vena cava under the dome.
LIVER_TREES = (((-30.0, 15.0, 62.0), 12, 6.5, 1.5), ((-18.0, 30.0, 96.0), 9, 5.5, 1.5))


def kidneys(frame: Frame) -> np.ndarray:
    """Both kidneys (bool) on the frame, drawn in the portal phase only."""
    Z, Y, X = frame.grids()
    out = np.zeros(frame.shape, dtype=bool)
    for (x0, y0, z0), (ax, ay, az) in KIDNEYS:
        out |= ((X - x0) / ax) ** 2 + ((Y - y0) / ay) ** 2 + ((Z - z0) / az) ** 2 < 1.0
    return out


def blood_pool(frame: Frame, anatomy: Anatomy) -> np.ndarray:
    """The heart's chambers: the voxels of the heart nearest its centre (an inner ellipsoid)."""
    p = anatomy.params
    Z, Y, X = frame.grids()
    axes = np.asarray(p.heart_axes) * BLOOD_POOL_SCALE
    cos, sin = np.cos(p.heart_angle), np.sin(p.heart_angle)
    u = (X - p.heart[0]) * cos - (Y - p.heart[1]) * sin
    v = (X - p.heart[0]) * sin + (Y - p.heart[1]) * cos
    inner = (u / axes[0]) ** 2 + (v / axes[1]) ** 2 + ((Z - p.heart[2]) / axes[2]) ** 2 < 1.0
    return inner & anatomy.heart


def liver_vessels(frame: Frame, liver: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Occupancy of portal and hepatic vein branches inside the liver: enhanced, they cut the parenchyma
    into strips (the vessel-dense hilum and left lobe); radiological liver masks include them."""
    out = np.zeros(frame.shape, dtype=np.float32)
    k, j, i = np.nonzero(liver)
    if k.size == 0:
        return out
    for root, branches, r_root, r_tip in LIVER_TREES:
        picks = rng.choice(k.size, size=min(branches, k.size), replace=False)
        ends = np.stack([frame.x[i[picks]], frame.y[j[picks]], frame.z[k[picks]]], axis=1)
        starts = np.broadcast_to(np.asarray(root), ends.shape)
        draw_tubes(frame, out, starts, ends, np.full(len(ends), r_root), np.full(len(ends), r_tip))
    return out * liver


def enhance(frame: Frame, anatomy: Anatomy, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Raise `anatomy.hu` to the portal venous phase in place; return the kidney mask (carved out of the
    liver label, which `anatomy.liver` loses in place). Run before bones and lung trees are added."""
    hu = anatomy.hu
    blood = c.SOFT_TISSUE_HU + scale * (c.ENHANCED_BLOOD_HU - c.SOFT_TISSUE_HU)
    chambers = blood_pool(frame, anatomy)
    hu[anatomy.heart & ~chambers] += scale * (c.ENHANCED_MYOCARDIUM_HU - c.SOFT_TISSUE_HU)
    hu[chambers] = blood + (hu[chambers] - c.SOFT_TISSUE_HU)
    vessels = (anatomy.great_vessels > 0) & ~chambers
    hu[vessels] += anatomy.great_vessels[vessels] * (blood - c.SOFT_TISSUE_HU)
    hu[anatomy.liver] += scale * (c.ENHANCED_LIVER_HU - c.LIVER_HU)
    branches = liver_vessels(frame, anatomy.liver, rng)
    inside = branches > 0
    hu[inside] += branches[inside] * (blood - hu[inside])
    hu[anatomy.spleen] += scale * (c.ENHANCED_SPLEEN_HU - c.SPLEEN_HU)
    renal = kidneys(frame) & ~anatomy.lungs
    hu[renal] = c.UNENHANCED_KIDNEY_HU + scale * (c.ENHANCED_KIDNEY_HU - c.UNENHANCED_KIDNEY_HU)
    anatomy.liver &= ~renal
    return renal


def blood_hu(config_contrast: str, scale: float) -> float:
    """HU of blood in the lung vessels for a phase."""
    if config_contrast == "portal":
        return c.SOFT_TISSUE_HU + scale * (c.ENHANCED_BLOOD_HU - c.SOFT_TISSUE_HU)
    return c.SOFT_TISSUE_HU
