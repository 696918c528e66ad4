"""read_study on every DICOM series and the MosMed masks in ../shared/data, against a second library.

Geometry is checked against what /work/shared/data/README.md states; voxel values against
SimpleITK's own ImageSeriesReader (GDCM decoding) on the same files; NIfTI against nibabel.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from covseg.engine.geometry import Geometry, xyz_to_zyx
from covseg.engine.reading import list_series, read_study
from covseg.engine.volume import Volume
from covseg.errors import InputError

pytestmark = pytest.mark.realdata

LUNGDX = "lungdx_a0001_chest_ct"
SERIES2 = "1.3.6.1.4.1.14519.5.2.1.6655.2359.257508444832901632590301540805"
SERIES3 = "1.3.6.1.4.1.14519.5.2.1.6655.2359.213534032021332276911485641315"
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def sitk_series(folder: Path) -> sitk.Image:
    """The single series in `folder`, read by SimpleITK/GDCM (its own sorting and decoding)."""
    reader = sitk.ImageSeriesReader()
    (uid,) = reader.GetGDCMSeriesIDs(str(folder))
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), uid))
    return reader.Execute()


def assert_matches_sitk(volume: Volume, image: sitk.Image) -> None:
    assert volume.geometry.same_grid(Geometry.from_sitk(image), tolerance_mm=1e-3)
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(image).astype(np.float32))


def assert_geometry(
    volume: Volume, size: tuple[int, int, int], spacing: tuple[float, float, float], origin: tuple[float, float, float]
) -> None:
    assert volume.geometry.size == size
    np.testing.assert_allclose(volume.geometry.spacing, spacing, atol=5e-4)
    np.testing.assert_allclose(volume.geometry.origin, origin, atol=0.01)
    np.testing.assert_allclose(volume.geometry.direction, IDENTITY, atol=1e-6)
    assert volume.array.dtype == np.float32


def test_lungdx_folder_with_two_series_lists_both(shared_data: Path) -> None:
    with pytest.raises(InputError) as caught:
        read_study(shared_data / LUNGDX)
    message = str(caught.value)
    assert SERIES2 in message and SERIES3 in message and "--series-uid" in message and "64 slices" in message
    summaries = {s.uid: s for s in list_series(shared_data / LUNGDX)}
    assert set(summaries) == {SERIES2, SERIES3}
    assert all(s.slice_count == 64 and s.modality == "CT" and s.description == "5mm" for s in summaries.values())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("uid", "folder", "number"), [(SERIES2, "series2_5mm_kernel_L", 2), (SERIES3, "series3_5mm_kernel_B", 3)]
)
def test_lungdx_series_by_uid(shared_data: Path, uid: str, folder: str, number: int) -> None:
    """JPEG-LS lossless, picked with series_uid from the folder holding both series."""
    volume = read_study(shared_data / LUNGDX, series_uid=uid)
    assert_geometry(volume, (512, 512, 64), (0.841796875, 0.841796875, 5.0), (-228.04, -93.06, -439.0))
    assert volume.array.min() == -1024 and volume.array.max() <= 2976
    info = volume.info
    assert (info.format, info.modality, info.series_instance_uid, info.series_number) == ("dicom", "CT", uid, number)
    assert info.study_date == "2007-04-04" and info.patient_sex == "M" and info.patient_id == "Lung_Dx-A0001"
    assert info.warnings == () and len(info.source_files) == 64
    assert info.source_files[0].name == "1-64.dcm"  # sorted along the normal (z up), not by InstanceNumber
    assert_matches_sitk(volume, sitk_series(shared_data / LUNGDX / folder))


def test_lungdx_single_file_reads_its_series(shared_data: Path) -> None:
    headers_only = list_series(shared_data / LUNGDX / "series3_5mm_kernel_B" / "1-10.dcm")
    assert [s.uid for s in headers_only] == [SERIES3]
    with pytest.raises(InputError, match="limit"):  # the whole series is counted from one file
        read_study(shared_data / LUNGDX / "series3_5mm_kernel_B" / "1-10.dcm", max_voxels=512 * 512 * 63)


@pytest.mark.slow
def test_totalseg_jpeg2000(shared_data: Path) -> None:
    volume = read_study(shared_data / "totalseg_example")
    assert_geometry(volume, (512, 512, 20), (0.9765625, 0.9765625, 2.0), (-249.51, -437.51, -804.5))
    assert (volume.array.min(), volume.array.max()) == (-1024, 1839)
    assert volume.info.study_date is not None and volume.info.source_files[0].name.startswith("CT.")
    assert_matches_sitk(volume, sitk_series(shared_data / "totalseg_example"))


@pytest.mark.slow
@pytest.mark.parametrize(("case", "slices", "pixel"), [("3Dircadb1.17", 119, 0.743), ("3Dircadb1.1", 129, 0.57)])
def test_ircad_zip(shared_data: Path, tmp_path: Path, case: str, slices: int, pixel: float) -> None:
    """Signed values, empty PatientID and SeriesNumber, files without extension, inside a zip."""
    archive = shared_data / "ircad" / case / "PATIENT_DICOM.zip"
    volume = read_study(archive)
    assert_geometry(volume, (512, 512, slices), (pixel, pixel, 1.6), (0.0, 0.0, 0.0))
    assert (volume.array.min(), volume.array.max()) == (-1024, 1023)
    info = volume.info
    assert info.format == "zip" and info.patient_id is None and info.series_number is None
    assert info.source_path == archive and info.source_files[0] == archive / "PATIENT_DICOM" / "image_0"
    with zipfile.ZipFile(archive) as handle:
        handle.extractall(tmp_path)
    assert_matches_sitk(volume, sitk_series(tmp_path / "PATIENT_DICOM"))


@pytest.mark.slow
def test_ircad_masks_zip(shared_data: Path) -> None:
    """Eight mask series in one zip: listed, and one picked reads only its own files."""
    archive = shared_data / "ircad" / "3Dircadb1.17" / "MASKS_DICOM.zip"
    with pytest.raises(InputError, match="8 CT series") as caught:
        read_study(archive)
    assert "MASKS_DICOM/liver/image_0" in str(caught.value)
    liver = next(s for s in list_series(archive) if s.first_file.parent.name == "liver")
    volume = read_study(archive, series_uid=liver.uid)
    assert int((volume.array > 0).sum()) == 2_106_497  # the README's liver voxel count
    assert set(np.unique(volume.array).tolist()) == {0.0, 255.0}


@pytest.mark.parametrize("study", ["0255", "0280", "0304"])
def test_mosmed_masks_orientation(shared_data: Path, study: str) -> None:
    nib = pytest.importorskip("nibabel")
    path = shared_data / "mosmed_covid_masks" / "masks" / f"study_{study}_mask.nii.gz"
    volume = read_study(path)
    reference = nib.load(path)
    assert nib.aff2axcodes(reference.affine) == ("L", "A", "S")
    np.testing.assert_allclose(volume.geometry.affine_ras(), reference.affine, atol=1e-4)
    np.testing.assert_array_equal(volume.array, xyz_to_zyx(np.asarray(reference.dataobj)).astype(np.float32))
    assert volume.info.format == "nifti" and volume.array.max() == 1
    assert volume.geometry.spacing[2] == pytest.approx(8.0)
