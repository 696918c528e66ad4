"""DICOM SEG read back with highdicom: segments, codes, references and voxel identity with the label map."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from covseg.engine.dicom_seg import seg_unavailable_reason, write_seg
from covseg.engine.reading import read_study
from covseg.engine.volume import StudyInfo
from covseg.labels import BY_VALUE
from covseg.training.synthesis.dicom_series import write_dicom_series
from tests.test_infer_phantom import make_phantom


def _series(tmp_path: Path, direction: tuple[float, ...]) -> tuple[Path, np.ndarray]:
    phantom = make_phantom(direction, shape=(24, 40, 48))
    folder = tmp_path / "ct"
    write_dicom_series(phantom.volume, folder, uid_seed="seg-test")
    return folder, phantom.truth


def _reconstruct(seg: hd.seg.Segmentation, geometry: object, shape: tuple[int, int, int]) -> np.ndarray:
    """The label volume from the SEG frames, placed by each frame's plane position (independent of us)."""
    out = np.zeros(shape, dtype=np.uint8)
    values = {d.SegmentNumber: BY_VALUE_BY_NAME[d.SegmentLabel] for d in seg.SegmentSequence}
    pixels = seg.pixel_array
    for i, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        position = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        index = np.rint(geometry.lps_to_index(position)).astype(int)  # type: ignore[attr-defined]
        assert index[0] == 0 and index[1] == 0
        number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        out[index[2]][pixels[i] > 0] = values[number]
    return out


BY_VALUE_BY_NAME = {info.display_name[:64]: value for value, info in BY_VALUE.items()}


@pytest.mark.parametrize("direction", [(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), (-1.0, 0, 0, 0, 1.0, 0, 0, 0, -1.0)])
def test_seg_matches_label_map_and_references_source(tmp_path: Path, direction: tuple[float, ...]) -> None:
    folder, truth = _series(tmp_path, direction)
    volume = read_study(folder)
    # The reader may reorder slices; bring the truth onto its grid through physical positions.
    phantom = make_phantom(direction, shape=(24, 40, 48))
    labels = _on_grid(truth, phantom.volume.geometry, volume.geometry)
    path = write_seg(labels, volume.geometry, volume.info, tmp_path / "seg.dcm", model_names=["lung-test 0.0.1"])
    assert path is not None
    seg = hd.seg.segread(path)
    present = [v for v in (1, 2, 3, 4, 5) if (labels == v).any()]
    descriptions = list(seg.SegmentSequence)
    assert [d.SegmentLabel for d in descriptions] == [BY_VALUE[v].display_name for v in present]
    for d, v in zip(descriptions, present, strict=True):
        assert d.SegmentedPropertyTypeCodeSequence[0].CodeValue == BY_VALUE[v].code.value
        assert d.SegmentedPropertyCategoryCodeSequence[0].CodeValue == BY_VALUE[v].category.value
        assert d.SegmentAlgorithmName == "covseg"
    source = pydicom.dcmread(sorted(folder.iterdir())[0])
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.PatientID == source.PatientID
    assert np.array_equal(_reconstruct(seg, volume.geometry, labels.shape), labels)


def _on_grid(labels: np.ndarray, source: object, target: object) -> np.ndarray:
    import SimpleITK as sitk

    from covseg.engine.geometry import array_to_sitk

    image = array_to_sitk(labels, source)  # type: ignore[arg-type]
    reference = array_to_sitk(np.zeros(target.shape_zyx, dtype=np.uint8), target)  # type: ignore[attr-defined]
    return sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor))


