"""The run-level bad-input corpus (tests/bad_runs.py): exit code, one line, nothing left, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_runs import CASES, TABLE, RunCase, make_study, run_case, table_text

from covseg.cli import run


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_study(tmp_path_factory.mktemp("bad-runs"))


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case(case: RunCase, study: Path, tmp_path: Path) -> None:
    reference, work = tmp_path / "reference", tmp_path / "run"
    reference.mkdir()
    work.mkdir()
    expected = case.build(reference, study)  # the files the case itself makes, without running covseg
    code, err = run_case(run, case, work, study)
    assert code == case.code, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    if case.code == 2:
        assert lines and lines[-1].startswith("Error:"), err
    else:
        assert len(lines) == 1 and lines[0].startswith("covseg: "), err
    left = _files(work) - _files(reference)
    assert not left, f"left behind: {sorted(left)}"
    for name, content in expected.keep.items():
        assert (work / expected.out.relative_to(reference) / name).read_text() == content


def test_corpus_is_distinct_and_covers_every_error_class() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names)) and len(CASES) >= 15
    assert {case.code for case in CASES} >= {2, 3, 4, 5, 6, 7, 130}


@pytest.mark.slow
def test_docs_table_is_current(study: Path, tmp_path: Path) -> None:
    assert TABLE.read_text() == table_text(study, tmp_path), \
        "docs/bad_runs.md is out of date: run python tests/bad_runs.py"
