"""Lesions synthesised into a CT whose lungs are known: labels and HU follow the phantom's mixing model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from covseg.labels import DEFAULT_CONSOLIDATION_THRESHOLD_HU, LUNG_LABELS, Label
from covseg.training.default_models import lungs_with_lesions
from covseg.training.lesion_insertion import insert_covid, real_ct_frame, split_mosmed
from covseg.training.synthesis.config import FAINT_GGO_FILL, PhantomConfig
from covseg.training.synthesis.phantom import make_phantom


@pytest.fixture(scope="module")
def healthy() -> tuple[object, np.ndarray]:
    """A healthy phantom stands in for a real CT: its lungs are exact."""
    phantom = make_phantom(PhantomConfig(seed=21, size_xyz=(128, 128, 48), spacing_xyz=(2.8, 2.8, 6.0), lesions=()))
    return phantom.image, lungs_with_lesions(phantom.labels.array)


def test_lesions_stay_in_the_lungs_and_follow_the_mixing_model(healthy: tuple[object, np.ndarray]) -> None:
    image, lungs = healthy
    case = insert_covid(image, lungs, seed=5, count=6)  # type: ignore[arg-type]
    labels, before, after = case.labels.array, image.array, case.image.array  # type: ignore[attr-defined]
    infection = np.isin(labels, [int(Label.INFECTION_GROUND_GLASS), int(Label.INFECTION_CONSOLIDATION)])
    in_lung = np.isin(lungs, LUNG_LABELS)
    assert len(case.lesions) == 6 and infection.sum() > 500
    assert not (infection & ~in_lung).any()
    assert np.array_equal(after[~in_lung], before[~in_lung])  # nothing outside the lungs changes
    assert (after[infection] > before[infection]).mean() > 0.95  # fluid raises the HU of aerated lung
    ggo = labels == int(Label.INFECTION_GROUND_GLASS)
    consolidation = labels == int(Label.INFECTION_CONSOLIDATION)
    assert (after[ggo] < DEFAULT_CONSOLIDATION_THRESHOLD_HU).all()
    assert (after[consolidation] >= DEFAULT_CONSOLIDATION_THRESHOLD_HU).all()
    # Lung labels keep their side wherever no lesion was drawn.
    assert np.array_equal(labels[in_lung & ~infection], lungs[in_lung & ~infection])


def test_same_seed_same_case_other_seed_other_case(healthy: tuple[object, np.ndarray]) -> None:
    image, lungs = healthy
    first = insert_covid(image, lungs, seed=9, count=4)  # type: ignore[arg-type]
    again = insert_covid(image, lungs, seed=9, count=4)  # type: ignore[arg-type]
    other = insert_covid(image, lungs, seed=10, count=4)  # type: ignore[arg-type]
    assert np.array_equal(first.image.array, again.image.array)
    assert np.array_equal(first.labels.array, again.labels.array)
    assert not np.array_equal(first.labels.array, other.labels.array)


def test_faint_ground_glass_draws_the_same_lesions_fainter(healthy: tuple[object, np.ndarray]) -> None:
    image, lungs = healthy
    plain = insert_covid(image, lungs, seed=4, count=8)  # type: ignore[arg-type]
    faint = insert_covid(image, lungs, seed=4, count=8, ggo_fill=FAINT_GGO_FILL)  # type: ignore[arg-type]
    infection = [int(Label.INFECTION_GROUND_GLASS), int(Label.INFECTION_CONSOLIDATION)]
    drawn = np.isin(plain.labels.array, infection)
    assert drawn.sum() > 500 and np.array_equal(drawn, np.isin(faint.labels.array, infection))
    rise_plain = plain.image.array[drawn].astype(float) - image.array[drawn]  # type: ignore[attr-defined]
    rise_faint = faint.image.array[drawn].astype(float) - image.array[drawn]  # type: ignore[attr-defined]
    assert (rise_faint <= rise_plain + 1e-6).all()  # no voxel gets denser, wherever the pattern is ground glass
    ggo = plain.labels.array == int(Label.INFECTION_GROUND_GLASS)
    assert np.median(rise_faint[ggo[drawn]]) < 0.8 * np.median(rise_plain[ggo[drawn]])


def test_lesions_are_lower_lobe_predominant(healthy: tuple[object, np.ndarray]) -> None:
    image, lungs = healthy
    case = insert_covid(image, lungs, seed=2, count=12)  # type: ignore[arg-type]
    z_lung = np.nonzero(np.isin(lungs, LUNG_LABELS))[0]
    z_lesion = np.nonzero(np.isin(case.labels.array, [3, 4]))[0]
    assert np.median(z_lesion) < np.median(z_lung)  # LPS: +z superior, index 0 is the lowest slice


def test_frame_refuses_oblique_grids(healthy: tuple[object, np.ndarray]) -> None:
    from covseg.engine.geometry import Geometry

    image, lungs = healthy
    g = image.geometry  # type: ignore[attr-defined]
    c, s = np.cos(0.3), np.sin(0.3)
    oblique = Geometry(size=g.size, spacing=g.spacing, origin=g.origin, direction=(c, s, 0, -s, c, 0, 0, 0, 1))
    with pytest.raises(ValueError, match="axis-aligned"):
        real_ct_frame(oblique, np.isin(lungs, LUNG_LABELS))


def test_mosmed_split_is_a_partition() -> None:
    files = tuple(Path(f"study_{i:04d}_mask.nii.gz") for i in range(50))
    split = split_mosmed(files)
    parts = [set(split[k]) for k in ("train", "validation", "test")]
    assert [len(p) for p in parts] == [30, 10, 10]
    assert set().union(*parts) == set(files) and sum(len(p) for p in parts) == len(files)
    assert split == split_mosmed(files)


@pytest.mark.realdata
def test_mosmed_test_shapes_into_real_chest_ct(shared_data: Path) -> None:
    from covseg.training.reference_dataset import REAL_LUNG_CASES, reference_case
    from covseg.training.synthesis.mosmed_shapes import mask_files

    image, reference = reference_case(REAL_LUNG_CASES[0], shared_data)
    test = split_mosmed(mask_files(shared_data / "mosmed_covid_masks" / "masks"))["test"]
    case = insert_covid(image, reference.array, seed=1, count=6, shape_files=test)
    assert all(record.source.startswith("mosmed") for record in case.lesions)
    infection_ml = np.isin(case.labels.array, [3, 4]).sum() * image.geometry.voxel_volume_ml
    assert 5.0 < infection_ml < 1500.0
