"""`covseg sample`: the study it writes reads back (SimpleITK, pydicom) to the NIfTI's grid and values."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from covseg.cli import run
from covseg.engine.geometry import Geometry
from covseg.labels import Label

ARGS = ["--seed", "5", "--lesions", "covid,nodule,effusion", "--size", "48,48,24", "--spacing", "8,8,12"]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "study"
    assert run(["sample", "--out", str(out), *ARGS]) == 0
    return out


def test_help_lists_sample(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"]) == 0
    assert "sample" in capsys.readouterr().out


def test_study_files_and_readme(study: Path) -> None:
    assert sorted(p.name for p in study.iterdir()) == ["README.txt", "dicom", "image.nii.gz", "labels.nii.gz"]
    assert len(list((study / "dicom").glob("*.dcm"))) == 24
    readme = (study / "README.txt").read_text()
    assert "Command: covseg sample --out <DIR> --seed 5 --lesions covid,nodule,effusion --size 48,48,24" in readme
    assert "lesion_pleural_effusion" in readme and "Seed: 5" in readme
    assert not [p for p in study.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_dicom_reads_to_the_nifti_grid_and_values(study: Path) -> None:
    nifti = sitk.ReadImage(str(study / "image.nii.gz"))
    labels = sitk.ReadImage(str(study / "labels.nii.gz"))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(study / "dicom")))
    dicom = reader.Execute()
    grid = Geometry.from_sitk(nifti)
    assert Geometry.from_sitk(dicom).same_grid(grid, tolerance_mm=1e-3)
    assert Geometry.from_sitk(labels).same_grid(grid, tolerance_mm=1e-3)
    assert grid.size == (48, 48, 24) and np.allclose(grid.spacing, (8.0, 8.0, 12.0))
    values = sitk.GetArrayFromImage(nifti)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(dicom), values)
    assert labels.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayFromImage(labels))) <= {int(v) for v in Label}

    datasets = sorted((pydicom.dcmread(p) for p in (study / "dicom").glob("*.dcm")), key=lambda d: d.InstanceNumber)
    stack = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets])
    np.testing.assert_array_equal(stack, values)
    np.testing.assert_allclose([float(v) for v in datasets[0].ImagePositionPatient], grid.origin, atol=1e-3)
    np.testing.assert_allclose([float(v) for v in datasets[0].PixelSpacing], (8.0, 8.0))
    assert str(datasets[0].PatientName) == "COVSEG^PHANTOM" and datasets[0].Modality == "CT"


def test_existing_folder_is_refused_then_overwritten(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (study / "README.txt").read_bytes()
    assert run(["sample", "--out", str(study), *ARGS]) == 5
    assert "already exists" in capsys.readouterr().err
    assert run(["sample", "--out", str(study), *ARGS, "--overwrite"]) == 0
    assert (study / "README.txt").read_bytes() == before


def _one_line_naming(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(folder) in lines[0], lines


def test_output_under_a_file_gives_exit_code_5(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    assert run(["sample", "--out", str(blocker / "study"), *ARGS]) == 5
    _one_line_naming(capsys, blocker)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_non_writable_parent_gives_exit_code_5(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        assert run(["sample", "--out", str(parent / "study"), *ARGS]) == 5
    finally:
        parent.chmod(0o700)
    _one_line_naming(capsys, parent)
    assert not (parent / "study").exists()


@pytest.mark.parametrize("bad", [["--size", "48,48"], ["--spacing", "1,x,2"], ["--lesions", "covid,tumor"]])
def test_bad_options_are_usage_errors(tmp_path: Path, bad: list[str]) -> None:
    assert run(["sample", "--out", str(tmp_path / "s"), *bad]) == 2
    assert not (tmp_path / "s").exists()


def test_missing_mosmed_masks_is_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COVSEG_SHARED_DATA", str(tmp_path / "nowhere"))
    assert run(["sample", "--out", str(tmp_path / "s"), *ARGS, "--mosmed"]) == 3
    assert "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
