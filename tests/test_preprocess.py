"""Preprocessing and its exact undo, on phantoms defined in physical (LPS) space so that every
orientation of the grid shows the same anatomy and the expected labels are known."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from covseg.engine.geometry import Geometry
from covseg.engine.package import AIR_HU, ModelPackage, load_package
from covseg.engine.preprocess import body_box, mask_box, preprocess
from covseg.engine.runtime import create_predictor
from covseg.engine.sliding_window import sliding_window
from covseg.engine.volume import Volume
from tests.model_factory import analytic_labels, make_package

CENTRE = np.array([10.0, -20.0, 35.0])  # LPS mm
ROUND_TRIP_HU = -250.0


def rotation(axis: int, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


DIRECTIONS = {
    "LPS": np.eye(3),
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "flipped-z": np.diag([1.0, 1.0, -1.0]),
    "permuted": np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    "permuted-flipped": np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]]),
    "oblique": rotation(2, 17.0) @ rotation(0, 8.0) @ np.diag([1.0, -1.0, 1.0]),
}


def phantom(direction: np.ndarray, spacing: tuple[float, float, float] = (1.0, 0.9, 1.6),
            size: tuple[int, int, int] = (64, 56, 40), dtype: type = np.float32, outside_hu: float = -1000.0,
            tissue_hu: float = 40.0) -> Volume:
    """A body ellipsoid (tissue_hu) with two lung ellipsoids (-850 HU) in outside_hu (air), the grid
    centred on CENTRE. Round trips use ROUND_TRIP_HU for tissue and outside: no partial-volume ring of
    lung-like HU between air and tissue, and the lung band's edge (-550 HU) half-way between lung and
    tissue, so that linear interpolation moves no boundary."""
    half = np.asarray(spacing) * (np.asarray(size) - 1) / 2.0
    origin = CENTRE - direction @ half
    geometry = Geometry(size=size, spacing=spacing, origin=tuple(origin),
                        direction=tuple(direction.ravel()))
    index = np.indices(geometry.shape_zyx).reshape(3, -1).T[:, ::-1]
    p = geometry.index_to_lps(index) - CENTRE
    body = np.sum((p / [27.0, 21.0, 27.0]) ** 2, axis=1) < 1
    side, radii = np.array([12.0, 0.0, 0.0]), np.array([9.0, 13.0, 19.0])
    lungs = (np.sum(((p - side) / radii) ** 2, axis=1) < 1) | (np.sum(((p + side) / radii) ** 2, axis=1) < 1)
    hu = np.where(lungs, -850.0, np.where(body, tissue_hu, outside_hu)).reshape(geometry.shape_zyx)
    return Volume(hu.astype(dtype), geometry)


@pytest.fixture(scope="module")
def lung(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    folder = make_package(tmp_path_factory.mktemp("pkg"), "lung", spacing_mm=(1.5, 1.5, 2.0), patch=(16, 32, 32),
                          crop="body")
    return load_package(folder)


def run_model(volume: Volume, package: ModelPackage, roi: tuple[slice, slice, slice] | None = None) -> np.ndarray:
    image, undo = preprocess(volume, package, roi_zyx=roi)
    probabilities = sliding_window(image, create_predictor(package, device="cpu", threads=1), patch=package.patch,
                                   pad_value=package.normalization.value_of(AIR_HU))
    return undo.labels_on_input(probabilities)


def far_from_edges(truth: np.ndarray, radius: int) -> np.ndarray:
    """Voxels whose neighbourhood of `radius` voxels holds one label only."""
    footprint = np.ones((2 * radius + 1,) * 3, dtype=bool)
    return ndimage.maximum_filter(truth, footprint=footprint) == ndimage.minimum_filter(truth, footprint=footprint)


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_labels_round_trip_for_every_orientation(name: str, lung: ModelPackage) -> None:
    volume = phantom(DIRECTIONS[name], outside_hu=ROUND_TRIP_HU,
                     tissue_hu=ROUND_TRIP_HU)
    labels = run_model(volume, lung)
    truth = analytic_labels(volume.array, "lung")
    assert labels.shape == volume.array.shape and labels.dtype == np.uint8
    far = far_from_edges(truth, radius=2)
    np.testing.assert_array_equal(labels[far], truth[far])
    assert np.mean(labels == truth) >= 0.99
    # A flip, a permutation mix-up or a half-voxel shift would move the lungs: their centres agree.
    for side in (1, -1):
        np.testing.assert_allclose(centre_mm(labels, volume, side), centre_mm(truth, volume, side), atol=0.2)


def centre_mm(labels: np.ndarray, volume: Volume, side: int) -> np.ndarray:
    """LPS centre of the lung voxels on one side (sign of L - CENTRE) of the phantom."""
    index = np.argwhere(labels == 1)[:, ::-1]
    points = volume.geometry.index_to_lps(index)
    return points[np.sign(points[:, 0] - CENTRE[0]) == side].mean(axis=0)


def test_same_grid_round_trip_is_exact(tmp_path: Path) -> None:
    package = load_package(make_package(tmp_path, "lung", spacing_mm=(1.0, 0.9, 1.6), crop="none"))
    volume = phantom(DIRECTIONS["RAS"], outside_hu=ROUND_TRIP_HU, tissue_hu=ROUND_TRIP_HU)
    np.testing.assert_array_equal(run_model(volume, package), analytic_labels(volume.array, "lung"))


def test_anisotropic_input_and_int16(lung: ModelPackage) -> None:
    volume = phantom(DIRECTIONS["RAS"], spacing=(0.7, 0.7, 3.0), size=(90, 80, 22), dtype=np.int16,
                     outside_hu=ROUND_TRIP_HU, tissue_hu=ROUND_TRIP_HU)
    labels = run_model(volume, lung)
    truth = analytic_labels(volume.array, "lung")
    far = far_from_edges(truth, radius=2)
    np.testing.assert_array_equal(labels[far], truth[far])
    assert np.mean(labels == truth) >= 0.98  # 3 mm slices: many voxels lie near a curved edge


def test_network_sees_one_orientation(lung: ModelPackage) -> None:
    reference, undo = preprocess(phantom(DIRECTIONS["LPS"]), lung)
    np.testing.assert_allclose(undo.model_geometry.direction_matrix, np.eye(3))
    for name in ("RAS", "flipped-z"):
        image, other = preprocess(phantom(DIRECTIONS[name]), lung)
        assert other.model_geometry.same_grid(undo.model_geometry)
        np.testing.assert_allclose(image, reference, atol=1e-5)
    # Permuted axes: the same anatomy, the array axes back in (S, P, L) order.
    image, other = preprocess(phantom(DIRECTIONS["permuted"], spacing=(1.0, 1.0, 1.0), size=(48, 48, 48)), lung)
    np.testing.assert_allclose(other.model_geometry.direction_matrix, np.eye(3))


def test_oblique_keeps_closest_axes(lung: ModelPackage) -> None:
    volume = phantom(DIRECTIONS["oblique"])
    _, undo = preprocess(volume, lung)
    model = undo.model_geometry.direction_matrix
    assert np.all(np.abs(np.diag(model)) > 0.9)  # closest to identity (L, P, S axes), rotated ~20 degrees
    assert np.all(np.diag(model) > 0)
    np.testing.assert_allclose(undo.model_geometry.spacing, lung.spacing_mm)


def test_padding_and_divisor(tmp_path: Path) -> None:
    package = load_package(make_package(tmp_path, "lung", spacing_mm=(3.0, 3.0, 5.0), patch=(16, 32, 32),
                                        divisor=(8, 16, 16)))
    volume = phantom(np.eye(3), spacing=(1.0, 1.0, 1.0), size=(70, 30, 25))
    image, undo = preprocess(volume, package)
    assert image.dtype == np.float32 and image.ndim == 4 and image.shape[0] == 1
    shape = image.shape[1:]
    assert all(s >= p and s % d == 0 for s, p, d in zip(shape, package.patch, package.divisor, strict=True))
    assert undo.padded_shape == shape
    assert image[0, 0, 0, 0] == package.normalization.value_of(AIR_HU)


def test_body_crop_keeps_the_largest_component(lung: ModelPackage) -> None:
    volume = phantom(np.eye(3), spacing=(1.0, 1.0, 1.0), size=(100, 90, 60))
    hu = volume.array.copy()
    hu[5:8, 80:86, 2:9] = 100.0  # a small separate object (the table, a cable)
    volume = volume.with_array(hu)
    box = body_box(volume)
    body = volume.array > -500
    body[5:8, 80:86, 2:9] = False
    found = ndimage.find_objects(body.astype(np.uint8))[0]
    for got, want, n in zip(box, found, volume.array.shape, strict=True):
        assert got.start <= want.start and got.stop >= want.stop  # the body is inside
        assert want.start - got.start <= 15 or got.start == 0  # margin 10 mm + subsampling step
        assert got.stop - want.stop <= 15 or got.stop == n
    assert box[1].stop < 80  # the table is outside
    labels = run_model(volume, lung)
    outside = np.ones(volume.array.shape, dtype=bool)
    outside[box] = False
    assert not labels[outside].any()


def test_empty_volume_is_not_cropped(lung: ModelPackage) -> None:
    volume = Volume(np.full((20, 30, 40), -1000.0, dtype=np.float32),
                    Geometry(size=(40, 30, 20), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)))
    assert body_box(volume) == (slice(0, 20), slice(0, 30), slice(0, 40))


def test_roi_crop_from_a_lung_box(tmp_path: Path, lung: ModelPackage) -> None:
    volume = phantom(DIRECTIONS["RAS"], outside_hu=ROUND_TRIP_HU, tissue_hu=ROUND_TRIP_HU)
    first = run_model(volume, lung)
    roi = mask_box(first > 0, volume.geometry.spacing, margin_mm=5.0)
    assert roi is not None
    infection = load_package(make_package(tmp_path, "infection", spacing_mm=(1.5, 1.5, 2.0), crop="lung"))
    image, undo = preprocess(volume, infection, roi_zyx=roi)
    assert undo.crop_zyx == roi
    labels = run_model(volume, infection, roi)
    assert not labels[: roi[0].start].any() and not labels[roi[0].stop:].any()
    probability = undo.probability_on_input(np.ones((3, *image.shape[1:]), np.float32) / 3, 0)
    assert probability.dtype == np.float32 and probability.shape == volume.array.shape
    outside = np.ones(volume.array.shape, dtype=bool)
    outside[roi] = False
    assert outside.any() and np.all(probability[outside] == 1.0)
    assert probability[roi].max() == pytest.approx(1 / 3)


def test_mask_box() -> None:
    mask = np.zeros((10, 20, 30), dtype=bool)
    assert mask_box(mask, (1.0, 1.0, 1.0), 2.0) is None
    mask[4:6, 5:9, 10:12] = True
    assert mask_box(mask, (1.0, 2.0, 0.5), 2.0) == (slice(0, 10), slice(4, 10), slice(8, 14))  # (x, y, z) mm


def test_undo_checks_shapes(lung: ModelPackage) -> None:
    _, undo = preprocess(phantom(np.eye(3)), lung)
    with pytest.raises(ValueError, match="do not match the model grid"):
        undo.labels_on_input(np.zeros((3, 4, 4, 4), np.float32))


def smooth_probabilities(shape: tuple[int, ...], classes: int, seed: int = 0) -> np.ndarray:
    """Softmax of smooth random fields: class regions with boundaries, as a network gives."""
    rng = np.random.default_rng(seed)
    fields = np.stack([ndimage.gaussian_filter(rng.normal(size=shape), 3.0) for _ in range(classes)])
    fields = (fields * 40.0 / fields.std()).astype(np.float32)
    fields -= fields.max(axis=0)
    np.exp(fields, out=fields)
    return fields / fields.sum(axis=0)


@pytest.mark.parametrize("name", ["RAS", "permuted-flipped", "oblique"])
def test_fast_undo_equals_class_by_class_resampling(name: str, lung: ModelPackage) -> None:
    volume = phantom(DIRECTIONS[name], spacing=(0.8, 0.7, 1.1), size=(50, 60, 44))
    image, undo = preprocess(volume, lung)
    for probabilities in (smooth_probabilities(image.shape[1:], 4),
                          np.random.default_rng(1).random((3, *image.shape[1:]), dtype=np.float32)):
        fast = undo.labels_on_input(probabilities)
        reference = np.zeros_like(fast)
        reference[undo.crop_zyx] = undo._labels_class_by_class(undo._unpadded(probabilities))
        assert np.mean(fast != reference) < 1e-4  # float rounding at exact ties only
        for k in range(probabilities.shape[0]):  # and the one-class view agrees with the labels
            on_input = undo.probability_on_input(probabilities, k)
            assert on_input.shape == fast.shape
        assert len(np.unique(fast)) == probabilities.shape[0]


def test_labels_on_input_holds_one_class_at_a_time(lung: ModelPackage, monkeypatch: pytest.MonkeyPatch) -> None:
    import covseg.engine.preprocess as preprocess_module

    monkeypatch.setattr(preprocess_module, "UNDO_CHUNK", 1 << 15)  # small chunks: crop-sized arrays dominate
    volume = phantom(np.eye(3), spacing=(0.5, 0.5, 0.5), size=(96, 96, 64))
    image, undo = preprocess(volume, lung)
    crop_bytes = np.prod([s.stop - s.start for s in undo.crop_zyx]) * 4
    peaks = {}
    for classes in (3, 12):
        probabilities = smooth_probabilities(image.shape[1:], classes)
        tracemalloc.start()
        labels = undo.labels_on_input(probabilities)
        peaks[classes] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(np.unique(labels)) == classes
    assert peaks[12] < 2 * crop_bytes < 12 * crop_bytes  # never K crop-sized float arrays
    assert peaks[12] < 1.5 * peaks[3]
