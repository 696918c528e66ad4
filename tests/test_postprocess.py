"""Postprocessing on analytic shapes: sides by LPS, holes, infection confinement, HU split."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from covseg.engine.geometry import Geometry
from covseg.engine.postprocess import (
    PostprocessOptions,
    StructureMasks,
    axial_axis,
    combine_model_masks,
    dilate_faces,
    fill_holes,
    groups_of,
    masks_from_classes,
    postprocess,
    refine_lung_edges,
    split_infection_by_hu,
)
from covseg.labels import Label

SHAPE = (32, 40, 48)  # z, y, x
IDENTITY = (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
FLIP_X = (-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)


def _geometry(direction: tuple[float, ...] = IDENTITY, spacing: float = 3.0) -> Geometry:
    return Geometry(size=(SHAPE[2], SHAPE[1], SHAPE[0]), spacing=(spacing,) * 3, origin=(0.0, 0.0, 0.0),
                    direction=direction)


def _ball(centre_zyx: tuple[float, float, float], radius: float, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - centre_zyx[0]) ** 2 + (y - centre_zyx[1]) ** 2 + (x - centre_zyx[2]) ** 2 <= radius**2


LOW_X = (16, 20, 12)
HIGH_X = (16, 20, 35)


@pytest.mark.parametrize(("direction", "left_centre"), [(IDENTITY, HIGH_X), (FLIP_X, LOW_X)])
def test_two_spheres_split_by_patient_side(direction: tuple[float, ...], left_centre: tuple[int, int, int]) -> None:
    geometry = _geometry(direction)
    lungs = _ball(LOW_X, 8) | _ball(HIGH_X, 8)
    labels = postprocess(StructureMasks(lung=lungs), np.full(SHAPE, -800.0), geometry)
    assert labels[left_centre] == Label.LUNG_LEFT
    other = HIGH_X if left_centre == LOW_X else LOW_X
    assert labels[other] == Label.LUNG_RIGHT
    assert set(np.unique(labels)) == {0, int(Label.LUNG_LEFT), int(Label.LUNG_RIGHT)}


def test_model_left_right_swapped_is_corrected_by_geometry() -> None:
    geometry = _geometry()
    model = np.zeros(SHAPE, dtype=np.uint8)
    model[_ball(HIGH_X, 8)] = 2  # the model calls the larger-LPS-x lung "right": wrong
    model[_ball(LOW_X, 8)] = 1
    masks = combine_model_masks([masks_from_classes(model, {0: "background", 1: "lung_left", 2: "lung_right"})])
    labels = postprocess(masks, np.full(SHAPE, -800.0), geometry)
    assert labels[HIGH_X] == Label.LUNG_LEFT and labels[LOW_X] == Label.LUNG_RIGHT


def test_touching_lungs_split_at_mid_sagittal_gap() -> None:
    geometry = _geometry()
    lungs = _ball((16, 20, 14), 9) | _ball((16, 20, 33), 9)
    lungs[14:18, 18:22, 14:34] = True  # a thin bridge joins them into one component
    labels = postprocess(StructureMasks(lung=lungs), np.full(SHAPE, -800.0), geometry)
    left, right = labels == Label.LUNG_LEFT, labels == Label.LUNG_RIGHT
    assert left.sum() > 0.4 * lungs.sum() and right.sum() > 0.4 * lungs.sum()
    assert labels[16, 20, 33] == Label.LUNG_LEFT and labels[16, 20, 14] == Label.LUNG_RIGHT


def test_single_lung_is_not_split() -> None:
    geometry = _geometry()
    lung = _ball((16, 20, 35), 9)
    labels = postprocess(StructureMasks(lung=lung), np.full(SHAPE, -800.0), geometry)
    assert np.array_equal(labels == Label.LUNG_LEFT, lung)
    assert not (labels == Label.LUNG_RIGHT).any()


def test_small_spurious_component_removed() -> None:
    lungs = _ball(LOW_X, 8) | _ball(HIGH_X, 8)
    speck = np.zeros(SHAPE, dtype=bool)
    speck[2, 2, 2] = True
    labels = postprocess(StructureMasks(lung=lungs | speck), np.full(SHAPE, -800.0), _geometry())
    assert labels[2, 2, 2] == 0


@pytest.mark.parametrize("direction", [IDENTITY, (0, 0, 1.0, 0, 1.0, 0, 1.0, 0, 0)])
def test_holes_filled_in_plane_and_3d(direction: tuple[float, ...]) -> None:
    geometry = _geometry(direction)
    solid = _ball((16, 20, 24), 10)
    hollow = solid & ~_ball((16, 20, 24), 3)  # an enclosed 3-D cavity
    axial = axial_axis(geometry)
    channel = np.zeros(SHAPE, dtype=bool)  # a vessel running along the axial axis, open at both ends
    index: list[object] = [20, 20, 24]
    index[axial] = slice(None)
    channel[tuple(index)] = True  # type: ignore[index]
    filled = fill_holes(hollow & ~channel, axial)
    assert not (filled & ~solid).any()
    assert filled[16, 20, 24] and filled[channel & _ball((16, 20, 24), 9)].all()
    assert np.count_nonzero(solid & ~filled) <= 2  # only the two pole voxels, where the vessel leaves


def test_infection_outside_lungs_removed_and_inside_kept() -> None:
    geometry = _geometry()
    lungs = _ball(LOW_X, 8) | _ball(HIGH_X, 8)
    inside = _ball(HIGH_X, 3)
    outside = _ball((16, 4, 24), 2)
    masks = StructureMasks(lung=lungs & ~inside, infection=inside | outside)
    labels = postprocess(masks, np.full(SHAPE, -700.0), geometry)
    assert (labels[inside] == Label.INFECTION_GROUND_GLASS).all()
    assert (labels[outside] == 0).all()


def test_consolidation_at_rim_joins_lung() -> None:
    """Dense infection the lung model missed, adjacent to the lung, is kept and counted in that lung."""
    geometry = _geometry()
    lung = _ball(HIGH_X, 8)
    rim = _ball(HIGH_X, 9) & ~lung  # 3 mm shell: within the 5 mm margin
    rim[:, :, :38] = False
    beyond = _ball(HIGH_X, 12) & ~_ball(HIGH_X, 10)  # 6 mm and more outside: not lung
    beyond[:, :, :38] = False
    masks = StructureMasks(lung=lung | _ball(LOW_X, 8), infection=rim | beyond)
    labels = postprocess(masks, np.full(SHAPE, 0.0), geometry)
    assert (labels[rim] == Label.INFECTION_CONSOLIDATION).all()
    assert (labels[beyond] == 0).all()


def test_ground_glass_consolidation_split_exact() -> None:
    hu = np.linspace(-900, 100, num=int(np.prod(SHAPE))).reshape(SHAPE)
    infection = np.ones(SHAPE, dtype=bool)
    for threshold in (-300.0, -500.0):
        split = split_infection_by_hu(infection, hu, threshold)
        assert np.array_equal(split == Label.INFECTION_CONSOLIDATION, hu >= threshold)
        assert np.array_equal(split == Label.INFECTION_GROUND_GLASS, hu < threshold)
    lungs = _ball(LOW_X, 8) | _ball(HIGH_X, 8)
    labels = postprocess(StructureMasks(lung=lungs, infection=lungs), hu, _geometry(),
                         PostprocessOptions(consolidation_threshold_hu=-400.0))
    assert np.array_equal(labels == Label.INFECTION_CONSOLIDATION, lungs & (hu >= -400.0))


def test_liver_largest_component_outside_lungs() -> None:
    liver = _ball((26, 20, 24), 5)
    speck = _ball((3, 3, 3), 1)
    lungs = _ball(LOW_X, 8) | _ball(HIGH_X, 8)
    labels = postprocess(StructureMasks(lung=lungs, liver=liver | speck | lungs), np.zeros(SHAPE), _geometry())
    assert np.array_equal(labels == Label.LIVER, liver & ~lungs)


def test_groups_of_model_classes() -> None:
    assert groups_of({0: "background", 1: "lung_left", 2: "lung_right"}) == {"lung"}
    assert groups_of({0: "background", 1: "infection_ground_glass", 2: "infection_consolidation"}) == {"infection"}
    assert groups_of({0: "background", 1: "liver"}) == {"liver"}


def test_diaphragm_dome_surrounded_in_slices_is_not_filled() -> None:
    """An axial-slice hole open in 3-D (the dome rising into the lung base) stays out; a vessel is filled."""
    geometry = _geometry()
    lung = np.zeros(SHAPE, dtype=bool)
    lung[6:26, 6:34, 6:42] = True
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    dome = ((y - 20) ** 2 + (x - 24) ** 2 <= 64) & (z < 14)  # 800 mm2 per slice, open at the bottom
    vessel = (y == 12) & (x == 12) & (z >= 8) & (z < 24)  # 9 mm2 a slice
    labels = postprocess(StructureMasks(lung=lung & ~dome & ~vessel), np.full(SHAPE, -800.0), geometry)
    assert not labels[dome & lung].any()
    assert labels[vessel].all()


def test_touching_lungs_follow_the_model_sides() -> None:
    """One blob with the model's own left/right classes: the split follows the model, sides by LPS."""
    geometry = _geometry(FLIP_X)  # index x grows toward patient right here
    low, high = _ball((16, 20, 14), 9), _ball((16, 20, 33), 9)
    bridge = np.zeros(SHAPE, dtype=bool)
    bridge[14:18, 18:22, 14:34] = True
    model = np.zeros(SHAPE, dtype=np.uint8)
    model[high | bridge] = 1  # the model calls the high-index ball and the bridge "left": wrong side, right split
    model[low & ~bridge] = 2
    masks = combine_model_masks([masks_from_classes(model, {0: "background", 1: "lung_left", 2: "lung_right"})])
    labels = postprocess(masks, np.full(SHAPE, -800.0), geometry)
    # Flipped x: the high-index part has the smaller LPS x, so it is the patient's right lung.
    assert np.array_equal(labels == Label.LUNG_RIGHT, high | bridge)
    assert np.array_equal(labels == Label.LUNG_LEFT, low & ~bridge)


