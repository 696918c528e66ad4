"""Atomic file replacement: a reader sees the old file or the new one, never half of one.

The content goes to a temporary file in the same folder (same file system, so `os.replace` is an
atomic rename), is flushed and fsynced, then renamed over the target; the folder is fsynced so the
rename survives a power cut. On any exception the temporary file is removed and the old file stays.
A kill -9 can leave a `.<name>.*.tmp` file behind, never a damaged target; `clean_stale` removes those.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _fsync_folder(folder: Path) -> None:
    # Directories cannot be opened for fsync on Windows; the rename is still atomic there.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path to write; renamed onto `target` when the block ends without an exception."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    temp = Path(name)
    try:
        yield temp
        with temp.open("rb+") as handle:
            os.fsync(handle.fileno())
        temp.replace(target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)


def write_text_atomic(target: Path, write: Callable[[IO[str]], None]) -> None:
    """Write a text file through `write(handle)` atomically."""
    with atomic_path(target) as temp, temp.open("w", encoding="utf-8", newline="") as handle:
        write(handle)


def write_json_atomic(target: Path, data: Any) -> None:
    write_text_atomic(target, lambda handle: json.dump(data, handle, indent=2, sort_keys=True))


def clean_stale(folder: Path, name: str) -> None:
    """Remove temporaries a killed writer of `name` left in `folder`."""
    for stale in folder.glob(f".{name}.*.tmp"):
        stale.unlink(missing_ok=True)
