"""Geometry round trips: grids written by SimpleITK, pydicom and highdicom read back identically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from bad_inputs import phantom, write_series

from covseg.engine.geometry import Geometry, array_to_sitk
from covseg.engine.reading import list_series, read_study


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """A proper rotation from three angles in degrees (x, then y, then z)."""
    a, b, c = (math.radians(v) for v in (ax, ay, az))
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


DIRECTIONS = {
    "identity": np.eye(3),
    "permuted_flipped": np.array([[0.0, 0, -1], [1, 0, 0], [0, -1, 0]]),  # columns: x->P, y->-S, z->-R
    "left_handed": np.diag([-1.0, 1, 1]),
    "oblique": rotation(20, -15, 30),
}


def synthetic(direction: np.ndarray) -> tuple[np.ndarray, Geometry]:
    array = np.random.default_rng(7).integers(-1000, 1500, size=(6, 9, 11)).astype(np.int16)
    geometry = Geometry(
        size=(11, 9, 6),
        spacing=(0.7, 0.9, 2.5),
        origin=(-12.5, 30.25, -101.0),
        direction=tuple(float(v) for v in direction.reshape(-1)),
    )
    return array, geometry


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha", ".nhdr", ".mhd"])
@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_image_formats_round_trip(tmp_path: Path, suffix: str, name: str) -> None:
    array, geometry = synthetic(DIRECTIONS[name])
    path = tmp_path / f"volume{suffix}"
    sitk.WriteImage(array_to_sitk(array, geometry), str(path))
    volume = read_study(path)
    assert volume.geometry.same_grid(geometry, tolerance_mm=1e-4), volume.geometry
    np.testing.assert_array_equal(volume.array, array.astype(np.float32))
    assert volume.array.dtype == np.float32 and volume.info.format in ("nifti", "nrrd", "mha")
    assert list_series(path)[0].slice_count == 6


def dicom_case(tmp_path: Path, direction: np.ndarray, step: float = 2.5) -> tuple[Path, Geometry]:
    """A pydicom series whose rows/columns follow the first two direction columns."""
    iop = tuple(float(v) for v in np.concatenate([direction[:, 0], direction[:, 1]]))
    origin = (-12.5, 30.25, -101.0)
    write_series(tmp_path / "s", n=6, shape=(9, 11), pixel=(0.9, 0.7), step=step, iop=iop, origin=origin)
    normal = np.cross(direction[:, 0], direction[:, 1])
    first = np.asarray(origin) if step > 0 else np.asarray(origin) + 5 * step * normal
    expected = Geometry(
        size=(11, 9, 6),
        spacing=(0.7, 0.9, abs(step)),
        origin=tuple(float(v) for v in first),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in np.column_stack([direction[:, 0], direction[:, 1], normal]).reshape(-1)),
    )
    return tmp_path / "s", expected


@pytest.mark.parametrize("name", ["identity", "permuted_flipped", "oblique"])
@pytest.mark.parametrize("step", [2.5, -2.5])
def test_dicom_orientations(tmp_path: Path, name: str, step: float) -> None:
    """Oblique, sagittal-like and reversed stacks: our geometry equals the analytic one and SimpleITK's."""
    folder, expected = dicom_case(tmp_path, DIRECTIONS[name], step)
    volume = read_study(folder)
    assert volume.geometry.same_grid(expected, tolerance_mm=1e-3), volume.geometry
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    assert volume.geometry.same_grid(Geometry.from_sitk(image), tolerance_mm=1e-3)
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(image).astype(np.float32))
    hu = phantom(6, 9, 11).astype(np.float32)
    np.testing.assert_array_equal(volume.array, hu if step > 0 else hu[::-1])


@pytest.mark.slow
def test_enhanced_multiframe_matches_classic(tmp_path: Path) -> None:
    """A legacy-converted enhanced CT (highdicom) of an oblique series reads as the series itself."""
    from highdicom.legacy import LegacyConvertedEnhancedCTImage
    from pydicom import dcmread

    folder, expected = dicom_case(tmp_path, DIRECTIONS["oblique"])
    classic = read_study(folder)
    datasets = [dcmread(p) for p in sorted(folder.iterdir())]
    enhanced = LegacyConvertedEnhancedCTImage(
        datasets, "1.2.826.0.1.3680043.8.498.1", 9, "1.2.826.0.1.3680043.8.498.2", 1
    )
    path = tmp_path / "enhanced.dcm"
    enhanced.save_as(path)
    volume = read_study(path)
    assert volume.geometry.same_grid(expected, tolerance_mm=1e-3)
    np.testing.assert_array_equal(volume.array, classic.array)
    assert volume.info.source_files == (path,) and volume.info.modality == "CT"


@pytest.mark.slow
def test_single_frame_enhanced_files_form_a_series(tmp_path: Path) -> None:
    """Some scanners write one enhanced (functional-group) file per slice: they stack like classic slices."""
    from highdicom.legacy import LegacyConvertedEnhancedCTImage
    from pydicom import dcmread

    folder, expected = dicom_case(tmp_path, DIRECTIONS["permuted_flipped"], -2.5)
    classic = read_study(folder)
    (tmp_path / "enhanced").mkdir()
    for k, path in enumerate(sorted(folder.iterdir())):
        single = LegacyConvertedEnhancedCTImage(
            [dcmread(path)], "1.2.826.0.1.3680043.8.498.3", 9, f"1.2.826.0.1.3680043.8.498.3.{k + 1}", k + 1
        )
        single.save_as(tmp_path / "enhanced" / f"e{k}.dcm")
    volume = read_study(tmp_path / "enhanced")
    assert volume.geometry.same_grid(expected, tolerance_mm=1e-3)
    np.testing.assert_array_equal(volume.array, classic.array)