# --- lung edge refinement on the input grid ---------------------------------------------------------
def _air_cylinders(spacing_xyz: tuple[float, float, float]) -> tuple[np.ndarray, Geometry, np.ndarray, np.ndarray]:
    """Two air cylinders (lungs, -850 HU) in soft tissue (+40 HU) and a thin air tube (trachea) 6 mm from
    the right one; (hu, geometry, true left, true right) with left at the larger LPS x."""
    shape = (6, 60, 80)
    geometry = Geometry(size=shape[::-1], spacing=spacing_xyz, origin=(0.0, 0.0, 0.0))
    sx, sy = spacing_xyz[0], spacing_xyz[1]
    y, x = np.mgrid[: shape[1], : shape[2]]
    disc_right = (x * sx - 20.0) ** 2 + (y * sy - 25.0) ** 2 <= 12.0**2
    disc_left = (x * sx - 46.0) ** 2 + (y * sy - 25.0) ** 2 <= 12.0**2
    tube = (x * sx - 20.0) ** 2 + (y * sy - 43.0) ** 2 <= 2.0**2  # edge 6 mm below the right disc
    hu = np.full(shape, 40.0, dtype=np.float32)
    for plane in (disc_left, disc_right, tube):
        hu[:, plane] = -850.0
    left = np.broadcast_to(disc_left, shape).copy()
    right = np.broadcast_to(disc_right, shape).copy()
    return hu, geometry, left, right


