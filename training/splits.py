"""k-fold split files (JSON) made deterministically from case ids and a seed.

Two schemes:
- "kfold": the usual cross-validation, each fold tests on one part and trains on the others
  (80 % train / 20 % test with 5 folds);
- "inverse" (paper 000, section 4.2): each fold *trains* on one part and tests on the others
  (4 scans = 20 % train / 16 scans = 80 % test of the 20 COVID-19-CT-Seg cases).
Across folds the test sets of "kfold" and the training sets of "inverse" are a partition of the cases.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from covseg.errors import InputError

SPLITS_FORMAT = "covseg-splits/1"


class Scheme(StrEnum):
    KFOLD = "kfold"
    INVERSE = "inverse"


PAPER_000 = Scheme.INVERSE


@dataclass(frozen=True)
class Fold:
    index: int
    train: tuple[str, ...]
    test: tuple[str, ...]


@dataclass(frozen=True)
class Splits:
    folds: tuple[Fold, ...]
    seed: int
    scheme: Scheme

    @property
    def case_ids(self) -> tuple[str, ...]:
        return tuple(sorted({c for fold in self.folds for c in (*fold.train, *fold.test)}))

    def fold(self, index: int) -> Fold:
        for fold in self.folds:
            if fold.index == index:
                return fold
        raise InputError(f"fold {index} is not in the split file (folds: {[f.index for f in self.folds]})")


def _unique_ids(case_ids: Iterable[str]) -> list[str]:
    ids = [str(c) for c in case_ids]
    duplicates = sorted(c for c, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise InputError(f"duplicate case ids: {', '.join(duplicates[:5])}")
    return sorted(ids)


def make_splits(case_ids: Iterable[str], *, folds: int = 5, seed: int = 0,
                scheme: Scheme | str = Scheme.KFOLD) -> Splits:
    """Shuffle the sorted ids with `seed` and cut them into `folds` parts of sizes differing by at most one.

    The ids are sorted first so that the result depends only on the set of ids and the seed, not on
    the order a directory listing returned them in.
    """
    scheme = Scheme(scheme)
    ids = _unique_ids(case_ids)
    if folds < 2:
        raise InputError(f"folds must be at least 2, got {folds}")
    if len(ids) < folds:
        raise InputError(f"{len(ids)} cases cannot be split into {folds} folds")
    order = np.random.default_rng(seed).permutation(len(ids))
    parts = [tuple(sorted(ids[i] for i in part)) for part in np.array_split(order, folds)]
    result = []
    for index, part in enumerate(parts):
        rest = tuple(sorted(c for other in parts if other is not part for c in other))
        train, test = (rest, part) if scheme is Scheme.KFOLD else (part, rest)
        result.append(Fold(index=index, train=train, test=test))
    return Splits(folds=tuple(result), seed=seed, scheme=scheme)


def holdout_split(case_ids: Iterable[str], *, validation_fraction: float = 0.2, seed: int = 0) -> Fold:
    """One random train/validation split (paper 000's pre-training: 80 % train, 20 % validation)."""
    if not 0.0 < validation_fraction < 1.0:
        raise InputError(f"validation fraction must be in (0, 1), got {validation_fraction}")
    ids = _unique_ids(case_ids)
    n_val = max(1, round(len(ids) * validation_fraction))
    if n_val >= len(ids):
        raise InputError(f"{len(ids)} cases are too few for a {validation_fraction:.0%} validation split")
    order = np.random.default_rng(seed).permutation(len(ids))
    val = tuple(sorted(ids[i] for i in order[:n_val]))
    train = tuple(sorted(ids[i] for i in order[n_val:]))
    return Fold(index=0, train=train, test=val)


def splits_to_json(splits: Splits) -> dict[str, object]:
    return {
        "format": SPLITS_FORMAT,
        "seed": splits.seed,
        "scheme": splits.scheme.value,
        "folds": [{"fold": f.index, "train": list(f.train), "test": list(f.test)} for f in splits.folds],
    }


def write_splits(splits: Splits, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(splits_to_json(splits), indent=2) + "\n", encoding="utf-8")
    return target


def read_splits(path: str | Path, *, known_ids: Sequence[str] | None = None) -> Splits:
    """Read and check a split file: no case both trained and tested in a fold, all ids known."""
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
        folds = tuple(
            Fold(index=int(f["fold"]), train=tuple(map(str, f["train"])), test=tuple(map(str, f["test"])))
            for f in data["folds"]
        )
        splits = Splits(folds=folds, seed=int(data.get("seed", 0)), scheme=Scheme(data.get("scheme", "kfold")))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{source}: not a readable split file ({error})") from error
    for fold in folds:
        both = set(fold.train) & set(fold.test)
        if both:
            raise InputError(f"{source}: fold {fold.index} trains and tests on {sorted(both)[0]}")
    if known_ids is not None:
        unknown = sorted(set(splits.case_ids) - set(known_ids))
        if unknown:
            raise InputError(f"{source}: case {unknown[0]} is not in the dataset ({len(unknown)} unknown ids)")
    return splits
