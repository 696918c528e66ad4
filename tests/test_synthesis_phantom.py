"""The phantom generator: determinism, HU bands per label, anatomy sides in LPS, lesion distribution."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from covseg.labels import DEFAULT_CONSOLIDATION_THRESHOLD_HU, Label
from covseg.training.synthesis.config import LABEL_HU_BANDS, PhantomConfig
from covseg.training.synthesis.phantom import Phantom, make_phantom

SMALL = PhantomConfig(seed=3, size_xyz=(96, 96, 48), spacing_xyz=(4.0, 4.0, 6.0),
                      lesions=("covid", "nodule", "effusion"))
TINY = replace(SMALL, size_xyz=(64, 64, 32), spacing_xyz=(6.0, 6.0, 9.0))


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom(SMALL)


def _centroid_lps(phantom: Phantom, mask: np.ndarray) -> np.ndarray:
    """Centroid of a (z, y, x) mask in LPS mm, through the geometry (not array-axis assumptions)."""
    k, j, i = np.nonzero(mask)
    return phantom.labels.geometry.index_to_lps(np.stack([i, j, k], axis=1)).mean(axis=0)


def test_same_seed_same_bytes_and_other_seed_differs(phantom: Phantom) -> None:
    again = make_phantom(SMALL)
    assert again.image.array.tobytes() == phantom.image.array.tobytes()
    assert again.labels.array.tobytes() == phantom.labels.array.tobytes()
    assert again.lesions == phantom.lesions
    tiny, other = make_phantom(TINY), make_phantom(replace(TINY, seed=4))
    assert other.image.array.tobytes() != tiny.image.array.tobytes()
    assert other.labels.array.tobytes() != tiny.labels.array.tobytes()


def test_types_grid_and_label_values(phantom: Phantom) -> None:
    image, labels = phantom.image, phantom.labels
    assert image.array.dtype == np.float32 and labels.array.dtype == np.uint8
    assert image.geometry.same_grid(labels.geometry) and image.geometry.size == SMALL.size_xyz
    assert np.array_equal(image.array, np.rint(image.array))  # integral HU, as stored in DICOM
    assert set(np.unique(labels.array)) == {int(v) for v in Label}  # every label drawn in this config
    assert np.isfinite(image.array).all()
    assert image.array.min() >= -1024 and image.array.max() <= 3071


def test_mean_hu_of_each_label_interior_lies_in_its_band(phantom: Phantom) -> None:
    for label, (low, high) in LABEL_HU_BANDS.items():
        interior = ndimage.binary_erosion(phantom.labels.array == label)
        assert interior.sum() > 3, label
        mean = float(phantom.image.array[interior].mean())
        assert low <= mean <= high, (label.name, mean, (low, high))


def test_infection_split_follows_the_consolidation_threshold(phantom: Phantom) -> None:
    image, labels = phantom.image.array, phantom.labels.array
    assert image[labels == Label.INFECTION_GROUND_GLASS].max() < DEFAULT_CONSOLIDATION_THRESHOLD_HU
    assert image[labels == Label.INFECTION_CONSOLIDATION].min() >= DEFAULT_CONSOLIDATION_THRESHOLD_HU
    ggo = labels == Label.INFECTION_GROUND_GLASS
    assert np.median(image[ggo]) > -750  # ground glass is denser than aerated lung ...
    assert np.median(image[labels == Label.LUNG_LEFT]) < np.median(image[ggo])


def test_lungs_and_liver_on_the_correct_patient_side(phantom: Phantom) -> None:
    labels = phantom.labels.array
    left = _centroid_lps(phantom, labels == Label.LUNG_LEFT)
    right = _centroid_lps(phantom, labels == Label.LUNG_RIGHT)
    liver = _centroid_lps(phantom, labels == Label.LIVER)
    assert left[0] > 40.0 and right[0] < -40.0  # LPS +x is the patient's left
    assert liver[0] < 0.0  # liver on the patient's right
    assert liver[2] < right[2] - 50.0  # and below the right lung
    # The liver's top lies under the right lung base: no right-lung voxel in a column below a liver voxel.
    right_lung = labels == Label.LUNG_RIGHT
    liver_mask = labels == Label.LIVER
    k_liver_top = np.max(np.nonzero(liver_mask.any(axis=(1, 2)))[0])
    k_lung_base = np.min(np.nonzero(right_lung.any(axis=(1, 2)))[0])
    assert k_lung_base < k_liver_top  # the dome: lung recesses reach below the liver's top ...
    columns = liver_mask.any(axis=0) & right_lung.any(axis=0)
    lung_bottom = np.argmax(right_lung, axis=0)
    liver_top = liver_mask.shape[0] - 1 - np.argmax(liver_mask[::-1], axis=0)
    assert np.all(liver_top[columns] < lung_bottom[columns])  # ... but above the liver is lung, not below


def test_effusion_is_dependent_and_basal(phantom: Phantom) -> None:
    labels = phantom.labels.array
    effusion = _centroid_lps(phantom, labels == Label.LESION_PLEURAL_EFFUSION)
    lungs = _centroid_lps(phantom, np.isin(labels, (Label.LUNG_LEFT, Label.LUNG_RIGHT)))
    assert effusion[1] > lungs[1] + 30.0  # posterior (LPS +y)
    assert effusion[2] < lungs[2]  # basal


def test_covid_lesions_bilateral_lower_and_peripheral() -> None:
    lower = upper = 0
    sides = set()
    for seed in range(3):
        p = make_phantom(replace(TINY, seed=seed, lesions=("covid",), lesion_count=6))
        labels = p.labels.array
        lungs = np.isin(labels, (Label.LUNG_LEFT, Label.LUNG_RIGHT, Label.INFECTION_GROUND_GLASS,
                                 Label.INFECTION_CONSOLIDATION))
        infection = np.isin(labels, (Label.INFECTION_GROUND_GLASS, Label.INFECTION_CONSOLIDATION))
        slices = np.nonzero(lungs.any(axis=(1, 2)))[0]
        middle = (slices[0] + slices[-1]) // 2
        lower += int(infection[: middle + 1].sum())
        upper += int(infection[middle + 1:].sum())
        sides |= {r.side for r in p.lesions}
        # Peripheral: lesion voxels lie closer to the lung surface than lung voxels do on average.
        depth = ndimage.distance_transform_edt(lungs, sampling=p.labels.geometry.spacing[::-1])
        assert depth[infection].mean() < depth[lungs].mean()
        k, j, i = np.nonzero(infection)
        x_lps = p.labels.geometry.index_to_lps(np.stack([i, j, k], axis=1))[:, 0]
        assert (x_lps > 0).any() and (x_lps < 0).any()  # bilateral
    assert sides == {"left", "right"}
    assert lower > 1.5 * upper


def test_healthy_and_diseased_share_the_anatomy() -> None:
    healthy = make_phantom(replace(TINY, lesions=()))
    covid = make_phantom(replace(TINY, lesions=("covid",)))
    lung_values = (Label.LUNG_LEFT, Label.LUNG_RIGHT)
    assert set(np.unique(healthy.labels.array)) == {0, Label.LUNG_LEFT, Label.LUNG_RIGHT, Label.LIVER}
    infected = np.isin(covid.labels.array, (*lung_values, Label.INFECTION_GROUND_GLASS,
                                            Label.INFECTION_CONSOLIDATION))
    assert np.array_equal(np.isin(healthy.labels.array, lung_values), infected)
    assert healthy.lesions == ()


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="'tumor'"):
        PhantomConfig(lesions=("covid", "tumor"))
    with pytest.raises(ValueError, match="size_xyz"):
        PhantomConfig(size_xyz=(4, 64, 64))


@pytest.mark.slow
@pytest.mark.realdata
def test_mosmed_shapes_are_used_and_clipped_to_the_lungs(shared_data: Path) -> None:
    folder = shared_data / "mosmed_covid_masks" / "masks"
    p = make_phantom(replace(TINY, lesions=("covid",), use_mosmed=True, mosmed_dir=folder, lesion_count=3))
    assert p.lesions and all(r.source.startswith("mosmed:study_") for r in p.lesions)
    infection = np.isin(p.labels.array, (Label.INFECTION_GROUND_GLASS, Label.INFECTION_CONSOLIDATION))
    assert infection.sum() > 0


def test_missing_mosmed_folder_is_named(tmp_path: Path) -> None:
    from covseg.training.synthesis.mosmed_shapes import MosmedUnavailableError

    missing = tmp_path / "no-masks"
    with pytest.raises(MosmedUnavailableError, match="no-masks"):
        make_phantom(replace(TINY, lesions=("covid",), use_mosmed=True, mosmed_dir=missing))


@pytest.mark.parametrize(("size", "spacing"), [((8, 8, 8), (1.0, 1.0, 1.0)), ((40, 60, 12), (9.0, 6.0, 25.0))])
def test_tiny_and_anisotropic_grids_still_draw_every_structure(size: tuple[int, int, int],
                                                              spacing: tuple[float, float, float]) -> None:
    p = make_phantom(PhantomConfig(seed=1, size_xyz=size, spacing_xyz=spacing, lesions=("covid", "effusion")))
    assert p.image.geometry.size == size and np.allclose(p.image.geometry.spacing, spacing)
    present = set(np.unique(p.labels.array))
    assert {Label.LUNG_LEFT, Label.LUNG_RIGHT, Label.LIVER, Label.LESION_PLEURAL_EFFUSION} <= present


def test_ground_glass_adds_to_the_lung_so_vessels_stay_visible() -> None:
    """Same seed with and without infection (same anatomy and noise): inside ground glass the diseased HU
    still follows the healthy HU (vessels brighter than parenchyma), and is higher everywhere."""
    healthy = make_phantom(replace(TINY, lesions=()))
    covid = make_phantom(replace(TINY, lesions=("covid",)))
    ggo = covid.labels.array == Label.INFECTION_GROUND_GLASS
    before, after = healthy.image.array[ggo], covid.image.array[ggo]
    assert np.corrcoef(before, after)[0, 1] > 0.5
    assert np.mean(after - before) > 100.0
    infection = np.isin(covid.labels.array, (Label.INFECTION_GROUND_GLASS, Label.INFECTION_CONSOLIDATION))
    far = ndimage.distance_transform_edt(~infection) > 4.0  # beyond each lesion's soft edge and blur
    assert np.array_equal(healthy.image.array[far], covid.image.array[far])


def test_effusion_compresses_the_lung_in_front_of_it(phantom: Phantom) -> None:
    labels, image = phantom.labels.array, phantom.image.array
    effusion = labels == Label.LESION_PLEURAL_EFFUSION
    lungs = np.isin(labels, (Label.LUNG_LEFT, Label.LUNG_RIGHT))
    # Lung voxels directly anterior (smaller array y = smaller LPS y) of the fluid.
    anterior = lungs & np.roll(effusion, -1, axis=1) & ~effusion
    assert anterior.sum() > 10
    assert np.median(image[anterior]) > np.median(image[lungs]) + 100.0
