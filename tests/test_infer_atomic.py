"""Atomic output folders and the progress tracker, without models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from covseg.engine.atomic import atomic_output_dir, check_output_dir
from covseg.engine.progress import STAGES, OverallProgress
from covseg.errors import OutputError


def _hidden(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".covseg-")]


def test_complete_block_renames_into_place(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out"
    with atomic_output_dir(target, overwrite=False) as folder:
        assert folder.parent == target.parent and not target.exists()
        (folder / "x.txt").write_text("x")
    assert (target / "x.txt").read_text() == "x" and not _hidden(target.parent)


def test_failure_removes_temp_and_created_parents(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(KeyboardInterrupt), atomic_output_dir(target, overwrite=False) as folder:
        (folder / "x.txt").write_text("x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_overwrite_swaps_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_output_dir(target, overwrite=True) as folder:
        (folder / "new.txt").write_text("new")
        raise RuntimeError("boom")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with atomic_output_dir(target, overwrite=True) as folder:
        (folder / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"] and not _hidden(tmp_path)


def test_refusals_name_the_culprit(tmp_path: Path) -> None:
    (tmp_path / "exists").mkdir()
    with pytest.raises(OutputError, match="already exists"):
        check_output_dir(tmp_path / "exists", overwrite=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        check_output_dir(tmp_path / "file", overwrite=True)
    with pytest.raises(OutputError, match=str(tmp_path / "file")):
        check_output_dir(tmp_path / "file" / "out", overwrite=False)
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputError, match="not writable"):
            check_output_dir(locked / "out", overwrite=False)


def test_overall_progress_monotonic_and_complete() -> None:
    tracker = OverallProgress()
    values = [tracker.update(stage, f) for stage in STAGES for f in (0.0, 0.5, 1.0)]
    assert values == sorted(values) and values[-1] == pytest.approx(1.0)
    assert tracker.update("lung", 0.0) == values[-1]  # a late report never moves it back
    other = OverallProgress()
    skipped = [other.update(s, 1.0) for s in ("read", "lung", "postprocess", "write")]  # infection, liver skipped
    assert skipped == sorted(skipped) and skipped[-1] == pytest.approx(1.0)
    assert other.update("lobes", 0.5) == skipped[-1]  # an unknown stage is accepted
    assert other.update("done", 1.0) == 1.0
