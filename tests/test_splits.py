"""Split files: partitions, paper 000's 20 % / 80 % setting, determinism and checks when read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from covseg.errors import InputError
from covseg.training.splits import Scheme, holdout_split, make_splits, read_splits, write_splits

IDS = [f"case_{i:02d}" for i in range(20)]


def test_kfold_tests_partition_the_cases() -> None:
    splits = make_splits(IDS, folds=5, seed=1)
    tests = [set(f.test) for f in splits.folds]
    assert sorted(c for t in tests for c in t) == sorted(IDS)  # every case tested exactly once
    for fold in splits.folds:
        assert len(fold.test) == 4 and len(fold.train) == 16
        assert set(fold.train) | set(fold.test) == set(IDS) and not set(fold.train) & set(fold.test)


def test_paper_000_trains_on_20_percent_and_tests_on_80() -> None:
    splits = make_splits(IDS, folds=5, seed=0, scheme=Scheme.INVERSE)
    assert all(len(f.train) == 4 and len(f.test) == 16 for f in splits.folds)
    assert sorted(c for f in splits.folds for c in f.train) == sorted(IDS)
    assert all(not set(f.train) & set(f.test) for f in splits.folds)


def test_uneven_sizes_differ_by_at_most_one() -> None:
    sizes = [len(f.test) for f in make_splits(IDS[:13], folds=5).folds]
    assert sum(sizes) == 13 and max(sizes) - min(sizes) <= 1


def test_deterministic_in_seed_not_in_input_order() -> None:
    a = make_splits(IDS, seed=7)
    b = make_splits(list(reversed(IDS)), seed=7)
    assert a == b
    assert make_splits(IDS, seed=8) != a


def test_round_trip_and_validation(tmp_path: Path) -> None:
    splits = make_splits(IDS, folds=4, seed=3, scheme="inverse")
    path = write_splits(splits, tmp_path / "splits.json")
    assert read_splits(path, known_ids=IDS) == splits
    with pytest.raises(InputError, match="not in the dataset"):
        read_splits(path, known_ids=IDS[:-1])
    data = json.loads(path.read_text())
    data["folds"][0]["test"].append(data["folds"][0]["train"][0])
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="trains and tests"):
        read_splits(path)


def test_errors_and_holdout() -> None:
    with pytest.raises(InputError, match="duplicate"):
        make_splits(["a", "a", "b"], folds=2)
    with pytest.raises(InputError, match="cannot be split"):
        make_splits(["a", "b"], folds=3)
    hold = holdout_split(IDS, validation_fraction=0.2, seed=0)
    assert len(hold.test) == 4 and len(hold.train) == 16 and not set(hold.train) & set(hold.test)
