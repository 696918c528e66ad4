"""Metrics against analytic shapes: exact DSC of overlapping cubes, NSD of shifted spheres, HD95 in mm."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_surface_dice,
)

from covseg.labels import Label
from covseg.training.metrics import binary_metrics, case_metrics, undefined_reason

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _cube(shape: tuple[int, int, int], start: tuple[int, int, int], size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[start[0]:start[0] + size, start[1]:start[1] + size, start[2]:start[2] + size] = True
    return mask


def _sphere(shape: tuple[int, int, int], centre_mm: tuple[float, ...], radius_mm: float,
            spacing: tuple[float, float, float]) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre_mm, strict=True)) <= radius_mm**2  # type: ignore[no-any-return]


def test_overlapping_cubes_have_exact_dice_and_confusion_scores() -> None:
    a = _cube((20, 20, 30), (0, 0, 0), 10)
    b = _cube((20, 20, 30), (0, 0, 5), 10)  # overlap 10*10*5 = 500 of 1000 each
    m = binary_metrics(b, a, (1.0, 1.0, 1.0))
    assert m["dsc"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5)
    assert m["sensitivity"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(0.5)
    total = 20 * 20 * 30
    assert m["accuracy"] == pytest.approx((total - 1000) / total)
    assert m["specificity"] == pytest.approx((total - 1500) / (total - 1000))
    c = _cube((20, 20, 30), (0, 0, 0), 5)  # inside a: 125 voxels
    assert binary_metrics(c, a, (1.0, 1.0, 1.0))["dsc"] == pytest.approx(2 * 125 / 1125)


def test_nsd_of_shifted_sphere_depends_on_tolerance() -> None:
    spacing = (1.0, 1.0, 1.0)
    shape = (40, 40, 40)
    a = _sphere(shape, (20.0, 20.0, 20.0), 10.0, spacing)
    b = _sphere(shape, (20.0, 20.0, 22.0), 10.0, spacing)  # shifted by d = 2 mm along x
    assert binary_metrics(b, a, spacing, nsd_tolerance_mm=2.5)["nsd"] == pytest.approx(1.0)
    lower = binary_metrics(b, a, spacing, nsd_tolerance_mm=1.0)["nsd"]
    assert lower is not None and lower < 0.9
    same = binary_metrics(a, a, spacing, nsd_tolerance_mm=0.0)
    assert same["nsd"] == 1.0 and same["hd95_mm"] == 0.0 and same["assd_mm"] == 0.0


def test_hd95_of_shifted_cube_uses_anisotropic_spacing() -> None:
    spacing = (2.5, 0.7, 0.7)
    a = _cube((24, 24, 24), (4, 4, 4), 10)
    along_z = binary_metrics(np.roll(a, 2, axis=0), a, spacing)
    assert along_z["hd95_mm"] == pytest.approx(2 * 2.5)  # bottom face (>5 % of the surface) is 2 slices away
    along_x = binary_metrics(np.roll(a, 3, axis=2), a, spacing)
    assert along_x["hd95_mm"] == pytest.approx(3 * 0.7)
    assert 0 < along_x["assd_mm"] < along_x["hd95_mm"]  # type: ignore[operator]


def test_surface_metrics_equal_monai_functions() -> None:
    rng = np.random.default_rng(3)
    spacing = (2.0, 0.8, 1.1)
    a = _sphere((30, 40, 40), (30.0, 16.0, 22.0), 9.0, spacing) & (rng.random((30, 40, 40)) > 0.05)
    b = _sphere((30, 40, 40), (28.0, 17.0, 20.0), 10.0, spacing)
    ours = binary_metrics(b, a, spacing, nsd_tolerance_mm=1.5)

    def t(mask: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(mask[None, None].astype(np.float32))

    nsd = compute_surface_dice(t(b), t(a), [1.5], include_background=True, spacing=spacing)
    hd95 = compute_hausdorff_distance(t(b), t(a), include_background=True, percentile=95, spacing=spacing)
    assd = compute_average_surface_distance(t(b), t(a), include_background=True, symmetric=True, spacing=spacing)
    assert ours["nsd"] == pytest.approx(float(nsd))
    assert ours["hd95_mm"] == pytest.approx(float(hd95))
    assert ours["assd_mm"] == pytest.approx(float(assd), rel=1e-5)
    assert ours["dsc"] == pytest.approx(float(compute_dice(t(b), t(a), include_background=True)))


def test_empty_mask_conventions() -> None:
    empty = np.zeros((8, 8, 8), dtype=bool)
    full = _cube((8, 8, 8), (2, 2, 2), 3)
    both = binary_metrics(empty, empty, (1.0, 1.0, 1.0))
    assert both["dsc"] == 1.0 and both["nsd"] == 1.0 and both["f1"] == 1.0 and both["accuracy"] == 1.0
    assert both["sensitivity"] is None and both["hd95_mm"] is None and both["assd_mm"] is None
    missed = binary_metrics(empty, full, (1.0, 1.0, 1.0))
    assert missed["dsc"] == 0.0 and missed["nsd"] == 0.0 and missed["sensitivity"] == 0.0
    assert missed["hd95_mm"] is None and missed["precision"] is None
    assert "prediction empty" in undefined_reason(missed) and "hd95_mm" in undefined_reason(missed)
    spurious = binary_metrics(full, empty, (1.0, 1.0, 1.0))
    assert spurious["dsc"] == 0.0 and spurious["sensitivity"] is None and spurious["hd95_mm"] is None
    assert "truth empty" in undefined_reason(spurious)
    assert undefined_reason(binary_metrics(full, full, (1.0, 1.0, 1.0))) == ""


def test_case_metrics_scores_label_groups() -> None:
    truth = np.zeros((10, 10, 10), dtype=np.uint8)
    truth[2:6, 2:6, 2:6] = Label.INFECTION_GROUND_GLASS
    truth[2:6, 2:6, 6:8] = Label.INFECTION_CONSOLIDATION
    prediction = truth.copy()
    prediction[prediction == Label.INFECTION_CONSOLIDATION] = Label.INFECTION_GROUND_GLASS
    result = case_metrics(prediction, truth, (1.0, 1.0, 1.0), labels={
        "infection": (int(Label.INFECTION_GROUND_GLASS), int(Label.INFECTION_CONSOLIDATION)),
        "consolidation": int(Label.INFECTION_CONSOLIDATION),
    })
    assert result["infection"]["dsc"] == 1.0
    assert result["consolidation"]["dsc"] == 0.0
    assert result["infection"]["truth_voxels"] == 4 * 4 * 6
    assert result["infection"]["truth_ml"] == pytest.approx(0.096)
