"""Classical liver labels for real CT that has none: the real-CT half of the liver model's training set.

The one manual liver mask in the shared data (3D-IRCADb 1.17) must stay out of training for the
honest synthetic-to-real figure (issue 11), so the other real CTs get a liver reference made by a
documented classical method, inspected slice by slice on soft-tissue contact sheets:

1. lungs by the classical lung reference (lung_reference.py), body by the -500 HU threshold;
2. the scan's liver intensity: the tissue 10-25 mm below the right lung base is mostly liver dome
   (under the right hemidiaphragm), so the mode of its HU histogram is the liver's attenuation and
   the spread around the mode its noise; this adapts to contrast phase (about 105 HU portal venous in
   3D-IRCADb, 47 HU without contrast in lungdx_a0001);
3. candidates: Gaussian-smoothed HU within `tolerance_sd` spreads of that mode, inside the body and
   outside the lungs, small in-plane holes (vessels, lesions) filled;
4. the liver: candidates eroded by `opening_mm` (cuts the thin bridges to stomach wall, spleen,
   heart and muscle that share the liver's HU), the eroded component that holds most dome seeds,
   grown back within the candidates; with contrast, the vessel-dense parts (hilum, left lobe) that
   the wide erosion loses are taken back through a narrow one, near the core and away from other
   thick organs; edge voxels that the smoothing pushed out of the band are taken back;
5. vessels and lesions inside the liver are included: in-plane holes are filled, as radiological
   liver masks include them.

Known limits: without contrast, the liver, spleen, heart and muscles differ by only ~10 HU and the
erosion is what separates them (on lungdx_a0001 it was not enough: the heart was taken, and that CT
is not used); a liver whose dome is not under a visible right lung has no seeds; with contrast, the
pancreatic head, duodenum and inferior vena cava that touch the hilum can be taken
(docs/inspection/liver_ircad_1_1.png, the lowest slices).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from covseg.engine.geometry import Geometry
from covseg.engine.postprocess import near_mm
from covseg.engine.volume import Volume
from covseg.labels import Label
from covseg.training.lung_reference import body_mask, fill_small_holes, lung_reference


@dataclass(frozen=True)
class LiverReferenceConfig:
    seed_depth_mm: tuple[float, float] = (10.0, 25.0)
    tissue_range_hu: tuple[float, float] = (-50.0, 300.0)
    tolerance_sd: float = 2.5
    min_tolerance_hu: float = 20.0
    opening_mm: float = 8.0
    narrow_opening_mm: float = 3.0
    narrow_reach_mm: float = 20.0
    enhanced_liver_hu: float = 80.0  # unenhanced liver is 50-70 HU, portal venous phase 100-130 HU
    closing_mm: float = 2.0
    smoothing_mm: float = 1.5
    max_hole_mm2: float = 400.0
    min_seeds: int = 200


@dataclass(frozen=True)
class LiverIntensity:
    mode_hu: float
    spread_hu: float
    seeds: int


def dome_seeds(right_lung: np.ndarray, spacing_zyx: tuple[float, float, float],
               depth_mm: tuple[float, float]) -> np.ndarray:
    """Voxels `depth_mm` below the lowest right-lung voxel of each (y, x) column (head at the last index)."""
    seeds = np.zeros_like(right_lung)
    columns = right_lung.any(axis=0)
    lowest = np.argmax(right_lung, axis=0)
    ys, xs = np.nonzero(columns)
    first, last = (round(d / spacing_zyx[0]) for d in depth_mm)
    for dz in range(max(1, first), max(1, last) + 1):
        z = lowest[ys, xs] - dz
        ok = z >= 0
        seeds[z[ok], ys[ok], xs[ok]] = True
    return seeds


def liver_intensity(hu: np.ndarray, seeds: np.ndarray, tissue_range_hu: tuple[float, float]) -> LiverIntensity:
    """Mode of the seeds' HU histogram (5 HU bins, lightly smoothed) and a robust spread around it."""
    values = hu[seeds]
    values = values[(values > tissue_range_hu[0]) & (values < tissue_range_hu[1])]
    if values.size == 0:
        return LiverIntensity(float("nan"), float("nan"), 0)
    low, high = tissue_range_hu
    counts, edges = np.histogram(values, bins=int((high - low) / 5), range=tissue_range_hu)
    smooth = ndimage.uniform_filter1d(counts.astype(float), 3)
    mode = float(edges[int(np.argmax(smooth))] + 2.5)
    near = values[np.abs(values - mode) < 40.0]
    spread = float(1.4826 * np.median(np.abs(near - mode))) if near.size else float("nan")
    return LiverIntensity(mode, spread, int(values.size))


