"""Classical lung labels for real CT that has none: the reference the lung model is trained and judged on.

No manual lung mask exists in the shared data, so the reference is made by a documented classical
method and then inspected slice by slice (contact sheets, `contact_sheet`):

1. body: voxels above -500 HU, largest 3-D component, holes filled slice by slice;
2. air inside the body: below -320 HU within the filled body;
3. airways: the trachea is found as the air component of the top slices nearest the body's
   left-right centre; it is grown down slice by slice while its cross-section stays small
   (under `max_airway_area_mm2`), which follows the trachea and main bronchi but stops where
   the airway merges into lung parenchyma; the grown airway (dilated by one voxel) is removed;
4. lungs: the two largest remaining air components above `min_lung_ml`; when the lungs touch
   (one component), they are split at the mid-line gap by eroding until two components appear
   and growing the seeds back inside the mask;
5. left/right by the LPS x of each lung's centroid (LPS +x is the patient's left);
6. vessels and nodules inside the lung are included: in-plane holes up to `max_hole_mm2` are
   filled and a small 3-D closing smooths the boundary, as radiological lung masks include them.

The method has known limits: dense pathology touching the chest wall (consolidation, effusion)
is excluded, as threshold methods always do; this is why the reference is inspected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from covseg.engine.volume import Volume
from covseg.labels import Label


@dataclass(frozen=True)
class LungReferenceConfig:
    body_threshold_hu: float = -500.0
    air_threshold_hu: float = -320.0
    max_airway_area_mm2: float = 700.0
    min_lung_ml: float = 50.0
    closing_mm: float = 3.0
    max_hole_mm2: float = 500.0


def body_mask(hu: np.ndarray, threshold_hu: float) -> np.ndarray:
    """The patient's body (no table, no outside air), holes filled on every axial slice."""
    above = hu > threshold_hu
    components, count = ndimage.label(above)
    if count == 0:
        return above
    sizes = ndimage.sum_labels(above, components, index=np.arange(1, count + 1))
    body = components == (int(np.argmax(sizes)) + 1)
    for z in range(body.shape[0]):
        body[z] = ndimage.binary_fill_holes(body[z])
    return body


def _trachea_seed(air: np.ndarray, body: np.ndarray, spacing_zyx: tuple[float, float, float],
                  max_area_mm2: float) -> tuple[int, np.ndarray] | None:
    """The top slice that holds a small air component near the body centre, and that component."""
    pixel_mm2 = spacing_zyx[1] * spacing_zyx[2]
    for z in range(air.shape[0] - 1, -1, -1):  # arrays arrive with the head at the last index
        components, count = ndimage.label(air[z])
        if count == 0 or not body[z].any():
            continue
        centre_x = np.mean(np.nonzero(body[z])[1])
        best = None
        for index in range(1, count + 1):
            region = components == index
            area = region.sum() * pixel_mm2
            if not 20.0 <= area <= max_area_mm2:
                continue
            offset = abs(np.mean(np.nonzero(region)[1]) - centre_x) * spacing_zyx[2]
            if offset < 30.0 and (best is None or offset < best[0]):
                best = (offset, region)
        if best is not None:
            return z, best[1]
    return None


def airway_mask(air: np.ndarray, body: np.ndarray, spacing_zyx: tuple[float, float, float],
                max_area_mm2: float) -> np.ndarray:
    """Trachea and main bronchi, grown from the top slice while their cross-sections stay small."""
    airway = np.zeros_like(air)
    seed = _trachea_seed(air, body, spacing_zyx, max_area_mm2)
    if seed is None:
        return airway
    z, current = seed
    pixel_mm2 = spacing_zyx[1] * spacing_zyx[2]
    airway[z] = current
    while z > 0 and current.any():
        z -= 1
        components, _ = ndimage.label(air[z])
        touching = np.unique(components[ndimage.binary_dilation(current, iterations=2) & (components > 0)])
        grown = np.isin(components, touching[touching > 0])
        sizes = ndimage.sum_labels(grown, components, index=touching[touching > 0]) * pixel_mm2
        if grown.sum() == 0 or (sizes > max_area_mm2).any():
            break
        airway[z] = grown
        current = grown
    return ndimage.binary_dilation(airway, iterations=1)


def _cut_column(region: np.ndarray, midline: float, search: int) -> int:
    """The column near the midline where the region is thinnest: where two touching lungs meet."""
    lo, hi = max(0, int(midline) - search), min(region.shape[1] - 1, int(midline) + search)
    counts = region[:, lo:hi + 1].sum(axis=0)
    return lo + int(np.argmin(counts))


