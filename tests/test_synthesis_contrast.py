"""The portal venous phase of the phantom: the same anatomy and labels as the unenhanced phantom of the
seed (the kidneys apart), an enhanced liver in its band, and blood, heart and kidneys brighter than it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from covseg.labels import Label
from covseg.training.synthesis.anatomy import build_anatomy
from covseg.training.synthesis.config import ENHANCED_LABEL_HU_BANDS, LABEL_HU_BANDS, PhantomConfig
from covseg.training.synthesis.contrast import blood_pool, kidneys
from covseg.training.synthesis.frame import Frame
from covseg.training.synthesis.phantom import Phantom, make_phantom

PLAIN = PhantomConfig(seed=11, size_xyz=(112, 112, 64), spacing_xyz=(3.2, 3.2, 5.0), lesions=("covid",))
PORTAL = replace(PLAIN, contrast="portal")


@pytest.fixture(scope="module")
def pair() -> tuple[Phantom, Phantom]:
    return make_phantom(PLAIN), make_phantom(PORTAL)


def _interior_mean(image: np.ndarray, mask: np.ndarray) -> float:
    return float(image[ndimage.binary_erosion(mask)].mean())


def test_unknown_phase_is_refused() -> None:
    with pytest.raises(ValueError, match="contrast phase 'arterial'"):
        replace(PLAIN, contrast="arterial")


def test_labels_match_the_unenhanced_phantom_but_for_the_kidneys(pair: tuple[Phantom, Phantom]) -> None:
    # Ground glass and consolidation split per voxel at the final HU, which enhanced vessels crossing a
    # lesion raise: compare infection as one structure.
    plain, portal = (np.where(p.labels.array == Label.INFECTION_CONSOLIDATION, Label.INFECTION_GROUND_GLASS,
                              p.labels.array) for p in pair)
    frame = Frame.for_grid(PLAIN.size_xyz, PLAIN.spacing_xyz)
    renal = kidneys(frame)
    differ = plain != portal
    assert differ.any()  # the kidney takes the liver's lower posterior edge ...
    assert np.all(renal[differ])  # ... and nothing else changes
    assert np.all(plain[differ] == Label.LIVER) and np.all(portal[differ] == Label.BACKGROUND)


def test_enhanced_liver_lies_in_its_band_and_the_others_in_theirs(pair: tuple[Phantom, Phantom]) -> None:
    portal = pair[1]
    bands = {**LABEL_HU_BANDS, **ENHANCED_LABEL_HU_BANDS}
    for label, (low, high) in bands.items():
        mask = portal.labels.array == label
        if ndimage.binary_erosion(mask).sum() <= 3:
            continue  # this config draws no nodule or effusion
        assert low <= _interior_mean(portal.image.array, mask) <= high, label.name
    plain_liver = _interior_mean(pair[0].image.array, pair[0].labels.array == Label.LIVER)
    assert _interior_mean(portal.image.array, portal.labels.array == Label.LIVER) > plain_liver + 30.0


def test_blood_and_kidneys_are_brighter_than_the_enhanced_liver(pair: tuple[Phantom, Phantom]) -> None:
    """What the phase is for: background voxels brighter than the liver right beside it."""
    portal = pair[1]
    frame = Frame.for_grid(PORTAL.size_xyz, PORTAL.spacing_xyz)
    anatomy = build_anatomy(frame, np.random.default_rng(np.random.SeedSequence([1, PORTAL.seed]).spawn(6)[0]))
    liver = _interior_mean(portal.image.array, portal.labels.array == Label.LIVER)
    chambers = blood_pool(frame, anatomy)
    assert chambers.sum() > 100 and not (portal.labels.array[chambers] == Label.LIVER).any()
    assert _interior_mean(portal.image.array, chambers) > liver + 30.0
    renal = kidneys(frame) & (portal.labels.array == Label.BACKGROUND)
    assert _interior_mean(portal.image.array, renal) > liver + 30.0
    # unenhanced, the same chambers are darker than the liver
    assert _interior_mean(pair[0].image.array, chambers) < _interior_mean(pair[0].image.array,
                                                                         pair[0].labels.array == Label.LIVER)


def test_each_phase_has_its_own_identifiers(pair: tuple[Phantom, Phantom]) -> None:
    """Two different images must not share a SeriesInstanceUID; options at their defaults leave the UIDs of
    phantoms made before the options existed (the committed sample) unchanged."""
    from covseg.training.synthesis.phantom import study_info

    plain, portal = (p.image.info for p in pair)
    assert plain.series_instance_uid != portal.series_instance_uid
    assert study_info(replace(PORTAL, contrast="none")) == study_info(PLAIN)
    assert study_info(replace(PLAIN, dependent_density=True)).series_instance_uid != plain.series_instance_uid
