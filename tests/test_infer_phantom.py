"""An analytic chest phantom with exact truth for the writer, pipeline and infer tests.

HU values sit in the bands of the analytic test packages (tests/model_factory.py) and away from their
edges, so the analytic models reproduce the truth exactly when the package spacing equals the input
spacing: air -1000, body 150 (in no band), lungs -850 (lung band), ground glass -600 (lung and
infection bands), consolidation 0 (infection band only: the lung model misses it, as real ones do),
liver 60 (liver band). Left lung at larger LPS x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from covseg.engine.geometry import Geometry
from covseg.engine.volume import StudyInfo, Volume
from covseg.labels import Label

SPACING = 3.5
SHAPE = (40, 64, 80)  # z, y, x


@dataclass(frozen=True)
class Phantom:
    volume: Volume
    truth: np.ndarray  # covseg label values


def _ellipsoid(shape: tuple[int, int, int], centre: tuple[float, float, float],
               radii: tuple[float, float, float]) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
            + ((x - centre[2]) / radii[2]) ** 2) <= 1.0


def make_phantom(direction: tuple[float, ...] = (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0),
                 info: StudyInfo | None = None, shape: tuple[int, int, int] = SHAPE) -> Phantom:
    """The phantom on a grid with this direction; anatomy is placed by LPS side, not by index."""
    geometry = Geometry(size=(shape[2], shape[1], shape[0]), spacing=(SPACING,) * 3,
                        origin=(-100.0, -80.0, -60.0), direction=direction)
    zc, yc, xc = (shape[0] - 1) / 2, (shape[1] - 1) / 2, (shape[2] - 1) / 2
    # Index x of the patient's left: larger LPS x along the direction's x column.
    left_sign = 1.0 if geometry.direction_matrix[0, 0] >= 0 else -1.0
    dx = shape[2] * 0.2
    body = _ellipsoid(shape, (zc, yc, xc), (shape[0], shape[1] * 0.45, shape[2] * 0.47))
    left = _ellipsoid(shape, (zc + 3, yc, xc + left_sign * dx), (shape[0] * 0.3, shape[1] * 0.28, shape[2] * 0.14))
    right = _ellipsoid(shape, (zc + 3, yc, xc - left_sign * dx), (shape[0] * 0.3, shape[1] * 0.28, shape[2] * 0.15))
    ggo = _ellipsoid(shape, (zc + 3, yc + 4, xc + left_sign * dx), (3, 4, 3))
    cons = _ellipsoid(shape, (zc + 1, yc - 3, xc - left_sign * dx), (2.5, 3, 3))
    liver = _ellipsoid(shape, (5, yc, xc - left_sign * dx * 0.5), (3.5, 8, 10))
    hu = np.full(shape, -1000.0, dtype=np.float32)
    truth = np.zeros(shape, dtype=np.uint8)
    hu[body] = 150.0
    for mask, value, label in ((left, -850.0, Label.LUNG_LEFT), (right, -850.0, Label.LUNG_RIGHT),
                               (ggo, -600.0, Label.INFECTION_GROUND_GLASS),
                               (cons, 0.0, Label.INFECTION_CONSOLIDATION), (liver, 60.0, Label.LIVER)):
        hu[mask] = value
        truth[mask] = int(label)
    info = info or StudyInfo(format="array", modality="CT")
    return Phantom(Volume(hu, geometry, info), truth)


def test_phantom_truth_is_consistent() -> None:
    phantom = make_phantom()
    counts = np.bincount(phantom.truth.ravel(), minlength=8)
    assert all(counts[int(v)] > 0 for v in (1, 2, 3, 4, 5))
    left_x = np.nonzero(phantom.truth == Label.LUNG_LEFT)[2].mean()
    right_x = np.nonzero(phantom.truth == Label.LUNG_RIGHT)[2].mean()
    assert left_x > right_x  # identity direction: larger index x is larger LPS x
