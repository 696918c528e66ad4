"""Volumes, percentages, lesion count and HU statistics of a label map (DESIGN.md section 4).

Definitions (also in the docs):
- Volumes are voxel counts times the input grid's voxel volume, in mL.
- A lung's volume is the whole organ: its lung voxels plus the infection voxels inside it, so
  percent of a lung = infection in that lung / (lung + infection in that lung) = infection / lung volume.
- Each infection voxel belongs to the lung its lesion (26-connected component) touches; a lesion touching
  both lungs is split voxel by voxel, each voxel going to the lung that reaches it first through the
  lesion (a geodesic race); a lesion touching no lung voxel goes to the side of its centroid's LPS x
  relative to the lungs' centroid.
- Lesion count: 26-connected infection components of at least `min_lesion_ml` (default 0.1 mL).
- A value that cannot be measured is None and `reasons` says why, keyed by its report path with the
  `structures.` prefix dropped ("liver.volume_ml", "infection.percent_of_lungs"); never 0 in its place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from covseg.engine.geometry import Geometry
from covseg.engine.postprocess import FULL, RACE_STEPS, bounding_box, centroid, grow_sides, label_mask, lps_x_of_points
from covseg.labels import DEFAULT_CONSOLIDATION_THRESHOLD_HU, INFECTION_LABELS, Label

DEFAULT_MIN_LESION_ML = 0.1
LESION_CONNECTIVITY = 26
SIDES = ("lung_left", "lung_right")
NO_LOBE_MODEL = "no lobe model"


@dataclass(frozen=True)
class Quantities:
    """Everything `quantify` measured; `structures` and `infection` are the report blocks."""

    structures: dict[str, dict[str, float | None]]
    infection: dict[str, Any]
    reasons: dict[str, str] = field(default_factory=dict)


def _mean(values: np.ndarray) -> float | None:
    return round(float(values.mean(dtype=np.float64)), 1) if values.size else None


def _ml(count: int, geometry: Geometry) -> float:
    return round(count * geometry.voxel_volume_ml, 3)


def infection_sides(labels: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) boolean masks of the infection voxels, assigned lesion by lesion (see module doc)."""
    infection = label_mask(labels, [int(v) for v in INFECTION_LABELS])
    left = np.zeros(labels.shape, dtype=bool)
    right = np.zeros(labels.shape, dtype=bool)
    box = bounding_box(infection, (1, 1, 1))
    if box is None:
        return left, right
    components, n = ndimage.label(infection[box], structure=FULL)
    grown = ndimage.grey_dilation(components, footprint=FULL)
    crop = labels[box]
    touch_left = np.bincount(grown[crop == int(Label.LUNG_LEFT)], minlength=n + 1)
    touch_right = np.bincount(grown[crop == int(Label.LUNG_RIGHT)], minlength=n + 1)
    offset = np.asarray([s.start for s in box], dtype=float)
    lungs = label_mask(labels, [int(Label.LUNG_LEFT), int(Label.LUNG_RIGHT)])
    midpoint = float(lps_x_of_points(geometry, centroid(lungs))) if lungs.any() else 0.0
    is_left = touch_left > touch_right
    ties = [i for i in range(1, n + 1) if touch_left[i] == 0 and touch_right[i] == 0]
    if ties:  # lesions touching no lung: by the side of their centroid
        centroids = ndimage.center_of_mass(infection[box], components, ties)
        for i, c in zip(ties, centroids, strict=True):
            is_left[i] = float(lps_x_of_points(geometry, np.asarray(c) + offset)) > midpoint
    side = is_left[components] & (components > 0)
    shared = (touch_left > 0) & (touch_right > 0)
    shared[0] = False
    if shared.any():  # lesions touching both lungs: each voxel to the lung that reaches it first
        free = shared[components]
        reached_left, reached_right = grow_sides(crop == int(Label.LUNG_LEFT), crop == int(Label.LUNG_RIGHT),
                                                 free, steps=RACE_STEPS)
        side[free & reached_left] = True
        side[free & reached_right] = False
    left[box] = side
    right[box] = (components > 0) & ~side
    return left, right