def liver_mask(hu: np.ndarray, lungs: np.ndarray, geometry: Geometry,
               config: LiverReferenceConfig) -> tuple[np.ndarray, LiverIntensity]:
    """The liver (bool, head at the last index) and the intensity it was grown from."""
    spacing_zyx = (float(geometry.spacing[2]), float(geometry.spacing[1]), float(geometry.spacing[0]))
    seeds = dome_seeds(lungs == int(Label.LUNG_RIGHT), spacing_zyx, config.seed_depth_mm)
    smooth = ndimage.gaussian_filter(hu, sigma=[config.smoothing_mm / s for s in spacing_zyx])
    intensity = liver_intensity(smooth, seeds, config.tissue_range_hu)
    if intensity.seeds < config.min_seeds:
        return np.zeros(hu.shape, dtype=bool), intensity
    tolerance = max(config.tolerance_sd * intensity.spread_hu, config.min_tolerance_hu)
    candidates = body_mask(hu, -500.0) & (lungs == 0) & (np.abs(smooth - intensity.mode_hu) <= tolerance)
    candidates = fill_small_holes(candidates, config.max_hole_mm2 / (spacing_zyx[1] * spacing_zyx[2]))
    eroded = candidates & ~near_mm(~candidates, candidates, geometry, config.opening_mm)
    components, count = ndimage.label(eroded)
    if count == 0:
        return np.zeros(hu.shape, dtype=bool), intensity
    hits = np.bincount(components[seeds & eroded], minlength=count + 1)[1:]
    core = components == int(np.argmax(hits)) + 1
    # Vessel-dense parts of the liver (near the hilum, the left lobe) are thin strips of parenchyma between
    # enhanced vessels and do not survive the wide erosion: take them back through a narrow one, keeping
    # its component that holds the wide core, up to `narrow_reach_mm` from it, and never within the wide
    # opening of another thick organ of the same HU (the spleen, which the left lobe often touches).
    # Only with contrast: unenhanced vessels share the liver's band and leave no gaps to bridge, while the
    # spleen and muscles, a few HU apart, would be reached.
    if intensity.mode_hu >= config.enhanced_liver_hu:
        narrow = candidates & ~near_mm(~candidates, candidates, geometry, config.narrow_opening_mm)
        narrow &= ~near_mm(eroded & ~core, narrow, geometry, config.opening_mm)
        parts, _ = ndimage.label(narrow)
        kept = np.unique(parts[core & narrow])
        core = near_mm(core, np.isin(parts, kept[kept > 0]), geometry, config.narrow_reach_mm) | core
    liver = near_mm(core, candidates, geometry, config.narrow_opening_mm + config.closing_mm)
    # The smoothing pulls edge voxels towards their neighbours' HU and out of the band: take back, within
    # two smoothing widths (at least one voxel) of the liver, the voxels whose own HU is in the band.
    band = (np.abs(hu - intensity.mode_hu) <= tolerance) & (lungs == 0)
    liver |= near_mm(liver, band, geometry, max(2.0 * config.smoothing_mm, *spacing_zyx))
    for z in range(liver.shape[0]):
        liver[z] = ndimage.binary_fill_holes(liver[z])
    return liver & (lungs == 0), intensity


def liver_reference(volume: Volume, config: LiverReferenceConfig | None = None,
                    lungs: Volume | None = None) -> tuple[Volume, LiverIntensity]:
    """Liver labels (covseg value) on the volume's grid by the classical method, and the intensity used."""
    config = config or LiverReferenceConfig()
    lungs = lungs if lungs is not None else lung_reference(volume)
    head_last = volume.geometry.direction_matrix[2, 2] >= 0
    hu = volume.array if head_last else volume.array[::-1]
    lung_labels = lungs.array if head_last else lungs.array[::-1]
    liver, intensity = liver_mask(hu.astype(np.float32), lung_labels, volume.geometry, config)
    labels = np.where(liver, np.uint8(Label.LIVER), np.uint8(0)).astype(np.uint8)
    return volume.with_array(labels if head_last else labels[::-1]), intensity
