"""Per-case segmentation metrics: DSC, NSD, HD95, ASSD (MONAI) and confusion-matrix scores (numpy).

Structures are groups of covseg label values (for example infection = ground glass + consolidation),
so one label map is scored for several structures at once. Distances are in millimetres and honour
anisotropic spacing.

Empty masks (the convention used in every table; `undefined_reason` says it in words):

- truth and prediction both empty: DSC = NSD = F1 = 1.0 (a correct "nothing here"), sensitivity and
  precision None (no positives to find or to check), HD95 and ASSD None (no surface to measure);
- exactly one empty: DSC = NSD = F1 = 0.0, HD95 and ASSD None (the distance to an empty surface is
  undefined, not infinite), sensitivity 0.0 when the prediction is empty and None when the truth is
  empty; precision None when the prediction is empty.

Accuracy and specificity are always defined (they count the whole volume). Summaries skip None values
and say how many cases entered each mean.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from covseg.labels import BY_NAME, INFECTION_LABELS, LUNG_LABELS, Label

StructureSpec = int | Sequence[int]

METRIC_NAMES: tuple[str, ...] = (
    "dsc", "nsd", "sensitivity", "specificity", "precision", "f1", "accuracy", "hd95_mm", "assd_mm",
    "truth_voxels", "prediction_voxels", "truth_ml", "prediction_ml",
)
SURFACE_METRICS: tuple[str, ...] = ("hd95_mm", "assd_mm")

# Default structures: every covseg label on its own, plus the groups the papers score.
DEFAULT_STRUCTURES: dict[str, StructureSpec] = {
    "infection": tuple(int(v) for v in INFECTION_LABELS),
    "lungs": tuple(int(v) for v in LUNG_LABELS),
    **{name: info.value for name, info in BY_NAME.items()},
}
INFECTION_ONLY: dict[str, StructureSpec] = {"infection": tuple(int(v) for v in INFECTION_LABELS)}
LIVER_ONLY: dict[str, StructureSpec] = {"liver": int(Label.LIVER)}


def structure_values(spec: StructureSpec) -> tuple[int, ...]:
    """The label values of one structure spec (an int or a sequence of ints)."""
    if isinstance(spec, int | np.integer):
        return (int(spec),)
    values = tuple(int(v) for v in spec)
    if not values:
        raise ValueError("a structure needs at least one label value")
    return values


def confusion(prediction: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) of two boolean masks of the same shape."""
    tp = int(np.count_nonzero(prediction & truth))
    pred_n = int(np.count_nonzero(prediction))
    truth_n = int(np.count_nonzero(truth))
    fp = pred_n - tp
    fn = truth_n - tp
    tn = int(prediction.size) - tp - fp - fn
    return tp, fp, fn, tn


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else float(numerator) / float(denominator)


