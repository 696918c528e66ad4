"""Atomic output folders: all outputs appear together or not at all (DESIGN.md section 4).

Everything is written into a hidden temporary folder beside the target (same file system, so the
final rename is atomic); on success it is renamed onto the target. On any failure, KeyboardInterrupt
included, the temporary folder is removed and an existing target is left untouched. With overwrite,
the old folder is moved aside only once the new one is complete, and restored if the swap fails.
Missing parent folders are created, and removed again (when still empty) if the run fails.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from covseg.errors import OutputError

TEMP_PREFIX = ".covseg-tmp-"
OLD_PREFIX = ".covseg-old-"


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(out_dir: Path, *, overwrite: bool) -> Path:
    """Refuse an existing target without overwrite, a file in its place, or a folder we cannot write.

    Called before any work so that a long run does not fail at its end. Missing parent folders are
    fine (they are created when the outputs are written) if the nearest existing one is writable.
    """
    target = Path(out_dir).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise OutputError(f"{target} exists and is not a folder")
    if target.exists() and not overwrite:
        raise OutputError(f"{target} already exists; pass --overwrite to replace it")
    ancestor = _existing_ancestor(target.parent)
    if not ancestor.is_dir():
        raise OutputError(f"cannot create the output folder {target}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"the folder {ancestor} is not writable")
    return target


def _make_parents(parent: Path) -> list[Path]:
    """Create missing parent folders; return those created, deepest first (to remove them on failure)."""
    missing = []
    folder = parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise output_error(error, parent) from error
    return missing


def output_error(error: OSError, path: Path) -> OutputError:
    """A one-line OutputError naming the file for an OSError raised while writing it."""
    if error.errno == errno.ENOSPC:
        return OutputError(f"disk full while writing {path}")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write {path}: permission denied")
    return OutputError(f"cannot write {path}: {error.strerror or error}")


def _swap_in(temp: Path, target: Path) -> None:
    if not target.exists():
        temp.rename(target)
        return
    old = Path(tempfile.mkdtemp(prefix=OLD_PREFIX + target.name + "-", dir=target.parent))
    old.rmdir()
    target.rename(old)
    try:
        temp.rename(target)
    except BaseException:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_output_dir(out_dir: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder to write into; it becomes `out_dir` when the block completes."""
    target = check_output_dir(out_dir, overwrite=overwrite)
    created = _make_parents(target.parent)
    success = False
    try:
        try:
            temp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX + target.name + "-", dir=target.parent))
        except OSError as error:
            raise output_error(error, target.parent) from error
        try:
            yield temp
            if target.exists() and not overwrite:  # created by someone else while we worked
                raise OutputError(f"{target} appeared while covseg was running; pass --overwrite to replace it")
            try:
                _swap_in(temp, target)
            except OSError as error:
                raise output_error(error, target) from error
            success = True
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)
    finally:
        if not success:
            for folder in created:  # deepest first; only folders we made and that stayed empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
