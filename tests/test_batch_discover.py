"""Discovery and keys: DICOM series (written by the phantom writer), files, zips, CSV lists, globs."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from test_batch_support import make_studies, write_list

from covseg.engine.batch.discover import discover
from covseg.engine.batch.keys import parse_shard, shard_of, study_key
from covseg.engine.geometry import Geometry
from covseg.engine.volume import StudyInfo, Volume
from covseg.errors import InputError
from covseg.training.synthesis.dicom_series import write_dicom_series


def _series(folder: Path, seed: str, *, modality: str = "CT", patient: str = "PAT-1") -> str:
    geometry = Geometry(size=(4, 4, 3), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0))
    volume = Volume(np.full(geometry.shape_zyx, -800.0, dtype=np.float32), geometry,
                    StudyInfo(study_date="2020-05-06"))
    paths = write_dicom_series(volume, folder, uid_seed=seed)
    for path in paths:  # the writer makes CT; patient and modality are set here for the cases below
        ds = pydicom.dcmread(path)
        ds.Modality, ds.PatientID = modality, patient
        ds.save_as(path)
    return str(pydicom.dcmread(paths[0]).SeriesInstanceUID)


def test_dicom_series_files_and_folders_become_keyed_studies(tmp_path: Path) -> None:
    root = tmp_path / "in"
    uid_a = _series(root / "patient1" / "ct", "a")
    uid_b = _series(tmp_path / "tmp", "b")
    for path in (tmp_path / "tmp").iterdir():  # two series in one folder
        path.rename(root / "patient1" / "ct" / f"b_{path.name}")
    uid_pet = _series(root / "patient1" / "pet", "pet", modality="PT")
    make_studies(root / "nifti", 2)
    (root / "README.txt").write_text("not a study")
    studies = discover([str(root)])
    by_uid = {s.series_uid: s for s in studies if s.kind == "dicom"}
    assert set(by_uid) == {uid_a, uid_b, uid_pet}
    assert by_uid[uid_a].key == study_key(series_uid=uid_a, path=Path("anywhere"))  # the UID alone decides
    assert by_uid[uid_a].study_date == "2020-05-06" and by_uid[uid_a].patient_id == "PAT-1"
    assert len(by_uid[uid_a].files) == 3 and by_uid[uid_a].skip_reason is None
    assert by_uid[uid_pet].skip_reason == "modality PT is not CT"
    files = [s for s in studies if s.kind == "file"]
    assert sorted(Path(s.path).name for s in files) == ["case_00.nii.gz", "case_01.nii.gz"]
    assert len({s.key for s in studies}) == 5 and [s.key for s in studies] == sorted(s.key for s in studies)
    # Stable: same keys in any input order, and the batch folder inside an input is never searched.
    shutil.copytree(root / "patient1" / "ct", root / "out" / "studies" / "x")
    again = discover([str(root / "nifti"), str(root)], exclude=root / "out")
    assert [s.key for s in again] == [s.key for s in studies]


def test_the_same_series_given_twice_gets_two_distinct_stable_keys(tmp_path: Path) -> None:
    uid = _series(tmp_path / "a", "same")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    keys = [s.key for s in discover([str(tmp_path / "a"), str(tmp_path / "b")])]
    assert len(keys) == 2 and len(set(keys)) == 2
    assert all(k.startswith(study_key(series_uid=uid, path=tmp_path) + "-") for k in keys)
    assert [s.key for s in discover([str(tmp_path / "b"), str(tmp_path / "a")])] == keys
    # Under one input folder the reader's grouping decides: one series (its reader flags the duplicates).
    assert [len(s.files) for s in discover([str(tmp_path)])] == [6]


def test_zip_csv_glob_and_a_single_dicom_file(tmp_path: Path) -> None:
    uid = _series(tmp_path / "series", "zipped")
    with zipfile.ZipFile(tmp_path / "study.zip", "w") as archive:
        for path in sorted((tmp_path / "series").iterdir()):
            archive.write(path, path.name)
    zipped = discover([str(tmp_path / "study.zip")])
    assert [(s.kind, s.series_uid) for s in zipped] == [("zip", uid)]
    one = discover([str(next((tmp_path / "series").iterdir()))])
    assert [(s.kind, s.series_uid, len(s.files)) for s in one] == [("dicom", uid, 3)]
    make_studies(tmp_path / "cases", 3)
    listing = write_list(tmp_path / "list.csv", [{"path": "cases/case_01.nii.gz", "patient_id": "X",
                                                   "study_date": "20210102"}])
    from_list = discover([str(listing)])
    assert [(Path(s.path).name, s.patient_id, s.study_date) for s in from_list] == [("case_01.nii.gz", "X",
                                                                                     "2021-01-02")]
    assert len(discover([str(tmp_path / "cases" / "case_0[02].nii.gz")])) == 2
    bad = write_list(tmp_path / "bad.csv", [{"path": "cases/case_00.nii.gz", "patient_id": "", "study_date": "May"}])
    with pytest.raises(InputError, match=r"bad.csv, line 2: study date 'May'"):
        discover([str(bad)])


def test_shards_partition_keys_deterministically() -> None:
    keys = [study_key(series_uid=f"1.2.3.{i}", path=Path()) for i in range(300)]
    shards = [shard_of(k, 4) for k in keys]
    assert shards == [shard_of(k, 4) for k in keys] and set(shards) == {1, 2, 3, 4}
    assert min(shards.count(i) for i in (1, 2, 3, 4)) > 40  # a hash partition spreads the work
    assert parse_shard(" 2/ 8") == (2, 8)


@pytest.mark.realdata
def test_real_chest_ct_folder_gives_its_two_ct_series(shared_data: Path) -> None:
    root = shared_data / "lungdx_a0001_chest_ct"
    studies = discover([str(root)])
    expected = [("dicom", "CT", 64, "2007-04-04")] * 2
    assert [(s.kind, s.modality, len(s.files), s.study_date) for s in studies] == expected
    folders = sorted(Path(s.path).name for s in studies)
    assert folders == ["series2_5mm_kernel_L", "series3_5mm_kernel_B"]
    for study in studies:
        uid = str(pydicom.dcmread(next(Path(study.path).glob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID)
        assert study.series_uid == uid and study.key == study_key(series_uid=uid, path=root)


def test_a_detached_header_study_covers_its_data_file(tmp_path: Path) -> None:
    from covseg.engine.batch.records import input_fingerprint

    (tmp_path / "scan.mhd").write_text("ElementDataFile = scan.raw\n")
    (tmp_path / "scan.raw").write_bytes(b"\0" * 8)
    (study,) = discover([str(tmp_path)])
    assert [Path(f).name for f in study.files] == ["scan.mhd", "scan.raw"]
    before = input_fingerprint(study)
    (tmp_path / "scan.raw").write_bytes(b"\0" * 16)
    assert input_fingerprint(study) != before


def test_a_study_named_by_a_folder_and_a_csv_row_is_one_study_with_the_csv_metadata(tmp_path: Path) -> None:
    make_studies(tmp_path / "cases", 2)
    listing = write_list(tmp_path / "list.csv", [{"path": "cases/case_01.nii.gz", "patient_id": "X",
                                                   "study_date": "2021-01-02"}])
    studies = discover([str(tmp_path / "cases"), str(listing)])
    assert [(Path(s.path).name, s.patient_id, s.study_date) for s in studies if s.patient_id] == [
        ("case_01.nii.gz", "X", "2021-01-02")]
    assert len(studies) == 2
