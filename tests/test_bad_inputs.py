"""The bad-input corpus (tests/bad_inputs.py): each case fails or warns as documented, in one line."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import CASES, DOC_HEAD, DOC_TAIL, TABLE, Case, render_table, run_corpus, write_series

from covseg.engine.reading import read_study
from covseg.errors import InputError


def test_corpus_is_large_and_distinct() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case(case: Case, tmp_path: Path) -> None:
    reason = case.skip()
    if reason:
        pytest.skip(reason)
    path = case.build(tmp_path)
    if case.outcome == "InputError":
        with pytest.raises(InputError) as caught:
            read_study(path, **case.kwargs)
        message = str(caught.value)
    else:
        volume = read_study(path, **case.kwargs)
        message = " | ".join(volume.info.warnings)
        assert volume.array.ndim == 3 and volume.array.dtype == np.float32
        assert np.isfinite(volume.array).all()
        assert bool(volume.info.warnings) == (case.outcome == "warning")
    assert "\n" not in message
    for expected in case.expect:
        assert expected in message, f"{expected!r} not in {message!r}"


@pytest.mark.parametrize("name", ["absurd_dimensions", "nifti_header_absurd"])
def test_absurd_sizes_are_refused_before_allocating(name: str, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.name == name)
    path = case.build(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="limit"):
            read_study(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20  # a 65535 x 65535 slice alone would be 8 GiB


def test_valid_series_reads_exactly(tmp_path: Path) -> None:
    """The corpus's base series is good: HU, order along the normal and geometry as written."""
    from bad_inputs import phantom

    write_series(tmp_path / "s")
    volume = read_study(tmp_path / "s")
    np.testing.assert_array_equal(volume.array, phantom(5, 12, 10).astype(np.float32))
    assert volume.geometry.size == (10, 12, 5)
    assert np.allclose(volume.geometry.spacing, (0.7, 0.8, 2.5))
    assert np.allclose(volume.geometry.origin, (-5, -4, 10))
    assert volume.info.warnings == ()
    assert [p.name for p in volume.info.source_files] == [f"a{k:03d}.dcm" for k in range(5)]
    assert volume.info.study_date == "2020-04-01" and volume.info.series_number == 7
    assert volume.info.patient_id == "BAD001" and volume.info.modality == "CT"


@pytest.mark.slow
def test_generated_table_is_current() -> None:
    """docs/bad_inputs.md is what `python tests/bad_inputs.py` writes today."""
    expected = DOC_HEAD + render_table(run_corpus()) + DOC_TAIL
    assert TABLE.read_text() == expected, "regenerate with: python tests/bad_inputs.py"


def test_pixel_padding_becomes_air(tmp_path: Path) -> None:
    def pad(k: int, ds: object) -> None:
        ds.PixelPaddingValue = 0  # type: ignore[attr-defined]
        data = bytearray(ds.PixelData)  # type: ignore[attr-defined]
        data[:4] = bytes(4)  # first two pixels stored as 0, the padding value
        ds.PixelData = bytes(data)  # type: ignore[attr-defined]

    write_series(tmp_path / "s", mutate=pad)
    volume = read_study(tmp_path / "s")
    assert (volume.array[:, 0, :2] == -1024).all()
    assert (volume.array[:, 0, 2] == -1000).all()
