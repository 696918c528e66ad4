"""Extracting a zip of DICOM files safely into a temporary folder.

zipfile's own `extract` sanitises names but silently rewrites them; covseg refuses instead, so a
crafted archive is reported, not half-unpacked. Members are written one by one with a running
byte budget, which stops zip bombs (a tiny archive expanding to gigabytes) while they expand.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from covseg.errors import InputError

MAX_MEMBERS = 100_000
MAX_RATIO = 200  # a member may not claim to expand more than this (CT deflates about 2-5x)
CHUNK = 1 << 20


def _member_path(info: zipfile.ZipInfo, zip_path: Path, target: Path) -> Path | None:
    """Where a member goes under `target`; None for folders; InputError for unsafe names or links."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (parts and ":" in parts[0]) or ".." in parts:
        raise InputError(f"{zip_path}: member {info.filename!r} points outside the archive (path traversal)")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise InputError(f"{zip_path}: member {info.filename!r} is a symbolic link")
    if info.is_dir() or not parts:
        return None
    return target.joinpath(*parts)


def extract_zip(zip_path: Path, target: Path, *, max_bytes: int) -> list[Path]:
    """Extract every member of `zip_path` into `target`; InputError naming the member at fault."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise InputError(f"{zip_path}: not a readable zip archive ({error})") from error
    written: list[Path] = []
    budget = max_bytes
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise InputError(f"{zip_path}: {len(members)} members, more than the limit of {MAX_MEMBERS}")
        for info in members:
            destination = _member_path(info, zip_path, target)
            if destination is None:
                continue
            if info.file_size > MAX_RATIO * max(info.compress_size, 1) and info.file_size > CHUNK:
                ratio = info.file_size // max(info.compress_size, 1)
                raise InputError(f"{zip_path}: member {info.filename!r} expands {ratio}x (zip bomb?)")
            destination.parent.mkdir(parents=True, exist_ok=True)
            budget = _copy_member(archive, info, destination, budget, zip_path)
            written.append(destination)
    return written


def _copy_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, destination: Path, budget: int, zip_path: Path
) -> int:
    try:
        with archive.open(info) as source, destination.open("wb") as sink:
            while chunk := source.read(CHUNK):
                budget -= len(chunk)
                if budget < 0:
                    raise InputError(f"{zip_path}: contents exceed the extraction limit at member {info.filename!r}")
                sink.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as error:
        raise InputError(f"{zip_path}: member {info.filename!r} cannot be extracted ({error})") from error
    return budget


def remove_tree(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
