"""Stable study keys and the deterministic shard partition.

A key names the study's output folder DIR/studies/<key>/ and must not change between runs,
machines or shards, or resume and merge would not find earlier work:

- DICOM series: ``dicom-`` + the first 20 hex digits of sha256(SeriesInstanceUID). The UID is the
  series' identity wherever its files lie (moving or copying the input keeps the key); hashing
  gives a fixed-length, filesystem-safe name (UIDs may be 64 characters).
- Files (NIfTI, NRRD, MHA): ``file-`` + the first 20 hex digits of sha256(resolved path). Not the
  file name: clinical exports often name files after the patient, and keys appear in folder names
  and progress logs, which `--anonymize` must keep free of identifiers (the table has the name).

Collisions: the same SeriesInstanceUID found in two places (a copy of a series, or a series the
reader splits into stacks) would share a key; `disambiguate` then appends a hash of each one's
path to every member of the group, so all keys stay unique and still depend only on the inputs.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from pathlib import Path

from covseg.errors import CovsegError


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def study_key(*, series_uid: str | None, path: Path) -> str:
    """The stable key of a DICOM series (by UID) or of an image file (by resolved path)."""
    if series_uid:
        return f"dicom-{_sha(series_uid)[:20]}"
    return f"file-{_sha(str(path.resolve()))[:20]}"


def disambiguate(keys: list[str], paths: list[Path]) -> list[str]:
    """Unique keys: members of a group sharing a key get a suffix hashed from their resolved path."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        groups[key].append(index)
    result = list(keys)
    for key, members in groups.items():
        if len(members) > 1:
            for index in members:
                result[index] = f"{key}-{_sha(str(paths[index].resolve()))[:8]}"
    return result


def shard_of(key: str, count: int) -> int:
    """The shard (1..count) a key belongs to: a hash partition, independent of input order."""
    return int(_sha(key)[:16], 16) % count + 1


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` -> (K, N) with 1 <= K <= N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ShardError(f"--shard {text!r} is not of the form K/N (for example 2/8)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ShardError(f"--shard {text!r}: K must be between 1 and N")
    return index, count


class ShardError(CovsegError):
    """A malformed --shard value (usage error)."""

    exit_code = 2
    kind = "usage"
