"""The infection training-set builder, run small on real CT: every branch writes readable, consistent cases.

A whole set takes minutes; this one draws one real CT and one case per branch, which is enough to run
every code path that a full build runs (a full build had failed on a path no test reached).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from covseg.labels import INFECTION_LABELS, LUNG_LABELS, Label
from covseg.training.default_models import build_infection_training_set

# One worker builds the module's set once (scripts/test.sh runs xdist with --dist loadgroup).
pytestmark = [pytest.mark.realdata, pytest.mark.xdist_group("infection_training_set")]

# Keep one real CT (3D-IRCADb 1.1) so the build stays short; lungdx_a0001 is excluded by default anyway.
ONLY_IRCAD_1_1 = ("lungdx_a0001", "ircad_1_17")


def _build(shared_data: Path, out: Path, faint_variants: int) -> dict[str, object]:
    build_infection_training_set(shared_data, out, phantoms=1, real_variants=2, exclude_patients=ONLY_IRCAD_1_1,
                                 dependent_phantoms=2, dense_ground_glass=True, faint_variants=faint_variants)
    return json.loads((out / "cases.json").read_text())


@pytest.fixture(scope="module")
def built(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("infection_set")
    return out, _build(shared_data, out, faint_variants=1)


def _read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def _case_ids(index: dict[str, object]) -> list[str]:
    cases = index["cases"]
    assert isinstance(cases, list)
    return [str(record["case"]) for record in cases]


def test_every_branch_writes_its_case(built: tuple[Path, dict[str, object]]) -> None:
    _, index = built
    assert _case_ids(index) == ["ircad_1_1_covid0", "ircad_1_1_covid1", "ircad_1_1_covid_faint0", "phantom_0300",
                                "phantom_0301_dependent", "phantom_0302_dependent", "zz_validation_phantom"]


def test_no_case_comes_from_an_excluded_patient(built: tuple[Path, dict[str, object]]) -> None:
    out, index = built
    files = {p.name for p in (out / "images").iterdir()}
    assert not any(name.startswith(("lungdx", "ircad_1_17")) for name in files | set(_case_ids(index)))


def test_images_and_labels_share_a_grid_and_every_lesion_case_has_infection(
        built: tuple[Path, dict[str, object]]) -> None:
    out, index = built
    for case in _case_ids(index):
        image, labels = _read(out / "images" / f"{case}.nii.gz"), _read(out / "labels" / f"{case}.nii.gz")
        assert image.GetSize() == labels.GetSize(), case
        assert np.allclose(image.GetSpacing(), labels.GetSpacing()), case
        assert np.allclose(image.GetOrigin(), labels.GetOrigin()), case
        label_array = sitk.GetArrayFromImage(labels)
        assert np.isin(label_array, LUNG_LABELS).any(), f"{case}: no lung"
        infected = np.isin(label_array, INFECTION_LABELS).any()
        # Every other dependent phantom is a negative (no lesions), by design of the builder.
        assert infected == (case != "phantom_0301_dependent"), case


def _ground_glass_hu(out: Path, case: str) -> float:
    image = sitk.GetArrayFromImage(_read(out / "images" / f"{case}.nii.gz"))
    labels = sitk.GetArrayFromImage(_read(out / "labels" / f"{case}.nii.gz"))
    return float(np.median(image[labels == Label.INFECTION_GROUND_GLASS]))


def test_faint_ground_glass_is_fainter_than_dense(built: tuple[Path, dict[str, object]]) -> None:
    out, _ = built
    # Both draws share the CT; config.FAINT_GGO_FILL tops out where DENSE_GGO_FILL's middle lies.
    assert _ground_glass_hu(out, "ircad_1_1_covid_faint0") < _ground_glass_hu(out, "ircad_1_1_covid0") - 50


def test_faint_variants_leave_every_other_case_byte_identical(
        shared_data: Path, built: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    out, index = built
    without = _build(shared_data, tmp_path, faint_variants=0)
    assert _case_ids(without) == [c for c in _case_ids(index) if "faint" not in c]
    for case in _case_ids(without):
        for folder in ("images", "labels"):
            ours, theirs = _read(out / folder / f"{case}.nii.gz"), _read(tmp_path / folder / f"{case}.nii.gz")
            assert np.array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(theirs)), (case, folder)