def lesion_count(infection: np.ndarray, geometry: Geometry, min_lesion_ml: float) -> int:
    """Number of 26-connected infection components of at least `min_lesion_ml`."""
    box = bounding_box(infection)
    if box is None:
        return 0
    components, n = ndimage.label(infection[box], structure=FULL)
    if n == 0:
        return 0
    sizes = np.bincount(components.ravel())[1:]
    return int(np.count_nonzero(sizes * geometry.voxel_volume_ml >= min_lesion_ml))


def _structure(name: str, mask: np.ndarray, hu: np.ndarray, geometry: Geometry, ran: bool,
               reasons: dict[str, str], model: str) -> dict[str, float | None]:
    if not ran:
        reasons[f"{name}.volume_ml"] = reasons[f"{name}.mean_hu"] = f"{model} model not run"
        return {"volume_ml": None, "mean_hu": None}
    count = int(np.count_nonzero(mask))
    if count == 0:
        reasons[f"{name}.mean_hu"] = f"no {name} voxels found"
    return {"volume_ml": _ml(count, geometry), "mean_hu": _mean(hu[mask])}


def _percent(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


def _infection_block(labels: np.ndarray, hu: np.ndarray, geometry: Geometry, lung_ran: bool,
                     sides: tuple[np.ndarray, np.ndarray], threshold_hu: float, min_lesion_ml: float,
                     reasons: dict[str, str]) -> dict[str, Any]:
    ggo = labels == int(Label.INFECTION_GROUND_GLASS)
    cons = labels == int(Label.INFECTION_CONSOLIDATION)
    infection = ggo | cons
    total = int(np.count_nonzero(infection))
    by_lung: dict[str, dict[str, float | None]] = {}
    lung_total = 0
    for side, part in zip(SIDES, sides, strict=True):
        inf = int(np.count_nonzero(part))
        whole = int(np.count_nonzero(labels == int(Label[side.upper()]))) + inf
        lung_total += whole
        percent = _percent(inf, whole) if lung_ran else None
        if not lung_ran:
            reasons[f"infection.by_lung.{side}.volume_ml"] = "lung model not run"
        if percent is None:
            reasons[f"infection.by_lung.{side}.percent"] = "lung model not run" if not lung_ran else f"no {side}"
        by_lung[side] = {"volume_ml": _ml(inf, geometry) if lung_ran else None, "percent": percent}
    percent_all = _percent(total, lung_total) if lung_ran else None
    if percent_all is None:
        reasons["infection.percent_of_lungs"] = "lung model not run" if not lung_ran else "no lungs found"
    if total == 0:
        reasons["infection.mean_hu"] = "no infection found"
    reasons["infection.by_lobe"] = reasons["infection.ct_severity_score"] = NO_LOBE_MODEL
    return {
        "volume_ml": _ml(total, geometry), "percent_of_lungs": percent_all, "by_lung": by_lung,
        "ground_glass_ml": _ml(int(np.count_nonzero(ggo)), geometry),
        "consolidation_ml": _ml(int(np.count_nonzero(cons)), geometry),
        "consolidation_threshold_hu": float(threshold_hu), "mean_hu": _mean(hu[infection]),
        "lesion_count": lesion_count(infection, geometry, min_lesion_ml), "min_lesion_ml": float(min_lesion_ml),
        "lesion_connectivity": LESION_CONNECTIVITY, "by_lobe": None, "ct_severity_score": None,
    }


def _null_infection(threshold_hu: float, min_lesion_ml: float, reason: str,
                    reasons: dict[str, str]) -> dict[str, Any]:
    keys = ("volume_ml", "percent_of_lungs", "ground_glass_ml", "consolidation_ml", "mean_hu", "lesion_count")
    for key in keys:
        reasons[f"infection.{key}"] = reason
    for side in SIDES:
        reasons[f"infection.by_lung.{side}.volume_ml"] = reasons[f"infection.by_lung.{side}.percent"] = reason
    reasons["infection.by_lobe"] = reasons["infection.ct_severity_score"] = NO_LOBE_MODEL
    return {**dict.fromkeys(keys), "by_lung": {s: {"volume_ml": None, "percent": None} for s in SIDES},
            "consolidation_threshold_hu": float(threshold_hu), "min_lesion_ml": float(min_lesion_ml),
            "lesion_connectivity": LESION_CONNECTIVITY, "by_lobe": None, "ct_severity_score": None}


def quantify(labels: np.ndarray, hu: np.ndarray, geometry: Geometry, *, ran: set[str] | frozenset[str],
             not_run_reasons: dict[str, str] | None = None,
             consolidation_threshold_hu: float = DEFAULT_CONSOLIDATION_THRESHOLD_HU,
             min_lesion_ml: float = DEFAULT_MIN_LESION_ML) -> Quantities:
    """Measure a label map. `ran` names the structure groups a model predicted ("lung", "infection",
    "liver"); `not_run_reasons` may give a better reason per group than "<group> model not run"."""
    if labels.shape != hu.shape or labels.shape != geometry.shape_zyx:
        raise ValueError(f"labels {labels.shape}, HU {hu.shape} and geometry {geometry.shape_zyx} differ")
    why = {g: f"{g} model not run" for g in ("lung", "infection", "liver")} | dict(not_run_reasons or {})
    reasons: dict[str, str] = {}
    structures: dict[str, dict[str, float | None]] = {}
    sides = infection_sides(labels, geometry)
    for name, group in (("lung_left", "lung"), ("lung_right", "lung"), ("liver", "liver")):
        if name in SIDES and "lung" in ran:
            mask = (labels == int(Label[name.upper()])) | sides[SIDES.index(name)]
        else:
            mask = labels == int(Label[name.upper()])
        structures[name] = _structure(name, mask, hu, geometry, group in ran, reasons, group)
        if group not in ran:
            reasons[f"{name}.volume_ml"] = reasons[f"{name}.mean_hu"] = why[group]
    if "infection" in ran:
        infection = _infection_block(labels, hu, geometry, "lung" in ran, sides, consolidation_threshold_hu,
                                     min_lesion_ml, reasons)
        if "lung" not in ran:
            for side in SIDES:
                reasons[f"infection.by_lung.{side}.percent"] = why["lung"]
                reasons[f"infection.by_lung.{side}.volume_ml"] = why["lung"]
            reasons["infection.percent_of_lungs"] = why["lung"]
    else:
        infection = _null_infection(consolidation_threshold_hu, min_lesion_ml, why["infection"], reasons)
    return Quantities(structures=structures, infection=infection, reasons=reasons)


# Plausibility bounds for automatic QC flags (adult chest CT; a flag asks for a look, it is not an error).
LUNG_TOTAL_ML = (1000.0, 10000.0)
LUNG_RATIO_MIN = 0.25
INFECTION_PERCENT_MAX = 80.0
LUNG_MEAN_HU_MAX = -500.0


def qc_flags(quantities: Quantities) -> list[str]:
    """Plain-language warnings about implausible results (lung volume, side balance, density, burden)."""
    flags: list[str] = []
    left = quantities.structures["lung_left"]
    right = quantities.structures["lung_right"]
    if left["volume_ml"] is None or right["volume_ml"] is None:
        return flags
    total = left["volume_ml"] + right["volume_ml"]
    if total == 0:
        return ["no lungs found: is this a chest CT in HU?"]
    if not LUNG_TOTAL_ML[0] <= total <= LUNG_TOTAL_ML[1]:
        flags.append(f"total lung volume {total:.0f} mL is outside {LUNG_TOTAL_ML[0]:.0f}-{LUNG_TOTAL_ML[1]:.0f} mL "
                     "(partial scan, child, or segmentation failure?)")
    small, large = sorted((left["volume_ml"], right["volume_ml"]))
    if small < LUNG_RATIO_MIN * large:
        flags.append(f"one lung is less than {LUNG_RATIO_MIN:.0%} of the other ({small:.0f} vs {large:.0f} mL)")
    for side, block in (("left", left), ("right", right)):
        if block["mean_hu"] is not None and block["mean_hu"] > LUNG_MEAN_HU_MAX:
            flags.append(f"mean {side} lung density {block['mean_hu']:.0f} HU is above {LUNG_MEAN_HU_MAX:.0f} HU "
                         "(dense disease, or intensities not in HU?)")
    percent = quantities.infection.get("percent_of_lungs")
    if percent is not None and percent > INFECTION_PERCENT_MAX:
        flags.append(f"infection covers {percent:.0f}% of the lungs: check the lung and infection masks")
    return flags
