"""The DICOM and NIfTI writers: SimpleITK (GDCM) and pydicom read back our grid and values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from covseg.engine.geometry import Geometry
from covseg.engine.volume import StudyInfo, Volume
from covseg.training.synthesis.dicom_series import rescale_intercept, write_dicom_series, write_nifti

# A right-handed rotation that permutes and flips axes: x index -> +y, y index -> -z, z index -> -x.
PERMUTED = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
# Left-handed: identity with the slice axis flipped (readers return the right-handed equivalent).
FLIPPED_Z = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def _volume(direction: tuple[float, ...], *, seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    geometry = Geometry(size=(7, 5, 4), spacing=(0.7, 0.9, 2.5), origin=(-12.5, 30.25, -101.0),
                        direction=direction)
    array = rng.uniform(-1024, 1500, size=geometry.shape_zyx).astype(np.float32)
    return Volume(array=array, geometry=geometry)


def _read_sitk(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(folder))
    reader.SetFileNames(names)
    return reader.Execute()


def _assert_same_grid(image: sitk.Image, geometry: Geometry) -> None:
    assert Geometry.from_sitk(image).same_grid(geometry, tolerance_mm=1e-4), (Geometry.from_sitk(image), geometry)


@pytest.mark.parametrize("direction", [Geometry((1, 1, 1), (1, 1, 1), (0, 0, 0)).direction, PERMUTED])
def test_series_reads_back_with_simpleitk_and_pydicom(tmp_path: Path, direction: tuple[float, ...]) -> None:
    volume = _volume(direction)
    paths = write_dicom_series(volume, tmp_path / "dcm", uid_seed="t1")
    assert len(paths) == volume.geometry.size[2]
    expected = np.rint(volume.array).astype(np.int16)

    image = _read_sitk(tmp_path / "dcm")
    _assert_same_grid(image, volume.geometry)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected)

    datasets = [pydicom.dcmread(p) for p in paths]
    first = datasets[0]
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.SOPClassUID == pydicom.uid.CTImageStorage and first.Modality == "CT"
    assert list(first.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert str(first.PatientName) == "COVSEG^PHANTOM" and "t1" in first.PatientID
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    assert len({(ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID) for ds in datasets}) == 1
    assert [ds.InstanceNumber for ds in datasets] == list(range(1, len(datasets) + 1))
    d = volume.geometry.direction_matrix
    np.testing.assert_allclose(np.asarray(first.ImageOrientationPatient, float), [*d[:, 0], *d[:, 1]], atol=1e-9)
    np.testing.assert_allclose(np.asarray(first.PixelSpacing, float), [0.9, 0.7])
    assert float(first.SpacingBetweenSlices) == pytest.approx(2.5)
    for k, ds in enumerate(datasets):
        ipp = np.asarray(ds.ImagePositionPatient, float)
        np.testing.assert_allclose(ipp, volume.geometry.index_to_lps(np.array([0, 0, k])), atol=1e-6)
        np.testing.assert_array_equal(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept),
                                      expected[k])


def test_left_handed_direction_reads_back_as_the_same_voxels(tmp_path: Path) -> None:
    volume = _volume(FLIPPED_Z)
    write_dicom_series(volume, tmp_path / "dcm", uid_seed="t2")
    image = _read_sitk(tmp_path / "dcm")
    g = volume.geometry
    flipped = Geometry(size=g.size, spacing=g.spacing, origin=tuple(g.index_to_lps(np.array([0, 0, g.size[2] - 1]))),
                       direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    _assert_same_grid(image, flipped)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), np.rint(volume.array[::-1]).astype(np.int16))


def test_uids_from_volume_info_and_seeded_bytes(tmp_path: Path) -> None:
    info = StudyInfo(study_instance_uid="1.2.3.4", series_instance_uid="1.2.3.4.5", frame_of_reference_uid="1.2.3.6")
    volume = Volume(array=_volume(PERMUTED).array, geometry=_volume(PERMUTED).geometry, info=info)
    a = write_dicom_series(volume, tmp_path / "a", uid_seed="s")
    b = write_dicom_series(volume, tmp_path / "b", uid_seed="s")
    c = write_dicom_series(_volume(PERMUTED), tmp_path / "c", uid_seed="other")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    ds = pydicom.dcmread(a[0])
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID) == ("1.2.3.4", "1.2.3.4.5", "1.2.3.6")
    assert pydicom.dcmread(c[0]).SOPInstanceUID != ds.SOPInstanceUID


def test_rescale_intercept_keeps_out_of_int16_values(tmp_path: Path) -> None:
    assert rescale_intercept(np.array([-1024.0, 3071.0])) == 0
    geometry = Geometry(size=(2, 2, 1), spacing=(1, 1, 1), origin=(0, 0, 0))
    array = np.array([[[-1024.0, 40000.0], [0.0, 12.0]]], dtype=np.float32)
    paths = write_dicom_series(Volume(array, geometry), tmp_path, uid_seed="r")
    ds = pydicom.dcmread(paths[0])
    np.testing.assert_array_equal(ds.pixel_array.astype(float) + float(ds.RescaleIntercept), array[0])
    with pytest.raises(ValueError, match="does not fit"):
        rescale_intercept(np.array([-40000.0, 40000.0]))
    array[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        write_dicom_series(Volume(array, geometry), tmp_path / "nan", uid_seed="r")


def test_nifti_matches_dicom_geometry_and_stores_labels_as_uint8(tmp_path: Path) -> None:
    volume = _volume(PERMUTED)
    rounded = volume.with_array(np.rint(volume.array).astype(np.int16))
    write_dicom_series(rounded, tmp_path / "dcm", uid_seed="n")
    write_nifti(rounded, tmp_path / "image.nii.gz")
    labels = volume.with_array((volume.array > 0).astype(np.int64) * 7)
    write_nifti(labels, tmp_path / "labels.nii.gz")
    dicom = _read_sitk(tmp_path / "dcm")
    nifti = sitk.ReadImage(str(tmp_path / "image.nii.gz"))
    _assert_same_grid(nifti, volume.geometry)
    _assert_same_grid(dicom, Geometry.from_sitk(nifti))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(nifti), sitk.GetArrayFromImage(dicom))
    label_image = sitk.ReadImage(str(tmp_path / "labels.nii.gz"))
    assert label_image.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label_image), labels.array)
    first = (tmp_path / "labels.nii.gz").read_bytes()
    write_nifti(labels, tmp_path / "labels.nii.gz")
    assert (tmp_path / "labels.nii.gz").read_bytes() == first
