"""The dependent density band of the phantom: normal lung (labels unchanged), denser along the posterior
pleura of the lung bases, absent at the apex and anteriorly; phantoms without it keep their bytes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from covseg.labels import Label
from covseg.training.synthesis.config import PhantomConfig
from covseg.training.synthesis.phantom import Phantom, make_phantom

PLAIN = PhantomConfig(seed=21, size_xyz=(112, 112, 64), spacing_xyz=(3.2, 3.2, 5.0), lesions=())
BAND = replace(PLAIN, dependent_density=True)
LUNGS = (Label.LUNG_LEFT, Label.LUNG_RIGHT)


@pytest.fixture(scope="module")
def pair() -> tuple[Phantom, Phantom]:
    return make_phantom(PLAIN), make_phantom(BAND)


def test_the_band_is_lung_and_changes_no_label(pair: tuple[Phantom, Phantom]) -> None:
    assert np.array_equal(pair[0].labels.array, pair[1].labels.array)


def test_denser_posteriorly_at_the_bases_only(pair: tuple[Phantom, Phantom]) -> None:
    plain, band = (p.image.array for p in pair)
    lungs = np.isin(pair[0].labels.array, [int(v) for v in LUNGS])
    raised = lungs & (band - plain > 100.0)
    assert raised.sum() > 200
    k, j, _ = np.nonzero(raised)
    lung_k, lung_j, _ = np.nonzero(lungs)
    # lower half of the lungs, and the posterior (+y, higher row index) part of them
    assert np.percentile(k, 95) < np.median(lung_k)
    assert np.percentile(j, 5) > np.median(lung_j)
    # and the band is in the ground-glass range, not consolidation
    assert -750.0 < float(np.median(band[raised])) < -250.0


def test_other_options_leave_the_bytes() -> None:
    """The band has its own random stream: a phantom without it is the phantom of before."""
    again = make_phantom(replace(BAND, dependent_density=False))
    assert again.image.array.tobytes() == make_phantom(PLAIN).image.array.tobytes()
