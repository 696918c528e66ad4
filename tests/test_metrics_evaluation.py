"""Evaluation tables: label maps written as NIfTI by SimpleITK, scored back through the engine's reader."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from covseg.engine.geometry import Geometry, array_to_sitk
from covseg.errors import InputError
from covseg.labels import Label
from covseg.training.evaluation import evaluate_folder, mean_std, summarize

GEOMETRY = Geometry(size=(16, 12, 10), spacing=(0.8, 0.8, 2.0), origin=(0.0, 0.0, 0.0))


def _write(path: Path, array: np.ndarray, geometry: Geometry = GEOMETRY) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(array_to_sitk(array.astype(np.uint8), geometry), str(path))


def _truth() -> np.ndarray:
    array = np.zeros(GEOMETRY.shape_zyx, dtype=np.uint8)
    array[2:8, 2:10, 2:10] = Label.INFECTION_GROUND_GLASS
    return array


def test_evaluate_folder_writes_case_and_summary_tables(tmp_path: Path) -> None:
    truth = _truth()
    half = truth.copy()
    half[:, :, 6:] = 0  # prediction covers half of the truth: DSC = 2/3
    _write(tmp_path / "truth" / "a.nii.gz", truth)
    _write(tmp_path / "truth" / "b.nii.gz", truth)
    _write(tmp_path / "pred" / "a.nii.gz", truth)
    _write(tmp_path / "pred" / "b.nii.gz", half)
    result = evaluate_folder(tmp_path / "pred", tmp_path / "truth", labels={"infection": (3, 4), "liver": 5},
                             out_dir=tmp_path / "out")
    by_case = {(r["case"], r["structure"]): r for r in result.rows}
    assert by_case[("a", "infection")]["dsc"] == 1.0
    assert by_case[("b", "infection")]["dsc"] == pytest.approx(2 / 3)
    assert by_case[("a", "liver")]["hd95_mm"] is None and "truth and prediction empty" in str(
        by_case[("a", "liver")]["notes"])
    infection = next(r for r in result.summary if r["structure"] == "infection")
    assert infection["dsc_mean"] == pytest.approx((1 + 2 / 3) / 2)
    assert infection["dsc_std"] == pytest.approx(np.std([1, 2 / 3], ddof=1))
    liver = next(r for r in result.summary if r["structure"] == "liver")
    assert liver["hd95_mm_n"] == 0 and liver["hd95_mm_mean"] is None
    assert {p.name for p in result.files} == {"cases.csv", "cases.md", "summary.csv", "summary.md"}
    with (tmp_path / "out" / "cases.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 4
    assert "± " in (tmp_path / "out" / "summary.md").read_text()


def test_missing_prediction_and_grid_mismatch_are_input_errors(tmp_path: Path) -> None:
    _write(tmp_path / "truth" / "a.nii.gz", _truth())
    (tmp_path / "pred").mkdir()
    with pytest.raises(InputError, match="no prediction for case a"):
        evaluate_folder(tmp_path / "pred", tmp_path / "truth")
    other = Geometry(size=(16, 12, 10), spacing=(0.8, 0.8, 3.0), origin=(0.0, 0.0, 0.0))
    _write(tmp_path / "pred" / "a.nii.gz", _truth(), other)
    with pytest.raises(InputError, match="case a: prediction grid"):
        evaluate_folder(tmp_path / "pred", tmp_path / "truth")


def test_summary_skips_undefined_values() -> None:
    rows: list[dict[str, object]] = [
        {"structure": "x", "dsc": 0.5, "hd95_mm": None},
        {"structure": "x", "dsc": 0.7, "hd95_mm": 4.0},
    ]
    (row,) = summarize(rows, metrics=("dsc", "hd95_mm"))
    assert row["hd95_mm_n"] == 1 and row["hd95_mm_mean"] == 4.0 and row["hd95_mm_std"] is None
    assert mean_std(row, "dsc") == "0.600 ± 0.141"
    assert mean_std(row, "hd95_mm") == "4.000"


@pytest.mark.realdata
def test_mosmed_masks_against_themselves_and_nibabel(shared_data: Path, tmp_path: Path) -> None:
    import nibabel as nib

    masks = sorted((shared_data / "mosmed_covid_masks" / "masks").glob("*.nii.gz"))[:2]
    for folder in ("pred", "truth"):
        (tmp_path / folder).mkdir()
        for mask in masks:
            (tmp_path / folder / mask.name).symlink_to(mask)
    result = evaluate_folder(tmp_path / "pred", tmp_path / "truth", labels={"finding": 1})
    assert [r["case"] for r in result.rows] == [m.name[: -len(".nii.gz")] for m in masks]
    for row, mask in zip(result.rows, masks, strict=True):
        image = nib.load(mask)
        voxels = int(np.count_nonzero(np.asarray(image.dataobj) == 1))
        assert row["dsc"] == 1.0 and row["nsd"] == 1.0 and row["hd95_mm"] == 0.0
        assert row["truth_voxels"] == voxels > 0
        assert row["truth_ml"] == pytest.approx(voxels * float(np.prod(image.header.get_zooms())) / 1000, rel=1e-5)


def test_paper_tables_order_folds_numerically(tmp_path: Path) -> None:
    from covseg.training.evaluation import paper_tables

    rows: list[dict[str, object]] = [
        {"strategy": "scratch", "pretrained": "none", "fold": k, "case": f"c{k}", "dsc": 0.5, "nsd": 0.5,
         "sensitivity": 0.5, "f1": 0.5, "accuracy": 0.9, "seconds_per_epoch": 100.0 + k} for k in range(11)]
    paper_tables(rows, tmp_path, structure="infection", table3_pretrained="none", nsd_tolerance_mm=3.0)
    header = (tmp_path / "table1.md").read_text().splitlines()[4]
    assert header.index("DSC fold 2 ") < header.index("DSC fold 10 ") < header.index("DSC fold AVG")
    assert "| AVG | avg | 0.500 | 0.500 | 0.500 | 105s |" in (tmp_path / "table3.md").read_text()
