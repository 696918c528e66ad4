"""Zips of DICOM: member checks and extracting only the chosen series into a temporary folder.

Headers are read inside the archive (dicom_scan.scan_zip), so a zip holding CT plus eight mask
series extracts only the series read. zipfile's own `extract` sanitises names but silently
rewrites them; covseg refuses instead, so a crafted archive is reported, not half-unpacked.
Members are written with a running byte budget, and members claiming an absurd compression ratio
are refused up front: together they stop zip bombs.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from covseg.errors import InputError

MAX_MEMBERS = 100_000
MAX_RATIO = 200  # a member may not claim to expand more than this (CT deflates about 2-5x)
CHUNK = 1 << 20


def open_zip(zip_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise InputError(f"{zip_path}: not a readable zip archive ({error})") from error


def safe_members(archive: zipfile.ZipFile, zip_path: Path) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Every file member with its relative path; InputError for unsafe names, links or bomb-like ratios."""
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise InputError(f"{zip_path}: {len(members)} members, more than the limit of {MAX_MEMBERS}")
    safe = []
    for info in members:
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or (parts and ":" in parts[0]) or ".." in parts:
            raise InputError(f"{zip_path}: member {info.filename!r} points outside the archive (path traversal)")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InputError(f"{zip_path}: member {info.filename!r} is a symbolic link")
        if info.file_size > MAX_RATIO * max(info.compress_size, 1) and info.file_size > CHUNK:
            ratio = info.file_size // max(info.compress_size, 1)
            raise InputError(f"{zip_path}: member {info.filename!r} expands {ratio}x (zip bomb?)")
        if not info.is_dir() and parts:
            safe.append((info, PurePosixPath(*parts)))
    return safe


def extract_members(
    archive: zipfile.ZipFile, members: list[tuple[zipfile.ZipInfo, Path]], zip_path: Path, *, max_bytes: int
) -> None:
    """Write the given members to their paths, stopping when more than `max_bytes` would be written."""
    budget = max_bytes
    for info, destination in members:
        destination.parent.mkdir(parents=True, exist_ok=True)
        budget = _copy_member(archive, info, destination, budget, zip_path)


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
