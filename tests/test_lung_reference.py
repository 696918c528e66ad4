"""The classical lung reference against a phantom's known lungs, and on the real chest CT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from covseg.labels import Label
from covseg.training.lung_reference import lung_reference
from covseg.training.synthesis.config import PhantomConfig
from covseg.training.synthesis.phantom import make_phantom


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


@pytest.fixture(scope="module")
def healthy_phantom():  # type: ignore[no-untyped-def]
    return make_phantom(PhantomConfig(seed=3, size_xyz=(128, 128, 64), spacing_xyz=(2.8, 2.8, 5.0), lesions=()))


def test_reference_matches_phantom_lungs_on_the_right_sides(healthy_phantom) -> None:  # type: ignore[no-untyped-def]
    reference = lung_reference(healthy_phantom.image).array
    truth = healthy_phantom.labels.array
    for label in (Label.LUNG_LEFT, Label.LUNG_RIGHT):
        assert _dice(reference == label, truth == label) > 0.9, label.name


def test_reference_is_independent_of_slice_order(healthy_phantom) -> None:  # type: ignore[no-untyped-def]
    """A volume stored feet-first (z axis pointing to the feet) gets the same lungs, sides kept."""
    from covseg.engine.geometry import Geometry
    from covseg.engine.volume import Volume

    image = healthy_phantom.image
    g = image.geometry
    direction = np.asarray(g.direction).reshape(3, 3) @ np.diag([1.0, 1.0, -1.0])
    top = g.index_to_lps(np.array([0.0, 0.0, g.size[2] - 1]))
    flipped = Volume(image.array[::-1].copy(), Geometry(g.size, g.spacing, tuple(top), tuple(direction.ravel())))
    assert np.array_equal(lung_reference(flipped).array[::-1], lung_reference(image).array)


@pytest.mark.realdata
@pytest.mark.slow
def test_real_chest_ct_lungs_are_physiological(shared_data: Path) -> None:
    from covseg.engine.reading import read_study

    image = read_study(shared_data / "lungdx_a0001_chest_ct" / "series2_5mm_kernel_L")
    labels = lung_reference(image).array
    ml = {label: (labels == label).sum() * image.geometry.voxel_volume_ml for label in (1, 2)}
    assert 1500 < ml[Label.LUNG_LEFT] < 3500 and 2000 < ml[Label.LUNG_RIGHT] < 4500
    assert ml[Label.LUNG_RIGHT] > ml[Label.LUNG_LEFT]  # the right lung is the larger one
    # the left lung lies at larger LPS x (patient's left)
    xs = {label: image.geometry.index_to_lps(np.argwhere(labels == label)[:, ::-1].mean(axis=0))[0]
          for label in (1, 2)}
    assert xs[Label.LUNG_LEFT] > xs[Label.LUNG_RIGHT]
