"""End to end: `covseg batch` with the real `covseg.api.infer` on tiny analytic chests.

The studies (tests/test_batch_support.py `analytic_chest`) are two DICOM series of one patient on two
dates and one NIfTI file; the models are the analytic ONNX packages of tests/model_factory.py, whose
output is a known function of HU, so the ground-glass volume is known: the ball's voxel count times the
voxel volume. The table must equal the per-study reports and the longitudinal delta the
difference of the two balls.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pydicom
import pytest
from test_batch_support import analytic_chest

from covseg.cli import run

pytest.importorskip("covseg.api")
pytest.importorskip("onnxruntime")

SHAPE = (24, 48, 48)
SPACING = (3.0, 3.0, 3.0)  # the test packages' spacing: no resampling, so voxel counts are exact


def _dicom(folder: Path, seed: str, date: str, radius: float) -> int:
    from covseg.training.synthesis.dicom_series import write_dicom_series

    volume, voxels = analytic_chest(SHAPE, SPACING, lesion_radius_mm=radius)
    for path in write_dicom_series(volume, folder, uid_seed=seed):
        ds = pydicom.dcmread(path)
        ds.PatientID, ds.StudyDate = "PHANTOM-7", date
        ds.save_as(path)
    return voxels


@pytest.mark.slow
def test_batch_with_real_infer_matches_reports_and_truth(tmp_path: Path) -> None:
    from model_factory import make_package

    from covseg.training.synthesis.dicom_series import write_nifti

    models = [make_package(tmp_path / "models", kind) for kind in ("lung", "infection")]
    first = _dicom(tmp_path / "in" / "day1", "e2e-1", "20200401", 9.0)
    second = _dicom(tmp_path / "in" / "day8", "e2e-2", "20200408", 12.0)
    volume, third = analytic_chest(SHAPE, SPACING, lesion_radius_mm=6.0)
    write_nifti(volume, tmp_path / "in" / "other.nii.gz")
    out = tmp_path / "out"
    args = ["batch", str(tmp_path / "in"), "--out", str(out), "--device", "cpu", "--workers", "1"]
    args += [a for m in models for a in ("--model", str(m))]
    assert run(args) == 0
    with (out / "summary.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["ok"] * 3
    expected = sorted(v * 0.027 for v in (first, second, third))
    # Ground glass is the ball exactly (-500 HU; the analytic lung model's consolidation band also takes the
    # soft tissue the postprocessing admits around the lungs, the same in every study).
    assert sorted(float(r["infection.ground_glass_ml"]) for r in rows) == pytest.approx(expected, rel=0.02)
    for row in rows:
        report = json.loads((out / "studies" / row["key"] / "report.json").read_text())
        assert float(row["infection.volume_ml"]) == pytest.approx(report["infection"]["volume_ml"])
        assert row["models"] == ";".join(m["name"] for m in report["models"])
        assert (out / "studies" / row["key"] / "done.json").is_file()
    with (out / "longitudinal.csv").open(newline="") as handle:
        follow = list(csv.DictReader(handle))
    assert [r["study_date"] for r in follow] == ["2020-04-01", "2020-04-08"]
    assert float(follow[1]["delta_volume_ml"]) == pytest.approx((second - first) * 0.027, rel=0.02)
    from covseg.engine.batch import sessions

    loaded = [key for key in sessions._CACHE if Path(key[0]).resolve() in {m.resolve() for m in models}]
    assert len(loaded) == 2  # one ONNX session per model for all three studies (one in-process worker)
    table = (out / "summary.csv").read_text()
    records = {r["key"]: (out / "studies" / r["key"] / "done.json").read_text() for r in rows}
    assert run([*args, "--resume"]) == 0  # everything finished: nothing recomputed, same table
    assert (out / "summary.csv").read_text() == table
    assert {k: (out / "studies" / k / "done.json").read_text() for k in records} == records
