"""Operating points of two-class models: the shift equals a threshold, on the model grid and after
linear resampling; packages state it, the export stage sets it, the cascade applies it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from covseg.engine import pipeline
from covseg.engine.decision import apply_threshold, decision_threshold
from covseg.engine.geometry import Geometry
from covseg.engine.package import load_package
from covseg.engine.volume import StudyInfo, Volume
from covseg.errors import ModelPackageError
from covseg.export.operating_point import set_operating_point
from covseg.labels import Label
from tests.model_factory import NORMALIZATION, SCALE, make_package

LIVER_HU = 50.0  # 10 HU inside the analytic liver band [40, 80): foreground probability ~0.75


def _pair(foreground: np.ndarray) -> np.ndarray:
    return np.stack([1.0 - foreground, foreground]).astype(np.float32)


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.7, 0.93])
def test_shifted_argmax_is_the_threshold(threshold: float) -> None:
    foreground = np.random.default_rng(1).random((6, 7, 8)).astype(np.float32)
    shifted = apply_threshold(_pair(foreground), threshold)
    assert np.array_equal(shifted.argmax(axis=0) == 1, foreground > threshold)


def test_shift_survives_linear_resampling() -> None:
    """The engine resamples probabilities (linearly) before the argmax: the result must equal the
    threshold of the resampled foreground probability."""
    foreground = ndimage.gaussian_filter(np.random.default_rng(2).random((8, 10, 12)), 1.5).astype(np.float32)
    foreground = (foreground - foreground.min()) / np.ptp(foreground)
    shifted = apply_threshold(_pair(foreground), 0.6)
    resampled = np.stack([ndimage.zoom(c, 2.5, order=1) for c in shifted])
    expected = ndimage.zoom(foreground, 2.5, order=1) > 0.6
    assert np.array_equal(resampled.argmax(axis=0) == 1, expected)


def test_three_classes_refused() -> None:
    with pytest.raises(ValueError, match="two classes"):
        apply_threshold(np.zeros((3, 2, 2, 2), np.float32), 0.7)


def _two_class_infection(root: Path) -> Path:
    """The analytic liver band relabelled as a two-class infection model: probability ~0.75 at 50 HU."""
    return make_package(root, "liver", name="infection2-test", task="infection",
                        classes={0: "background", 1: "infection_ground_glass"}, crop="none")


def test_package_states_its_threshold_and_the_override_wins(tmp_path: Path) -> None:
    folder = set_operating_point(_two_class_infection(tmp_path / "a"), tmp_path / "b", 0.8, version="0.0.2",
                                 chosen_on="a test")
    package = load_package(tmp_path / "b")
    assert folder["output"]["threshold"] == package.threshold == 0.8
    assert package.version == "0.0.2" and "a test" in (tmp_path / "b" / "MODEL_CARD.md").read_text()
    assert decision_threshold(package, None) == 0.8
    assert decision_threshold(package, 0.3) == 0.3
    liver = load_package(make_package(tmp_path / "c", "liver"))
    assert decision_threshold(liver, 0.3) is None  # the override is for infection models only


@pytest.mark.parametrize(("value", "message"), [(1.0, "strictly between"), (0.0, "strictly between"),
                                                ("high", "finite number")])
def test_bad_threshold_in_model_json_refused(tmp_path: Path, value: object, message: str) -> None:
    folder = make_package(tmp_path, "liver", edit=lambda meta: meta["output"].update(threshold=value))
    with pytest.raises(ModelPackageError, match=message):
        load_package(folder)


def test_threshold_on_a_three_class_model_refused(tmp_path: Path) -> None:
    folder = make_package(tmp_path, "lung", edit=lambda meta: meta["output"].update(threshold=0.7))
    with pytest.raises(ModelPackageError, match="two-class"):
        load_package(folder)
    with pytest.raises(ModelPackageError, match="two-class"):
        set_operating_point(make_package(tmp_path / "x", "lung"), tmp_path / "y", 0.7, version="1", chosen_on="-")
    assert not (tmp_path / "y").exists()


def _block_volume() -> Volume:
    """Air with a 10 x 12 x 12 block at LIVER_HU: the analytic model's probability there is known."""
    hu = np.full((24, 32, 32), -1000, dtype=np.int16)
    hu[7:17, 10:22, 10:22] = int(LIVER_HU)
    return Volume(hu, Geometry(size=(32, 32, 24), spacing=(3.0, 3.0, 3.0), origin=(0.0, 0.0, 0.0)),
                  StudyInfo(format="array", modality="CT"))


@pytest.mark.parametrize(("threshold", "found"), [(None, True), (0.7, True), (0.8, False)])
def test_cascade_applies_the_infection_threshold(tmp_path: Path, threshold: float | None, found: bool) -> None:
    inside = min(LIVER_HU - 40.0, 80.0 - LIVER_HU) / NORMALIZATION.std
    probability = 1.0 / (1.0 + np.exp(-SCALE * inside))
    assert 0.7 < probability < 0.8  # the analytic truth the parameters rely on
    package = load_package(_two_class_infection(tmp_path))
    result = pipeline.segment(_block_volume(), [package], device="cpu", threads=1, infection_threshold=threshold)
    infection = np.isin(result.labels, [int(Label.INFECTION_GROUND_GLASS), int(Label.INFECTION_CONSOLIDATION)])
    assert infection.sum() == (10 * 12 * 12 if found else 0)
    assert result.models[0].threshold == threshold
    assert json.loads(json.dumps(result.models[0].as_report())).get("threshold") == threshold


def test_segment_refuses_a_threshold_outside_0_1(tmp_path: Path) -> None:
    package = load_package(_two_class_infection(tmp_path))
    with pytest.raises(ValueError, match="--infection-threshold"):
        pipeline.segment(_block_volume(), [package], device="cpu", threads=1, infection_threshold=1.5)


def test_mirror_axes_stated_by_a_package_and_checked(tmp_path: Path) -> None:
    from covseg.export.operating_point import rewrite_metadata

    source = make_package(tmp_path / "a", "lung")
    rewrite_metadata(source, tmp_path / "b", lambda meta: meta["input"].update(mirror_axes=[2, 0]))
    assert load_package(tmp_path / "b").mirror_axes == (0, 2)
    assert load_package(source).mirror_axes is None  # older packages: not stated
    for bad in ([3], [0, 0], "x", [True]):
        folder = make_package(tmp_path / f"bad{bad!s}", "lung", edit=lambda meta, b=bad: meta["input"].update(
            mirror_axes=b))
        with pytest.raises(ModelPackageError, match="mirror_axes"):
            load_package(folder)