def test_labelmap_seg_and_anonymized_patient(tmp_path: Path) -> None:
    folder, _ = _series(tmp_path, (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    volume = read_study(folder)
    labels = np.zeros(volume.array.shape, dtype=np.uint8)
    labels[5:10, 10:20, 10:20] = 2
    labels[5:10, 12:15, 12:15] = 4
    path = write_seg(labels, volume.geometry, volume.info, tmp_path / "seg.dcm", segmentation_type="LABELMAP",
                     pseudonym="anon-1234")
    assert path is not None
    seg = hd.seg.segread(path)
    assert seg.SegmentationType == "LABELMAP"
    labelled = [d.SegmentLabel for d in seg.SegmentSequence if d.SegmentNumber > 0]  # LABELMAP adds background 0
    assert labelled == [BY_VALUE[2].display_name, BY_VALUE[4].display_name]
    assert seg.PatientID == "anon-1234" and str(seg.PatientName) == "anon-1234"
    assert seg.get("PatientBirthDate", "") == "" and seg.get("StudyDate", "") == ""
    assert seg.PatientIdentityRemoved == "YES"


def test_empty_map_writes_nothing_and_non_dicom_has_reason(tmp_path: Path) -> None:
    folder, _ = _series(tmp_path, (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    volume = read_study(folder)
    empty = np.zeros(volume.array.shape, dtype=np.uint8)
    assert write_seg(empty, volume.geometry, volume.info, tmp_path / "seg.dcm") is None
    assert not (tmp_path / "seg.dcm").exists()
    assert seg_unavailable_reason(volume.info) is None
    reason = seg_unavailable_reason(StudyInfo(format="nifti"))
    assert reason is not None and "nifti" in reason


def test_enhanced_multiframe_source(tmp_path: Path) -> None:
    """One legacy-converted enhanced CT file: one SEG frame per source frame, voxel-identical."""
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    folder, _ = _series(tmp_path, (-1.0, 0, 0, 0, 1.0, 0, 0, 0, -1.0))
    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    enhanced = LegacyConvertedEnhancedCTImage(datasets, hd.UID(), 9, hd.UID(), 1)
    enhanced.save_as(tmp_path / "enhanced.dcm")
    volume = read_study(tmp_path / "enhanced.dcm")
    labels = np.zeros(volume.array.shape, dtype=np.uint8)
    labels[3:9, 5:20, 8:30] = 1
    labels[12:20, 10:25, 20:40] = 5
    path = write_seg(labels, volume.geometry, volume.info, tmp_path / "seg.dcm")
    assert path is not None
    seg = hd.seg.segread(path)
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert [r.ReferencedSOPInstanceUID for r in referenced] == [enhanced.SOPInstanceUID]
    assert np.array_equal(_reconstruct(seg, volume.geometry, labels.shape), labels)


def test_label_grid_other_than_source_slices_is_resampled(tmp_path: Path) -> None:
    """Labels on an equivalent grid with reversed slice order (not the source slices): the SEG frames are
    resampled onto the source planes and still match voxel for voxel."""
    from covseg.engine.geometry import Geometry

    folder, _ = _series(tmp_path, (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    volume = read_study(folder)
    g = volume.geometry
    labels = np.zeros(volume.array.shape, dtype=np.uint8)
    labels[3:9, 5:20, 8:30] = 2
    labels[12:20, 10:25, 20:40] = 3
    top = g.index_to_lps(np.array([0.0, 0.0, g.size[2] - 1.0]))
    d = g.direction_matrix.copy()
    d[:, 2] *= -1
    reversed_grid = Geometry(g.size, g.spacing, tuple(float(v) for v in top), tuple(d.ravel()))  # type: ignore[arg-type]
    path = write_seg(labels[::-1].copy(), reversed_grid, volume.info, tmp_path / "seg.dcm")
    assert path is not None
    assert np.array_equal(_reconstruct(hd.seg.segread(path), g, labels.shape), labels)


def test_patient_name_never_reaches_warnings_or_stderr(tmp_path: Path, recwarn: pytest.WarningsRecorder,
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    """highdicom warns about single-component person names and quotes them; covseg must not pass that on."""
    import warnings

    folder, _ = _series(tmp_path, (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    secret = "Secret_Patient-0042"  # one component, as in real archives: highdicom's warning quotes it
    for path in folder.iterdir():
        dataset = pydicom.dcmread(path)
        dataset.PatientName = secret
        dataset.save_as(path)
    study = read_study(folder)
    labels = np.zeros(study.array.shape, dtype=np.uint8)
    labels[3:6, 5:15, 5:15] = 1
    warnings.simplefilter("always")
    assert write_seg(labels, study.geometry, study.info, tmp_path / "seg.dcm") is not None
    assert not [w for w in recwarn if secret in str(w.message)]
    assert secret not in capfd.readouterr().err
