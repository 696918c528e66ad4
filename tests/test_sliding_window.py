"""Sliding-window invariants with predictors whose answer is known, and agreement with MONAI."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage

from covseg.engine.sliding_window import (
    empty_below,
    importance_map,
    sliding_window,
    softmax,
    window_slices,
    window_starts,
)

SHAPES = [(1, 1, 1), (5, 7, 3), (9, 16, 16), (17, 23, 31), (32, 33, 19), (40, 12, 50)]
PATCHES = [(8, 16, 16), (4, 8, 12), (16, 8, 8)]


def constant_logits(values: np.ndarray):  # type: ignore[no-untyped-def]
    def predict(batch: np.ndarray) -> np.ndarray:
        n, _, *spatial = batch.shape
        return np.broadcast_to(values.reshape(1, -1, 1, 1, 1), (n, len(values), *spatial)).astype(np.float32)
    return predict


def banded(batch: np.ndarray) -> np.ndarray:
    """One-hot of a known function of the voxel's own value: class = (x > 0.3) + (x > 0.7)."""
    label = (batch[:, 0] > 0.3).astype(np.int64) + (batch[:, 0] > 0.7)
    return np.stack([(label == k) for k in range(3)], axis=1).astype(np.float32)


def box_filter(batch: np.ndarray) -> np.ndarray:
    """A window-dependent, mirror-equivariant predictor: 3x3x3 mean with zeros beyond the window."""
    smooth = np.stack([ndimage.uniform_filter(b[0], 3, mode="constant") for b in batch])
    return np.stack([smooth, -smooth], axis=1).astype(np.float32)


def _image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, *shape), dtype=np.float32)


@pytest.mark.parametrize(("shape", "patch"), list(itertools.product(SHAPES, PATCHES)))
def test_constant_predictor_gives_constant_output(shape: tuple[int, int, int], patch: tuple[int, int, int]) -> None:
    logits = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    out = sliding_window(_image(shape), constant_logits(logits), patch=patch, overlap=0.5, batch_size=3)
    assert out.shape == (3, *shape) and out.dtype == np.float32
    expected = softmax(logits[None, :, None, None, None])[0, :, 0, 0, 0]
    np.testing.assert_allclose(out, np.broadcast_to(expected[:, None, None, None], out.shape), rtol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 4])
def test_known_function_is_reproduced_exactly(shape: tuple[int, int, int], overlap: float, batch_size: int) -> None:
    image = _image(shape, seed=batch_size)
    out = sliding_window(image, banded, patch=(8, 16, 12), overlap=overlap, batch_size=batch_size,
                         apply_softmax=False)
    np.testing.assert_array_equal(out, banded(image[None])[0])


@pytest.mark.parametrize("shape", SHAPES[1:4])
def test_identity_predictor_returns_the_input(shape: tuple[int, int, int]) -> None:
    image = _image(shape)
    out = sliding_window(image, lambda b: b * 2.0, patch=(4, 8, 12), overlap=0.25, apply_softmax=False)
    np.testing.assert_allclose(out, 2.0 * image, rtol=1e-5)


def test_batch_size_does_not_change_the_result_and_sets_calls() -> None:
    image = _image((20, 30, 26))
    calls: list[int] = []

    def counted(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape[0])
        return box_filter(batch)

    reference = sliding_window(image, box_filter, patch=(8, 16, 16), overlap=0.5, batch_size=1)
    windows = len(window_slices((20, 30, 26), (8, 16, 16), 0.5))
    for batch_size in (2, 3, 4):
        calls.clear()
        out = sliding_window(image, counted, patch=(8, 16, 16), overlap=0.5, batch_size=batch_size)
        np.testing.assert_allclose(out, reference, atol=1e-6)
        assert len(calls) == math.ceil(windows / batch_size) and sum(calls) == windows


def test_tta_with_mirror_equivariant_predictor_equals_plain() -> None:
    image = _image((13, 21, 18))
    calls: list[int] = []

    def counted(batch: np.ndarray) -> np.ndarray:
        calls.append(1)
        return box_filter(batch)

    plain = sliding_window(image, counted, patch=(8, 16, 16), overlap=0.5)
    plain_calls = len(calls)
    with_tta = sliding_window(image, counted, patch=(8, 16, 16), overlap=0.5, tta=True)
    np.testing.assert_allclose(with_tta, plain, atol=1e-6)
    assert len(calls) - plain_calls == 8 * plain_calls