def test_refined_lung_edges_reach_the_air_boundary_and_stop_there() -> None:
    hu, geometry, left, right = _air_cylinders((0.8, 0.8, 5.0))
    cross = np.zeros((3, 3, 3), dtype=bool)
    cross[1] = ndimage.generate_binary_structure(2, 1)
    shrunk_left = ndimage.binary_erosion(left, cross, iterations=3)  # 2.4 mm inside the air
    shrunk_right = ndimage.binary_erosion(right, cross, iterations=3)
    grown_left, grown_right = refine_lung_edges(shrunk_left, shrunk_right, hu, geometry, 0, PostprocessOptions())
    assert np.array_equal(grown_left, left) and np.array_equal(grown_right, right)
    tube = (hu == -850.0) & ~left & ~right
    assert not (grown_right & tube).any()  # 6 mm away: beyond the 2.5 mm reach


def test_refined_lung_edges_grow_at_most_the_set_distance_in_plane_only() -> None:
    hu, geometry, left, right = _air_cylinders((0.8, 0.8, 1.0))
    seed_left = np.zeros_like(left)
    seed_left[3, 30, 57] = True  # one voxel in the left disc, in one slice
    grown_left, grown_right = refine_lung_edges(seed_left, np.zeros_like(right), hu, geometry, 0,
                                                PostprocessOptions(lung_edge_mm=2.5))
    assert not grown_right.any()
    assert grown_left[3].sum() == 25 and not grown_left[2].any() and not grown_left[4].any()  # 3 steps: a diamond
    untouched = refine_lung_edges(seed_left, np.zeros_like(right), hu, geometry, 0, PostprocessOptions(lung_edge_mm=0))
    assert np.array_equal(untouched[0], seed_left)


@pytest.mark.parametrize("axial", [0, 1, 2])
def test_dilate_faces_in_plane_equals_a_planar_cross_dilation(axial: int) -> None:
    mask = np.random.default_rng(axial).random((7, 9, 11)) < 0.05
    cross = ndimage.generate_binary_structure(3, 1).copy()
    for end in (0, 2):
        index = [1, 1, 1]
        index[axial] = end
        cross[tuple(index)] = False
    in_plane = tuple(a for a in range(3) if a != axial)
    assert np.array_equal(dilate_faces(mask, in_plane), ndimage.binary_dilation(mask, cross))
