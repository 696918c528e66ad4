"""The peak-memory estimate and the --max-memory guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from covseg.engine.geometry import Geometry
from covseg.engine.memory import MemoryEstimate, check_memory, estimate_memory
from covseg.engine.package import load_package
from covseg.errors import ResourceLimitError
from tests.model_factory import make_package

CT = Geometry(size=(512, 512, 275), spacing=(0.7, 0.7, 1.25), origin=(0.0, 0.0, 0.0))


def test_estimate_grows_with_input_and_model(tmp_path: Path) -> None:
    coarse = load_package(make_package(tmp_path, "lung", spacing_mm=(3.0, 3.0, 3.0), patch=(64, 96, 96),
                                       divisor=(16, 32, 32)))
    fine = load_package(make_package(tmp_path, "lung", name="fine", spacing_mm=(1.0, 1.0, 1.0),
                                     patch=(64, 96, 96), divisor=(16, 32, 32)))
    small = estimate_memory(CT.with_size((256, 256, 100)), [coarse])
    full = estimate_memory(CT, [coarse])
    both = estimate_memory(CT, [coarse, fine])
    assert small.total_mb < full.total_mb < both.total_mb
    assert set(both.parts_mb) == {"process", "input and outputs", "model lung-test", "model fine"}
    assert both.largest_part() == "input and outputs" or both.largest_part().startswith("model")
    # A full CT with a 3 mm lung model sits well under 3 GB (the engine's design target) ...
    assert 500 < full.total_mb < 3000
    # ... and the sequential cascade costs the largest stage, not the sum of all stages.
    assert both.total_mb < full.total_mb + both.parts_mb["model fine"]
    cropped = estimate_memory(CT, [coarse, fine], crop_fractions=[1.0, 0.5])
    assert cropped.total_mb < both.total_mb


def test_tta_and_batch_cost_more(tmp_path: Path) -> None:
    package = load_package(make_package(tmp_path, "lung", patch=(64, 96, 96), divisor=(16, 32, 32)))
    small = CT.with_size((128, 128, 64))  # where the windows, not the input copies, set the peak
    base = estimate_memory(small, [package], batch_size=1).total_mb
    assert estimate_memory(small, [package], batch_size=4).total_mb > base
    assert estimate_memory(small, [package], batch_size=1, tta=True).total_mb > base


def test_check_memory_names_both_numbers() -> None:
    estimate = MemoryEstimate(total_mb=2500.0, parts_mb={"process": 300.0, "model lung": 2200.0})
    check_memory(estimate, None)
    check_memory(estimate, 4000)
    with pytest.raises(ResourceLimitError) as caught:
        check_memory(estimate, 1000)
    message = str(caught.value)
    assert "2500 MB" in message and "1000 MB" in message and "model lung" in message and "\n" not in message
    with pytest.raises(ResourceLimitError, match="1200 MB exceeds --max-memory 1000 MB"):
        check_memory(1200.0, 1000)