def overlap_scores(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    """DSC, sensitivity, specificity, precision, F1, accuracy from the confusion matrix.

    DSC comes from the same four counts rather than MONAI's `compute_dice`, which would need one-hot
    float tensors of the whole CT (about 1 GB for 512x512x500); tests check the two agree.
    """
    tp, fp, fn, tn = confusion(prediction, truth)
    both_empty = tp + fp + fn == 0
    dsc = 1.0 if both_empty else 2.0 * tp / (2.0 * tp + fp + fn)
    sensitivity = _ratio(tp, tp + fn)
    precision = _ratio(tp, tp + fp)
    if both_empty:
        f1: float | None = 1.0
    elif not precision or not sensitivity:
        f1 = 0.0
    else:
        f1 = 2.0 * precision * sensitivity / (precision + sensitivity)
    return {
        "dsc": dsc,
        "sensitivity": sensitivity,
        "specificity": _ratio(tn, tn + fp),
        "precision": precision,
        "f1": f1,
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
    }


def surface_scores(
    prediction: np.ndarray, truth: np.ndarray, spacing_zyx: Sequence[float], *, nsd_tolerance_mm: float
) -> dict[str, float | None]:
    """NSD at a tolerance, HD95 and ASSD in mm from one MONAI surface-distance pass.

    MONAI's `compute_surface_dice`, `compute_hausdorff_distance` and `compute_average_surface_distance`
    each recompute the edge distance transforms; on a 512x512 CT that triples the cost, so the three
    are derived here from one `get_edge_surface_distance` call with the same formulas (tests check
    equality with the three MONAI functions).
    """
    pred_any, truth_any = bool(prediction.any()), bool(truth.any())
    if not pred_any and not truth_any:
        return {"nsd": 1.0, "hd95_mm": None, "assd_mm": None}
    if not pred_any or not truth_any:
        return {"nsd": 0.0, "hd95_mm": None, "assd_mm": None}
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI 1.5+ deprecation raised inside MONAI itself
        _, distances, _ = get_edge_surface_distance(
            torch.from_numpy(np.ascontiguousarray(prediction)),
            torch.from_numpy(np.ascontiguousarray(truth)),
            distance_metric="euclidean",
            spacing=[float(s) for s in spacing_zyx],
            symmetric=True,
            warn_empty=False,
        )
    pred_to_truth = distances[0].double().cpu().numpy()
    truth_to_pred = distances[1].double().cpu().numpy()  # type: ignore[misc]
    within = np.count_nonzero(pred_to_truth <= nsd_tolerance_mm) + np.count_nonzero(truth_to_pred <= nsd_tolerance_mm)
    total = pred_to_truth.size + truth_to_pred.size
    return {
        "nsd": float(within) / float(total),
        "hd95_mm": float(max(np.percentile(pred_to_truth, 95), np.percentile(truth_to_pred, 95))),
        "assd_mm": float((pred_to_truth.sum() + truth_to_pred.sum()) / total),
    }


def binary_metrics(
    prediction: np.ndarray, truth: np.ndarray, spacing_zyx: Sequence[float], *, nsd_tolerance_mm: float = 3.0
) -> dict[str, float | None]:
    """All metrics of one structure given as two boolean masks on the same (z, y, x) grid."""
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from truth shape {truth.shape}")
    if len(spacing_zyx) != prediction.ndim:
        raise ValueError(f"spacing {tuple(spacing_zyx)} does not match a {prediction.ndim}-D mask")
    pred = np.asarray(prediction, dtype=bool)
    true = np.asarray(truth, dtype=bool)
    voxel_ml = float(np.prod([float(s) for s in spacing_zyx])) / 1000.0
    result = overlap_scores(pred, true)
    result.update(surface_scores(pred, true, spacing_zyx, nsd_tolerance_mm=nsd_tolerance_mm))
    truth_n, pred_n = int(np.count_nonzero(true)), int(np.count_nonzero(pred))
    result.update({
        "truth_voxels": float(truth_n), "prediction_voxels": float(pred_n),
        "truth_ml": truth_n * voxel_ml, "prediction_ml": pred_n * voxel_ml,
    })
    return {name: result[name] for name in METRIC_NAMES}


def case_metrics(
    prediction: np.ndarray,
    truth: np.ndarray,
    spacing_zyx: Sequence[float],
    *,
    labels: Mapping[str, StructureSpec] | None = None,
    nsd_tolerance_mm: float = 3.0,
) -> dict[str, dict[str, float | None]]:
    """Metrics per structure of two label maps: {structure: {metric: value or None}}.

    `labels` maps a structure name to a covseg label value or a tuple of values (default:
    `DEFAULT_STRUCTURES`). None marks an undefined value; see the module docstring.
    """
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from truth shape {truth.shape}")
    structures = DEFAULT_STRUCTURES if labels is None else labels
    return {
        name: binary_metrics(
            np.isin(prediction, structure_values(spec)),
            np.isin(truth, structure_values(spec)),
            spacing_zyx,
            nsd_tolerance_mm=nsd_tolerance_mm,
        )
        for name, spec in structures.items()
    }


def undefined_reason(values: Mapping[str, float | None]) -> str:
    """Why some metrics of one structure are None ('' when all are defined)."""
    truth_empty = not values.get("truth_voxels")
    pred_empty = not values.get("prediction_voxels")
    missing = [name for name in METRIC_NAMES if values.get(name) is None]
    if not missing:
        return ""
    if truth_empty and pred_empty:
        why = "truth and prediction empty"
    elif truth_empty:
        why = "truth empty"
    elif pred_empty:
        why = "prediction empty"
    else:
        why = "undefined"
    return f"{', '.join(missing)}: {why}"
