"""Pieces of the default-model evaluation checked against analytic truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from covseg.engine.geometry import Geometry
from covseg.training.default_evaluation import (
    card_metrics,
    components_touching,
    false_positive_metric,
    grey_to_hu,
    ignoring,
    lung_swapped,
    record_in_checkpoint,
    tumour_region,
)


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


def test_tumour_region_grows_the_boxes_by_the_margin_in_millimetres() -> None:
    boxes = np.zeros((9, 40, 40), dtype=bool)
    boxes[4, 18:22, 18:22] = True
    geometry = Geometry(size=boxes.shape[::-1], spacing=(1.0, 1.0, 5.0), origin=(0.0, 0.0, 0.0))
    region = tumour_region(boxes, geometry, margin_mm=10.0)
    assert region[4, 20, 8] and not region[4, 20, 7]  # 10 mm left of the box edge at x=18, not 11
    assert region[6, 20, 20] and not region[7, 20, 20]  # two 5 mm slices up, not three
    assert not tumour_region(np.zeros_like(boxes), geometry).any()


def test_components_touching_keeps_whole_components_that_reach_the_region() -> None:
    mask = np.zeros((3, 20, 20), dtype=bool)
    mask[1, 2:10, 2:4] = True  # reaches the region at one end
    mask[1, 15:18, 15:18] = True  # apart from it
    region = np.zeros_like(mask)
    region[1, 9, 3] = True
    touching = components_touching(mask, region)
    assert touching.sum() == 16 and not touching[1, 16, 16]


def test_ignoring_clears_the_region_only() -> None:
    labels = np.full((2, 4, 4), 3, dtype=np.uint8)
    region = np.zeros(labels.shape, dtype=bool)
    region[0] = True
    out = ignoring(labels, region)
    assert (out[0] == 0).all() and (out[1] == 3).all() and (labels == 3).all()


def test_each_evaluation_replaces_only_its_own_card_entries(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"epoch": 3, "metrics": [{"data": "stale"}]}))
    record_in_checkpoint(tmp_path, [{"data": "synthetic v1"}], evaluation="infection")
    record_in_checkpoint(tmp_path, [{"data": "slices"}], evaluation="slices")
    record_in_checkpoint(tmp_path, [{"data": "synthetic v2"}, {"data": "false positives"}], evaluation="infection")
    state = json.loads((tmp_path / "state.json").read_text())
    assert [m["data"] for m in state["metrics"]] == ["synthetic v2", "false positives", "slices"]
    assert state["epoch"] == 3


def test_false_positive_entry_names_every_series() -> None:
    entries = [{"case": f"s{i}", "infection_ml": 10.0 * i, "infection_ml_touching_tumour": 6.0 * i,
                "infection_ml_elsewhere": 4.0 * i} for i in (1, 2)]
    entry = false_positive_metric(entries)
    assert "10.0 / 20.0 mL (s1 / s2)" in entry["data"] and "6.0 / 12.0 mL in components touching" in entry["data"]
    assert "4.0 / 8.0 mL elsewhere" in entry["data"] and entry["cases"] == 2 and entry["dsc"] is None
