"""The committed sample study: regenerates byte for byte, and a second library sees its lungs and lesions."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from covseg.cli import run
from covseg.labels import Label

NAME = "covid_phantom_seed4"
ARGS = ["--seed", "4", "--lesions", "covid", "--size", "192,192,64", "--spacing", "1.9,1.9,4.5", "--lesion-count", "8"]
COMMAND = "covseg sample --out <DIR> " + " ".join(ARGS)


@pytest.fixture(scope="module")
def sample(repo_root: Path) -> Path:
    folder = repo_root / "sample_data" / NAME
    assert folder.is_dir(), f"{folder} is missing"
    return folder


def _files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_committed_sample_regenerates_byte_identical(sample: Path, tmp_path: Path) -> None:
    out = tmp_path / NAME
    assert run(["sample", "--out", str(out), *ARGS]) == 0
    assert _files(out) == _files(sample)
    for relative in _files(sample):
        fresh, committed = (out / relative).read_bytes(), (sample / relative).read_bytes()
        if relative.suffix == ".gz":
            # SimpleITK writes gzip with mtime 0, so the files match byte for byte today; comparing the
            # decompressed NIfTI keeps the test about our content, not about the zlib build.
            assert fresh[4:8] == b"\0\0\0\0", f"{relative}: gzip header carries a timestamp"
            fresh, committed = gzip.decompress(fresh), gzip.decompress(committed)
        assert fresh == committed, relative


def test_readmes_document_the_command(sample: Path) -> None:
    assert f"Command: {COMMAND}\n" in (sample / "README.txt").read_text()
    documented = (sample.parent / "README.md").read_text()
    assert COMMAND.replace("<DIR>", f"sample_data/{NAME}") in documented


def test_sample_is_small_and_has_bilateral_covid_lesions(sample: Path) -> None:
    dicom_bytes = sum(p.stat().st_size for p in (sample / "dicom").glob("*.dcm"))
    assert len(list((sample / "dicom").glob("*.dcm"))) == 64 and dicom_bytes < 5.2e6
    # nibabel (RAS+: +x is the patient's RIGHT) as an independent reader of the label map.
    labels = nib.load(sample / "labels.nii.gz")
    data = np.asarray(labels.dataobj)
    assert data.dtype == np.uint8
    ras = nib.affines.apply_affine(labels.affine, np.argwhere(data > 0))
    values = data[data > 0]
    left_x = ras[values == Label.LUNG_LEFT, 0].mean()
    right_x = ras[values == Label.LUNG_RIGHT, 0].mean()
    assert left_x < -40.0 < 40.0 < right_x
    infection = np.isin(values, (Label.INFECTION_GROUND_GLASS, Label.INFECTION_CONSOLIDATION))
    assert (ras[infection, 0] < 0).sum() > 500 and (ras[infection, 0] > 0).sum() > 500  # both lungs
    assert ras[values == Label.LIVER, 0].mean() > 0  # liver on the patient's right
    image = np.asarray(nib.load(sample / "image.nii.gz").dataobj)
    assert image.shape == data.shape and image.min() >= -1024
