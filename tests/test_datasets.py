"""Dataset readers on tiny generated trees of each published layout, and IRCAD 1.17 from the shared data."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from covseg.engine.geometry import Geometry
from covseg.engine.volume import Volume
from covseg.errors import InputError
from covseg.labels import Label
from covseg.training.datasets import covseg_label_for, detect_layout, load_dataset
from covseg.training.synthesis.dicom_series import write_dicom_series, write_nifti

GEOMETRY = Geometry(size=(8, 7, 5), spacing=(0.7, 0.7, 2.0), origin=(-10.0, 5.0, 30.0))
SHAPE = GEOMETRY.shape_zyx


def _nifti(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_nifti(Volume(array, GEOMETRY), path)


def _ct() -> np.ndarray:
    hu = np.full(SHAPE, -800.0, dtype=np.float32)
    hu[:, :, 4:] = 40.0  # right half dense: infection there is consolidation
    return hu


def _mask(value: int = 1) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[1:4, 2:5, 2:6] = value
    return mask


def test_msd_layout_maps_label_names(tmp_path: Path) -> None:
    _nifti(tmp_path / "imagesTr" / "lung_001.nii.gz", _ct())
    labels = _mask(1)
    labels[0, 0, 0] = 2
    _nifti(tmp_path / "labelsTr" / "lung_001.nii.gz", labels)
    (tmp_path / "dataset.json").write_text(json.dumps({
        "name": "Lung", "labels": {"0": "background", "1": "cancer", "2": "vessel"},
        "training": [{"image": "./imagesTr/lung_001.nii.gz", "label": "./labelsTr/lung_001.nii.gz"}],
    }))
    dataset = load_dataset(tmp_path / "dataset.json")
    assert dataset.layout == "msd" and dataset.name == "Lung" and dataset.ids == ("lung_001",)
    assert any("vessel" in note for note in dataset.notes)
    image, label_map = dataset.case("lung_001").load()
    assert image.geometry.same_grid(GEOMETRY)
    assert np.count_nonzero(label_map.array == Label.LESION_NODULE_TUMOUR) == np.count_nonzero(labels == 1)
    assert label_map.array[0, 0, 0] == 0  # unmapped vessel -> background


def test_nnunet_v2_msd_variant(tmp_path: Path) -> None:
    _nifti(tmp_path / "imagesTr" / "liver_7_0000.nii.gz", _ct())
    _nifti(tmp_path / "labelsTr" / "liver_7.nii.gz", _mask(1))
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1}}))
    case = load_dataset(tmp_path).case("liver_7")
    assert case.image.name == "liver_7_0000.nii.gz"
    assert np.count_nonzero(case.load_labels().array == Label.LIVER) == np.count_nonzero(_mask())


def test_covid19_ct_seg_layout_splits_infection_by_hu(tmp_path: Path) -> None:
    _nifti(tmp_path / "COVID-19-CT-Seg_20cases" / "coronacases_001.nii.gz", _ct())
    both = np.zeros(SHAPE, dtype=np.uint8)
    both[:, :, :4] = 1
    both[:, :, 4:] = 2
    both[1:4, 2:5, 2:6] = 3  # infection across the -800 / +40 HU boundary at x = 4
    _nifti(tmp_path / "Lung_and_Infection_Mask" / "coronacases_001.nii.gz", both)
    dataset = load_dataset(tmp_path)
    assert dataset.layout == "covid19_ct_seg"
    labels = dataset.case("coronacases_001").load_labels()
    assert np.count_nonzero(labels.array == Label.INFECTION_GROUND_GLASS) == 3 * 3 * 2
    assert np.count_nonzero(labels.array == Label.INFECTION_CONSOLIDATION) == 3 * 3 * 2
    assert labels.array[0, 0, 0] == Label.LUNG_LEFT and labels.array[0, 0, 7] == Label.LUNG_RIGHT


def test_covid19_ct_seg_separate_lung_and_infection_masks(tmp_path: Path) -> None:
    _nifti(tmp_path / "images" / "radiopaedia_4.nii.gz", _ct())
    lungs = np.ones(SHAPE, dtype=np.uint8)
    _nifti(tmp_path / "Lung_Mask" / "radiopaedia_4.nii.gz", lungs)
    _nifti(tmp_path / "Infection_Mask" / "radiopaedia_4.nii.gz", _mask(1))
    labels = load_dataset(tmp_path).case("radiopaedia_4").load_labels()
    infection = np.isin(labels.array, [Label.INFECTION_GROUND_GLASS, Label.INFECTION_CONSOLIDATION])
    assert np.array_equal(infection, _mask(1) > 0)  # infection painted over the lung
    assert np.count_nonzero(labels.array == Label.LUNG_LEFT) == lungs.size - infection.sum()


def test_pairs_layout_and_unlabelled_case(tmp_path: Path) -> None:
    truth = _mask(int(Label.LIVER))
    _nifti(tmp_path / "images" / "a.nii.gz", _ct())
    _nifti(tmp_path / "images" / "b.nii.gz", _ct())
    _nifti(tmp_path / "labels" / "a.nii.gz", truth)
    dataset = load_dataset(tmp_path)
    assert dataset.layout == "pairs" and dataset.ids == ("a", "b")
    assert [c.id for c in dataset.labelled()] == ["a"]
    assert np.array_equal(dataset.case("a").load_labels().array, truth)
    with pytest.raises(InputError, match="case b"):
        dataset.case("b").load_labels()


def _ircad_case(folder: Path, *, zipped: bool) -> None:
    write_dicom_series(Volume(_ct(), GEOMETRY), folder / "PATIENT_DICOM", uid_seed="ct")
    write_dicom_series(Volume(_mask(255).astype(np.float32), GEOMETRY), folder / "MASKS_DICOM" / "liver",
                       uid_seed="liver")
    bone = np.zeros(SHAPE, dtype=np.float32)
    bone[4, :, :] = 255
    write_dicom_series(Volume(bone, GEOMETRY), folder / "MASKS_DICOM" / "bone", uid_seed="bone")
    if zipped:
        for part in ("PATIENT_DICOM", "MASKS_DICOM"):
            with zipfile.ZipFile(folder / f"{part}.zip", "w") as archive:
                for file in sorted((folder / part).rglob("*")):
                    archive.write(file, file.relative_to(folder).as_posix())
            shutil.rmtree(folder / part)


@pytest.mark.parametrize("zipped", [False, True])
def test_ircad_layout_reads_dicom_masks(tmp_path: Path, zipped: bool) -> None:
    _ircad_case(tmp_path / "3Dircadb1.1", zipped=zipped)
    (tmp_path / "3Dircadb1.2").mkdir()
    write_dicom_series(Volume(_ct(), GEOMETRY), tmp_path / "3Dircadb1.2" / "PATIENT_DICOM", uid_seed="ct2")
    dataset = load_dataset(tmp_path)
    assert dataset.layout == "ircad" and dataset.ids == ("3Dircadb1.1", "3Dircadb1.2")
    assert [c.id for c in dataset.labelled()] == ["3Dircadb1.1"]
    image, labels = dataset.case("3Dircadb1.1").load()
    assert labels.geometry.same_grid(image.geometry)
    assert np.array_equal(labels.array == Label.LIVER, _mask(1) > 0)  # bone is not a covseg label
    assert set(np.unique(labels.array)) == {0, int(Label.LIVER)}


def test_unknown_layout_and_label_names(tmp_path: Path) -> None:
    (tmp_path / "random").mkdir()
    with pytest.raises(InputError, match="unknown dataset layout"):
        detect_layout(tmp_path)
    with pytest.raises(InputError, match="no such dataset folder"):
        load_dataset(tmp_path / "absent")
    assert covseg_label_for("Liver tumour") == Label.LESION_NODULE_TUMOUR
    assert covseg_label_for("left lung") == Label.LUNG_LEFT
    assert covseg_label_for("COVID-19 infection") == Label.INFECTION_GROUND_GLASS
    assert covseg_label_for("pancreas") is None


@pytest.mark.realdata
@pytest.mark.slow
def test_ircad_17_liver_volume(shared_data: Path) -> None:
    single = load_dataset(shared_data / "ircad" / "3Dircadb1.17")  # a case folder is a one-case dataset
    assert single.ids == ("3Dircadb1.17",) and [s.member for s in single.cases[0].labels] == ["liver"]
    dataset = load_dataset(shared_data / "ircad")
    assert {"3Dircadb1.17", "3Dircadb1.1"} <= set(dataset.ids)
    assert [c.id for c in dataset.labelled()] == ["3Dircadb1.17"]
    labels = dataset.case("3Dircadb1.17").load_labels()
    liver = int(np.count_nonzero(labels.array == Label.LIVER))
    assert liver == 2_106_497
    assert liver * labels.geometry.voxel_volume_ml / 1000 == pytest.approx(1.86, abs=0.01)
    assert labels.geometry.shape_zyx == (119, 512, 512)
