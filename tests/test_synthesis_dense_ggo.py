"""Dense ground glass (opt-in): the same lesions (infection voxels), ground glass reaching further into
the -410 to -150 HU band; the default range and the committed sample are untouched."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from covseg.labels import Label
from covseg.training.synthesis import config as c
from covseg.training.synthesis.config import PhantomConfig
from covseg.training.synthesis.phantom import make_phantom, study_info

PLAIN = PhantomConfig(seed=33, size_xyz=(112, 112, 64), spacing_xyz=(3.2, 3.2, 5.0), lesions=("covid",),
                      lesion_count=8)
DENSE = replace(PLAIN, dense_ground_glass=True)


def _band_fraction(hu: np.ndarray, ggo: np.ndarray) -> float:
    """Fraction of ground-glass voxels between -400 and -150 HU."""
    values = hu[ggo]
    return float(((values >= -400.0) & (values < -150.0)).mean())


def test_same_labels_denser_ground_glass() -> None:
    plain, dense = make_phantom(PLAIN), make_phantom(DENSE)
    infection = [int(Label.INFECTION_GROUND_GLASS), int(Label.INFECTION_CONSOLIDATION)]
    # The same lesions, drawn from the same stream; only the HU split into ground glass / consolidation moves.
    assert np.array_equal(np.isin(plain.labels.array, infection), np.isin(dense.labels.array, infection))
    outside = ~np.isin(plain.labels.array, infection)
    assert np.array_equal(plain.labels.array[outside], dense.labels.array[outside])
    ggo = plain.labels.array == int(Label.INFECTION_GROUND_GLASS)
    assert ggo.sum() > 500
    assert _band_fraction(dense.image.array, ggo) > _band_fraction(plain.image.array, ggo) + 0.05
    assert c.DENSE_GGO_FILL[0] == c.GGO_FILL[0] and c.DENSE_GGO_FILL[1] > c.GGO_FILL[1]


def test_option_keys_the_identifiers_only_when_set() -> None:
    assert "dense_ground_glass" not in repr(PLAIN)
    assert study_info(PLAIN).series_instance_uid != study_info(DENSE).series_instance_uid
    unset = replace(DENSE, dense_ground_glass=False)
    assert study_info(PLAIN).series_instance_uid == study_info(unset).series_instance_uid
