"""Pieces of the default-model evaluation checked against analytic truth."""

from __future__ import annotations

import numpy as np

from covseg.training.default_evaluation import card_metrics, grey_to_hu, lung_swapped


def test_swapped_sides_are_detected() -> None:
    truth = np.zeros((4, 10, 20), dtype=np.uint8)
    truth[:, :, :10], truth[:, :, 10:] = 2, 1  # right lung at low x, left lung at high x
    assert not lung_swapped(truth, truth)
    swapped = np.where(truth == 1, 2, np.where(truth == 2, 1, 0)).astype(np.uint8)
    assert lung_swapped(swapped, truth)
    partly = truth.copy()
    partly[:, :, 8:10] = 1  # a sliver on the wrong side is an error, not a swap
    assert not lung_swapped(partly, truth)


def test_grey_to_hu_maps_the_two_peaks() -> None:
    rng = np.random.default_rng(0)
    grey = np.concatenate([rng.normal(40, 3, 5000), rng.normal(200, 3, 3000), rng.uniform(0, 255, 500)])
    hu, (dark, bright) = grey_to_hu(np.clip(grey, 0, 255).astype(np.uint8))
    assert abs(dark - 40) <= 2 and abs(bright - 200) <= 2
    lookup = dict(zip(np.clip(grey, 0, 255).astype(np.uint8).tolist(), hu.tolist(), strict=True))
    assert abs(lookup[40] + 850.0) < 15 and abs(lookup[200] - 40.0) < 15


def test_card_metrics_average_per_kind_and_structure() -> None:
    rows = [{"kind": "a", "structure": "lung_left", "dsc": 0.9, "nsd": 0.8, "hd95_mm": 4.0},
            {"kind": "a", "structure": "lung_left", "dsc": 0.7, "nsd": None, "hd95_mm": 6.0},
            {"kind": "b", "structure": "lung_left", "dsc": None, "nsd": None, "hd95_mm": None}]
    metrics = card_metrics(rows)
    assert metrics[0] == {"data": "a: lung_left", "cases": 2, "dsc": 0.8, "nsd": 0.8, "nsd_tolerance_mm": 3.0,
                          "hd95_mm": 5.0}
    assert metrics[1]["dsc"] is None and metrics[1]["cases"] == 1