def test_tta_averages_the_mirrorings() -> None:
    # A predictor that is not mirror-equivariant (logit = z index within the window): mirroring
    # along z maps index i to p - 1 - i, so the TTA mean of softmax is the same at every z.
    def ramp(batch: np.ndarray) -> np.ndarray:
        z = np.arange(batch.shape[2], dtype=np.float32)[None, :, None, None]
        return np.stack([np.broadcast_to(z, batch[:, 0].shape), np.zeros(batch[:, 0].shape)], 1).astype(np.float32)

    out = sliding_window(_image((8, 8, 8)), ramp, patch=(8, 8, 8), tta=True)
    expected = 0.5 * (softmax(np.stack([np.arange(8.0), np.zeros(8)]), axis=0)
                      + softmax(np.stack([np.arange(8.0)[::-1], np.zeros(8)]), axis=0))
    np.testing.assert_allclose(out[:, :, 0, 0], expected.astype(np.float32), rtol=1e-5)


@pytest.mark.parametrize("overlap", [-0.1, 1.0, 1.5])
def test_overlap_out_of_range(overlap: float) -> None:
    with pytest.raises(ValueError, match=f"overlap must be in \\[0, 1\\), got {overlap}"):
        sliding_window(_image((4, 4, 4)), banded, patch=(4, 4, 4), overlap=overlap)


@pytest.mark.parametrize(("size", "patch", "overlap"), list(itertools.product(
    (1, 7, 16, 17, 50, 97, 130), (8, 16, 96), (0.0, 0.25, 0.5, 0.9))))
def test_window_starts_cover_flush(size: int, patch: int, overlap: float) -> None:
    starts = window_starts(size, patch, overlap)
    assert starts[0] == 0
    if size <= patch:
        assert starts == [0]
        return
    assert starts[-1] == size - patch
    steps = np.diff(starts)
    assert np.all(steps > 0) and np.all(steps <= math.ceil(patch * (1 - overlap)))
    assert len(starts) == math.ceil((size - patch) / max(patch * (1 - overlap), 1)) + 1


def test_importance_map_properties() -> None:
    weights = importance_map((8, 16, 12))
    assert importance_map((8, 16, 12)) is weights  # cached per patch shape
    assert weights.dtype == np.float32 and not weights.flags.writeable
    assert weights.min() >= 1e-3 and weights.max() <= 1.0
    for axis in range(3):
        np.testing.assert_allclose(np.flip(weights, axis), weights)
    profile = weights[4, 8, :]  # sigma = 12 / 8 along x, centred at 5.5
    np.testing.assert_allclose(profile[6] / profile[8], np.exp(-(0.5**2 - 2.5**2) / (2 * 1.5**2)), rtol=1e-5)


def test_skip_empty_saves_calls_and_keeps_the_answer() -> None:
    image = np.full((1, 24, 40, 40), -1.0, dtype=np.float32)
    image[0, 8:14, 5:12, 6:15] = 0.9  # the only non-air region
    calls: list[int] = []

    def counted(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape[0])
        return banded(batch)

    full = sliding_window(image, counted, patch=(8, 16, 16), apply_softmax=False, batch_size=1)
    all_calls = len(calls)
    calls.clear()
    skipped = sliding_window(image, counted, patch=(8, 16, 16), apply_softmax=False, batch_size=1,
                             skip_empty=empty_below(-0.5))
    assert 0 < len(calls) < all_calls
    np.testing.assert_array_equal(skipped, full)  # air is background either way


def test_all_windows_empty_needs_num_classes() -> None:
    image = np.full((1, 8, 8, 8), -1.0, dtype=np.float32)
    with pytest.raises(ValueError, match="num_classes"):
        sliding_window(image, banded, patch=(4, 4, 4), skip_empty=empty_below(0.0))
    out = sliding_window(image, banded, patch=(4, 4, 4), skip_empty=empty_below(0.0), num_classes=3)
    np.testing.assert_array_equal(out[0], 1.0)
    np.testing.assert_array_equal(out[1:], 0.0)


def test_progress_reaches_one() -> None:
    fractions: list[float] = []
    sliding_window(_image((20, 20, 20)), banded, patch=(8, 8, 8), progress=fractions.append, batch_size=3)
    windows = len(window_slices((20, 20, 20), (8, 8, 8), 0.5))
    assert windows == 4**3  # steps of at most 4 over 20 - 8 = 12 voxels
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) == math.ceil(windows / 3)


def test_wrong_predictor_shape_is_reported() -> None:
    with pytest.raises(ValueError, match="predictor returned shape"):
        sliding_window(_image((8, 8, 8)), lambda b: b[:, :, :4], patch=(8, 8, 8))