def _split_left_right(lung: np.ndarray, body: np.ndarray, spacing_zyx: tuple[float, ...]) -> np.ndarray:
    """Label 1 for the lung at lower array x, 2 for the one at higher x, slice by slice.

    Each axial 2-D component lies on one side of the body's mid-line and takes that side; one
    that crosses it (anterior junction, bronchi at the carina) is cut at its thinnest column
    within 3 cm of the mid-line.
    """
    sides = np.zeros(lung.shape, dtype=np.uint8)
    search = max(1, round(30.0 / spacing_zyx[2]))
    for z in range(lung.shape[0]):
        if not lung[z].any() or not body[z].any():
            continue
        midline = float(np.mean(np.nonzero(body[z])[1]))
        components, count = ndimage.label(lung[z])
        for index in range(1, count + 1):
            region = components == index
            columns = np.nonzero(region.any(axis=0))[0]
            if columns[-1] < midline:
                sides[z][region] = 1
            elif columns[0] > midline:
                sides[z][region] = 2
            else:
                cut = _cut_column(region, midline, search)
                column_index = np.arange(region.shape[1])[None, :]
                sides[z][region & (column_index <= cut)] = 1
                sides[z][region & (column_index > cut)] = 2
    return sides


def _lung_candidates(air: np.ndarray, voxel_ml: float, min_lung_ml: float) -> np.ndarray:
    """Air components big enough to be (part of) a lung: at most the two largest."""
    components, count = ndimage.label(air)
    if count == 0:
        return np.zeros_like(air)
    sizes = ndimage.sum_labels(air, components, index=np.arange(1, count + 1)) * voxel_ml
    keep = [int(i) + 1 for i in np.argsort(sizes)[::-1][:2] if sizes[i] >= min_lung_ml]
    return np.isin(components, keep)


def lung_reference(volume: Volume, config: LungReferenceConfig | None = None) -> Volume:
    """Left and right lung labels (covseg label values) on the volume's grid by the classical method."""
    config = config or LungReferenceConfig()
    spacing_zyx = tuple(float(s) for s in volume.geometry.spacing[::-1])
    head_last = volume.geometry.direction_matrix[2, 2] >= 0  # LPS +z is superior
    hu = volume.array if head_last else volume.array[::-1]
    body = body_mask(hu, config.body_threshold_hu)
    air = (hu < config.air_threshold_hu) & body
    airway = airway_mask(air, body, spacing_zyx, config.max_airway_area_mm2)  # type: ignore[arg-type]
    lung = _lung_candidates(air & ~airway, volume.geometry.voxel_volume_ml, config.min_lung_ml)
    sides = _split_left_right(lung, body, spacing_zyx)
    radius = [max(1, round(config.closing_mm / s)) for s in spacing_zyx]
    structure = np.ones([2 * r + 1 for r in radius], dtype=bool)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    for side in (1, 2):
        part = _largest_component(sides == side)
        if not part.any():
            continue
        closed = _close_and_fill(part, structure, config.max_hole_mm2 / (spacing_zyx[1] * spacing_zyx[2]))
        centroid_xyz = np.array(ndimage.center_of_mass(closed))[::-1]
        if not head_last:
            centroid_xyz[2] = hu.shape[0] - 1 - centroid_xyz[2]
        is_left = volume.geometry.index_to_lps(centroid_xyz)[0] > volume.geometry.index_to_lps(
            (np.array(hu.shape[::-1]) - 1) / 2.0)[0]
        labels[closed & (labels == 0)] = int(Label.LUNG_LEFT if is_left else Label.LUNG_RIGHT)
    return volume.with_array(labels if head_last else labels[::-1])


def _close_and_fill(part: np.ndarray, structure: np.ndarray, max_hole_pixels: float) -> np.ndarray:
    """Closing and small-hole filling computed on the part's bounding box only (a lung is a fraction
    of the scan; the closing over the whole grid dominated the run time)."""
    margin = [s // 2 + 1 for s in structure.shape]
    box = tuple(slice(max(0, int(idx.min()) - m), int(idx.max()) + m + 1)
                for idx, m in zip(np.nonzero(part), margin, strict=True))
    local = part[box]
    closed = ndimage.binary_closing(local, structure=structure) | local
    out = np.zeros_like(part)
    out[box] = fill_small_holes(closed, max_hole_pixels)
    return out


def fill_small_holes(mask: np.ndarray, max_pixels: float) -> np.ndarray:
    """Fill in-plane holes up to `max_pixels` (vessels, small nodules), not the heart or the
    diaphragm dome that a lung can enclose on a slice near the base."""
    filled = mask.copy()
    for z in range(mask.shape[0]):
        holes = ndimage.binary_fill_holes(mask[z]) & ~mask[z]
        components, count = ndimage.label(holes)
        if count == 0:
            continue
        sizes = ndimage.sum_labels(holes, components, index=np.arange(1, count + 1))
        small = np.nonzero(sizes <= max_pixels)[0] + 1
        filled[z] |= np.isin(components, small)
    return filled


def _largest_component(mask: np.ndarray) -> np.ndarray:
    components, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = ndimage.sum_labels(mask, components, index=np.arange(1, count + 1))
    return components == (int(np.argmax(sizes)) + 1)
