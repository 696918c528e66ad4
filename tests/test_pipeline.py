"""`segment`: the model cascade with analytic packages reproduces the phantom truth exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from covseg.engine import pipeline
from covseg.engine.package import ModelPackage, load_package
from covseg.engine.progress import STAGES, OverallProgress
from covseg.engine.volume import Volume
from covseg.labels import Label
from tests.model_factory import make_package
from tests.test_infer_phantom import SPACING, make_phantom

FLIPPED = (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelPackage]:
    root = tmp_path_factory.mktemp("packages")
    return {kind: load_package(make_package(root, kind, spacing_mm=(SPACING,) * 3, patch=(16, 32, 32)))
            for kind in ("lung", "infection", "liver")}


def _segment(volume: Volume, packages: list[ModelPackage], **kwargs: Any) -> pipeline.Segmentation:
    return pipeline.segment(volume, packages, device="cpu", threads=1, **kwargs)


@pytest.mark.parametrize("direction", [(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), FLIPPED])
def test_cascade_reproduces_truth(packages: dict[str, ModelPackage], direction: tuple[float, ...]) -> None:
    phantom = make_phantom(direction)
    # Given in the wrong order on purpose: the cascade sorts lung first.
    result = _segment(phantom.volume, [packages["liver"], packages["infection"], packages["lung"]])
    assert [m.task for m in result.models] == ["lung", "infection", "liver"]
    assert result.ran == {"lung", "infection", "liver"}
    assert np.array_equal(result.labels, phantom.truth)
    assert all(m.provider == "CPUExecutionProvider" and len(m.sha256) == 64 for m in result.models)


def test_infection_model_sees_only_the_lung_box(packages: dict[str, ModelPackage],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    phantom = make_phantom()
    seen: dict[str, Any] = {}
    original = pipeline.preprocess

    def spy(volume: Volume, package: ModelPackage, *, roi_zyx: Any = None) -> Any:
        seen[package.task] = roi_zyx
        return original(volume, package, roi_zyx=roi_zyx)

    monkeypatch.setattr(pipeline, "preprocess", spy)
    hu = phantom.volume.array.copy()
    hu[20:22, 57:59, 40:42] = -850.0  # a lung-dense speck behind the lungs must not widen the box
    _segment(phantom.volume.with_array(hu), [packages["lung"], packages["infection"]])
    assert seen["lung"] is None
    box = seen["infection"]
    lungs = np.isin(phantom.truth, [1, 2, 3])
    z, y, x = np.nonzero(lungs)
    margin = int(np.ceil(pipeline.LUNG_BOX_MARGIN_MM / SPACING))
    for s, idx, n in zip(box, (z, y, x), phantom.truth.shape, strict=True):
        assert s.start == max(idx.min() - margin, 0) and s.stop == min(idx.max() + 1 + margin, n)


def test_no_lungs_skips_infection_with_reason(packages: dict[str, ModelPackage]) -> None:
    phantom = make_phantom()
    hu = phantom.volume.array.copy()
    hu[np.isin(phantom.truth, [1, 2, 3])] = 150.0  # nothing in the lung HU band
    result = _segment(phantom.volume.with_array(hu), [packages["lung"], packages["infection"]])
    assert result.ran == {"lung"}
    assert "no lungs" in result.not_run["infection"]
    assert result.models[1].skipped is not None
    assert not np.isin(result.labels, [1, 2, 3, 4]).any()


def test_consolidation_threshold_is_configurable(packages: dict[str, ModelPackage]) -> None:
    phantom = make_phantom()
    result = _segment(phantom.volume, [packages["lung"], packages["infection"]], consolidation_threshold_hu=-700.0)
    infection = np.isin(phantom.truth, [3, 4])
    assert (result.labels[infection] == Label.INFECTION_CONSOLIDATION).all()  # -600 HU is now dense


def test_progress_stages_in_order_and_overall_monotonic(packages: dict[str, ModelPackage]) -> None:
    events: list[tuple[str, float]] = []
    _segment(make_phantom().volume, [packages["lung"], packages["liver"]], progress=lambda s, f: events.append((s, f)))
    stages = list(dict.fromkeys(s for s, _ in events))
    assert stages == ["lung", "liver", "postprocess"]
    assert all(0.0 <= f <= 1.0 for _, f in events)
    tracker = OverallProgress()
    overall = [tracker.update(s, f) for s, f in events]
    assert overall == sorted(overall) and tracker.update("done", 1.0) == 1.0
    assert set(stages) <= set(STAGES)


def test_segment_refuses_no_models(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        pipeline.segment(make_phantom().volume, [])


def test_resampled_lung_model_gives_close_volumes_on_the_right_sides(tmp_path: Path) -> None:
    """Package spacing differs from the input (resampling both ways, flipped input): each lung within 10%
    (the analytic model's narrow HU band loses partial-volume voxels at the lung surface) and on its side."""
    coarse = load_package(make_package(tmp_path, "lung", spacing_mm=(4.5, 4.0, 5.0), patch=(16, 32, 32)))
    phantom = make_phantom((-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
    labels = _segment(phantom.volume, [coarse]).labels
    lesion = {Label.LUNG_LEFT: Label.INFECTION_GROUND_GLASS, Label.LUNG_RIGHT: Label.INFECTION_CONSOLIDATION}
    for value in (Label.LUNG_LEFT, Label.LUNG_RIGHT):
        truth = np.isin(phantom.truth, [int(value), int(lesion[value])])  # the lung with its lesion (phantom)
        found = labels == value
        assert np.count_nonzero(found) == pytest.approx(np.count_nonzero(truth), rel=0.10)
        assert np.count_nonzero(found & truth) > 0.9 * np.count_nonzero(found)


def test_public_segment_takes_package_folders(packages: dict[str, ModelPackage]) -> None:
    import covseg

    phantom = make_phantom()
    result = covseg.segment(phantom.volume, [packages["lung"].path], device="cpu", threads=1)
    right = np.isin(phantom.truth, [int(Label.LUNG_RIGHT), int(Label.INFECTION_CONSOLIDATION)])  # hole filled
    assert result.ran == {"lung"} and np.array_equal(result.labels == Label.LUNG_RIGHT, right)