@pytest.mark.slow  # importing torch and MONAI takes seconds
@pytest.mark.parametrize(("shape", "patch", "overlap"), [
    ((40, 48, 60), (16, 32, 24), 0.5),   # window starts coincide with MONAI's
    ((12, 20, 30), (16, 32, 24), 0.5),   # smaller than the patch on two axes (padded with 0 by both)
    ((24, 32, 32), (8, 16, 16), 0.0),
])
def test_agrees_with_monai(shape: tuple[int, int, int], patch: tuple[int, int, int], overlap: float) -> None:
    torch = pytest.importorskip("torch")
    inferers = pytest.importorskip("monai.inferers")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.InstanceNorm3d(4), torch.nn.ReLU(),
                              torch.nn.Conv3d(4, 3, 3, padding=1)).eval()
    image = np.random.default_rng(1).normal(size=(1, *shape)).astype(np.float32)

    def predictor(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(batch)).numpy()

    ours = sliding_window(image, predictor, patch=patch, overlap=overlap, batch_size=2)
    with torch.no_grad():
        theirs = inferers.sliding_window_inference(
            torch.from_numpy(image[None]), patch, 2, lambda x: torch.softmax(net(x), 1), overlap=overlap,
            mode="gaussian", sigma_scale=0.125)[0].numpy()
    assert np.abs(ours - theirs).max() < 1e-4


def _sided_predictor(batch: np.ndarray) -> np.ndarray:
    """A model that names sides by position, as a lung model does: foreground voxels in the low-x half
    of what it sees are 'left' (channel 1), the others 'right' (channel 2); logits are sharp."""
    n, _, z, y, x = batch.shape
    foreground = batch[:, 0] > 0.5
    low_x = np.broadcast_to(np.arange(x) < x / 2, (n, z, y, x))
    logits = np.zeros((n, 3, z, y, x), dtype=np.float32)
    logits[:, 0] = np.where(foreground, -10.0, 10.0)
    logits[:, 1] = np.where(foreground & low_x, 10.0, -10.0)
    logits[:, 2] = np.where(foreground & ~low_x, 10.0, -10.0)
    return logits


def test_tta_keeps_sides_when_told_which_channels_swap() -> None:
    from covseg.engine.postprocess import side_swapped_channels

    image = np.zeros((1, 8, 8, 16), dtype=np.float32)
    image[0, 2:6, 2:6, 1:15] = 1.0  # one blob across the midline: its halves must keep their sides
    swap = side_swapped_channels({0: "background", 1: "lung_left", 2: "lung_right"})
    assert swap == [0, 2, 1]
    plain = sliding_window(image, _sided_predictor, patch=(8, 8, 16)).argmax(axis=0)
    mirrored = sliding_window(image, _sided_predictor, patch=(8, 8, 16), tta=True, x_mirror_channels=swap)
    assert np.array_equal(mirrored.argmax(axis=0), plain)
    assert set(np.unique(plain[2:6, 2:6, 1:15])) == {1, 2}
    # Without the swap, the sides' probabilities average out: the test would catch the old behaviour.
    confused = sliding_window(image, _sided_predictor, patch=(8, 8, 16), tta=True)
    assert confused[1:, 2:6, 2:6, 1:15].max() < 0.6


def test_no_sided_classes_no_swap() -> None:
    from covseg.engine.postprocess import side_swapped_channels

    assert side_swapped_channels({0: "background", 1: "infection_ground_glass"}) is None
    assert side_swapped_channels({0: "background", 1: "lung_right", 2: "liver", 3: "lung_left"}) == [0, 3, 2, 1]


def test_tta_mirrors_only_the_given_axes() -> None:
    image = np.random.default_rng(3).random((1, 8, 8, 8)).astype(np.float32)
    calls: list[int] = []

    def counting(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape[0])
        return np.concatenate([batch, 1.0 - batch], axis=1)

    plain = sliding_window(image, counting, patch=(8, 8, 8))
    assert np.array_equal(sliding_window(image, counting, patch=(8, 8, 8), tta=True, tta_axes=()), plain)
    calls.clear()
    one_axis = sliding_window(image, counting, patch=(8, 8, 8), tta=True, tta_axes=(0,))
    assert len(calls) == 2  # the window and its z mirror
    mirrored = sliding_window(np.ascontiguousarray(image[:, ::-1]), counting, patch=(8, 8, 8))[:, ::-1]
    assert np.allclose(one_axis, 0.5 * (plain + mirrored), atol=1e-6)
