"""Quantification against analytic volumes and counts; nulls with reasons for missing models."""

from __future__ import annotations

import math

import numpy as np
import pytest

from covseg.engine.geometry import Geometry
from covseg.engine.quantify import lesion_count, quantify
from covseg.labels import Label

SPACING = (1.0, 1.5, 2.0)  # x, y, z mm: anisotropic on purpose
SHAPE = (60, 90, 110)  # z, y, x
GEOMETRY = Geometry(size=(SHAPE[2], SHAPE[1], SHAPE[0]), spacing=SPACING, origin=(0.0, 0.0, 0.0))
ALL = frozenset({"lung", "infection", "liver"})


def _ellipsoid_mm(centre_mm: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    """Voxels whose centre lies in a sphere given in mm (x, y, z)."""
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    return ((x * SPACING[0] - centre_mm[0]) ** 2 + (y * SPACING[1] - centre_mm[1]) ** 2
            + (z * SPACING[2] - centre_mm[2]) ** 2) <= radius_mm**2


def _sphere_ml(radius_mm: float) -> float:
    return 4.0 / 3.0 * math.pi * radius_mm**3 / 1000.0


LEFT_C, RIGHT_C = (80.0, 65.0, 60.0), (30.0, 65.0, 60.0)  # larger LPS x = patient left


def _phantom() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    hu = np.full(SHAPE, -1000.0, dtype=np.float32)
    left, right = _ellipsoid_mm(LEFT_C, 22.0), _ellipsoid_mm(RIGHT_C, 20.0)
    ggo = _ellipsoid_mm((85.0, 65.0, 60.0), 8.0)
    cons = _ellipsoid_mm((28.0, 65.0, 60.0), 6.0)
    liver = _ellipsoid_mm((55.0, 65.0, 100.0), 12.0)
    labels[left], labels[right] = Label.LUNG_LEFT, Label.LUNG_RIGHT
    labels[ggo], labels[cons], labels[liver] = Label.INFECTION_GROUND_GLASS, Label.INFECTION_CONSOLIDATION, Label.LIVER
    hu[left | right], hu[ggo], hu[cons], hu[liver] = -850.0, -600.0, 20.0, 60.0
    return labels, hu, {"left": left, "right": right, "ggo": ggo, "cons": cons, "liver": liver}


def test_volumes_percent_and_hu_against_analytic_truth() -> None:
    labels, hu, parts = _phantom()
    q = quantify(labels, hu, GEOMETRY, ran=ALL)
    tol = 0.03  # voxelisation error of these spheres on a 1 x 1.5 x 2 mm grid
    assert q.structures["lung_left"]["volume_ml"] == pytest.approx(_sphere_ml(22.0), rel=tol)
    assert q.structures["lung_right"]["volume_ml"] == pytest.approx(_sphere_ml(20.0), rel=tol)
    assert q.structures["liver"]["volume_ml"] == pytest.approx(_sphere_ml(12.0), rel=tol)
    inf = q.infection
    tol = 0.08  # small spheres: relatively larger voxelisation error
    assert inf["ground_glass_ml"] == pytest.approx(_sphere_ml(8.0), rel=tol)
    assert inf["consolidation_ml"] == pytest.approx(_sphere_ml(6.0), rel=tol)
    assert inf["volume_ml"] == pytest.approx(_sphere_ml(8.0) + _sphere_ml(6.0), rel=tol)
    assert inf["by_lung"]["lung_left"]["volume_ml"] == pytest.approx(_sphere_ml(8.0), rel=tol)
    assert inf["by_lung"]["lung_right"]["volume_ml"] == pytest.approx(_sphere_ml(6.0), rel=tol)
    # Exact identities on voxel counts: percent = infection in that lung / (lung + its infection).
    n_left = np.count_nonzero(parts["left"])
    assert inf["by_lung"]["lung_left"]["percent"] == pytest.approx(100 * np.count_nonzero(parts["ggo"]) / n_left,
                                                                  abs=0.01)
    n_all = np.count_nonzero(parts["left"] | parts["right"])
    n_inf = np.count_nonzero(parts["ggo"] | parts["cons"])
    assert inf["percent_of_lungs"] == pytest.approx(100 * n_inf / n_all, abs=0.01)
    assert inf["lesion_count"] == 2
    assert q.structures["liver"]["mean_hu"] == pytest.approx(60.0)
    assert q.structures["lung_left"]["mean_hu"] == pytest.approx(
        (-850.0 * (n_left - np.count_nonzero(parts["ggo"])) - 600.0 * np.count_nonzero(parts["ggo"])) / n_left,
        abs=0.1)
    assert inf["mean_hu"] == pytest.approx(
        (-600.0 * np.count_nonzero(parts["ggo"]) + 20.0 * np.count_nonzero(parts["cons"])) / n_inf, abs=0.1)
    assert inf["by_lobe"] is None and q.reasons["infection.by_lobe"] == "no lobe model"
    assert inf["ct_severity_score"] is None and "infection.ct_severity_score" in q.reasons


@pytest.mark.parametrize("k", [1, 3, 5])
def test_lesion_count_of_separated_blobs(k: int) -> None:
    infection = np.zeros(SHAPE, dtype=bool)
    for i in range(k):
        infection |= _ellipsoid_mm((12.0 + 20.0 * i, 65.0, 60.0), 4.0)
    speck = np.zeros(SHAPE, dtype=bool)
    speck[5, 5, 5] = True  # 3 uL: below the 0.1 mL minimum
    assert lesion_count(infection | speck, GEOMETRY, 0.1) == k
    assert lesion_count(infection | speck, GEOMETRY, 0.0) == k + 1


def test_lesions_touching_diagonally_are_one_lesion() -> None:
    infection = np.zeros(SHAPE, dtype=bool)
    infection[10:20, 10:20, 10:20] = True
    infection[20:30, 20:30, 20:30] = True  # shares only a corner: 26-connected
    assert lesion_count(infection, GEOMETRY, 0.0) == 1


def test_missing_models_give_null_with_reason_never_zero() -> None:
    labels, hu, _ = _phantom()
    labels[labels == Label.LIVER] = 0
    q = quantify(labels, hu, GEOMETRY, ran=frozenset({"lung"}))
    assert q.structures["liver"] == {"volume_ml": None, "mean_hu": None}
    assert q.reasons["liver.volume_ml"] == "liver model not run"
    assert q.infection["volume_ml"] is None and q.infection["lesion_count"] is None
    assert q.reasons["infection.volume_ml"] == "infection model not run"
    assert q.structures["lung_left"]["volume_ml"] is not None


def test_empty_structures_measure_zero_but_mean_is_null() -> None:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    hu = np.zeros(SHAPE, dtype=np.float32)
    q = quantify(labels, hu, GEOMETRY, ran=ALL)
    assert q.structures["liver"]["volume_ml"] == 0.0 and q.structures["liver"]["mean_hu"] is None
    assert "liver.mean_hu" in q.reasons
    assert q.infection["volume_ml"] == 0.0 and q.infection["lesion_count"] == 0
    assert q.infection["percent_of_lungs"] is None and q.reasons["infection.percent_of_lungs"] == "no lungs found"


def test_lesion_bridging_both_lungs_is_split_voxel_by_voxel() -> None:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    hu = np.full(SHAPE, -850.0, dtype=np.float32)
    labels[_ellipsoid_mm(LEFT_C, 20.0)] = Label.LUNG_LEFT
    labels[_ellipsoid_mm(RIGHT_C, 20.0)] = Label.LUNG_RIGHT
    bar = np.zeros(SHAPE, dtype=bool)
    bar[28:32, 40:46, 40:71] = True  # x 40..70 mm: from inside the right lung across to the left one
    labels[bar] = Label.INFECTION_CONSOLIDATION
    q = quantify(labels, hu, GEOMETRY, ran=frozenset({"lung", "infection"}))
    # Each bar voxel goes to the lung nearer along the bar: the split lies at the midpoint x = 55 mm.
    x = np.nonzero(bar)[2] * SPACING[0]
    voxel_ml = GEOMETRY.voxel_volume_ml
    by_lung = q.infection["by_lung"]
    left_ml, right_ml = by_lung["lung_left"]["volume_ml"], by_lung["lung_right"]["volume_ml"]
    assert left_ml + right_ml == pytest.approx(bar.sum() * voxel_ml, abs=1e-3)
    assert left_ml == pytest.approx(np.count_nonzero(x > 55.0) * voxel_ml, abs=24 * voxel_ml)  # one bar slab
    assert q.infection["lesion_count"] == 1


def test_qc_flags() -> None:
    from covseg.engine.quantify import qc_flags

    labels, hu, _ = _phantom()
    flags = qc_flags(quantify(labels, hu, GEOMETRY, ran=ALL))
    assert len(flags) == 1 and "total lung volume" in flags[0]  # two small spheres: not an adult chest
    labels[labels == Label.LUNG_RIGHT] = 0
    hu[labels == Label.LUNG_LEFT] = 20.0
    flags = qc_flags(quantify(labels, hu, GEOMETRY, ran=ALL))
    assert any("less than 25%" in f for f in flags) and any("density" in f for f in flags)
    empty = quantify(np.zeros_like(labels), hu, GEOMETRY, ran=ALL)
    assert qc_flags(empty) == ["no lungs found: is this a chest CT in HU?"]
    assert qc_flags(quantify(labels, hu, GEOMETRY, ran=frozenset({"liver"}))) == []
