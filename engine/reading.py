"""`read_study`: the one place a study is read and checked (DESIGN.md section 2, stage 1).

Accepts a DICOM file (its whole series is read from its folder), a folder (searched
recursively), a zip of DICOM, an enhanced multi-frame CT file, NIfTI, NRRD and MetaImage. Returns
HU as float32 (z, y, x) on an LPS `Geometry`. Every problem a user can cause is an `InputError`
with one line naming the file, slice, tag or value; the checks and their tolerances are listed in
docs/bad_inputs.md.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path

from covseg.engine.dicom_reading import check_size, read_series
from covseg.engine.dicom_scan import (
    DicomFile,
    Scan,
    SeriesSummary,
    choose_series,
    read_header,
    scan,
    scan_zip,
    summarize,
)
from covseg.engine.read_image import image_format, image_header, read_image
from covseg.engine.read_zip import extract_members, open_zip, safe_members
from covseg.engine.volume import Volume
from covseg.errors import InputError

__all__ = ["SeriesSummary", "list_series", "read_study"]

DEFAULT_MAX_VOXELS = 1_500_000_000
ZIP_OVERHEAD_BYTES = 64 << 20  # headers and non-image members allowed on top of 4 bytes per voxel


def _existing(path: str | os.PathLike[str]) -> Path:
    source = Path(path).expanduser()
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")
    if not os.access(source, os.R_OK):
        raise InputError(f"{source}: cannot be read (permission denied)")
    return source


def _is_zip(path: Path) -> bool:
    if path.suffix.lower() == ".zip":
        return True
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _read_zip(source: Path, series_uid: str | None, force: bool, max_voxels: int) -> Volume:
    """Choose the series from headers read inside the zip, extract only its files, read them."""
    with open_zip(source) as archive, tempfile.TemporaryDirectory(prefix="covseg-zip-") as folder:
        target = Path(folder)
        members = safe_members(archive, source)
        found = scan_zip(archive, members, target, f"{source.name}:")
        files = choose_series(found, str(source), series_uid=series_uid, force=force)
        check_size(files, max_voxels, str(source))
        where = {target.joinpath(*relative.parts): info for info, relative in members}
        extract_members(
            archive, [(where[f.path], f.path) for f in files], source, max_bytes=4 * max_voxels + ZIP_OVERHEAD_BYTES
        )

        def rename(path: Path) -> Path:
            return source / path.relative_to(target)

        return read_series(
            files,
            str(source),
            force=force,
            max_voxels=max_voxels,
            fmt="zip",
            source=source,
            warnings=list(found.warnings),
            rename=rename,
        )


def _folder_or_file(source: Path, series_uid: str | None, force: bool) -> tuple[Scan, list[DicomFile], str]:
    """The scan, the chosen series' files and the label for messages, for a folder or one DICOM file."""
    if source.is_dir():
        found = scan(source)
        if found.seen == 0:
            raise InputError(f"{source}: folder is empty")
        if not found.by_series():
            images = sorted(p for p in source.rglob("*") if p.is_file() and image_format(p))
            if images:
                raise InputError(f"{source}: no DICOM series, but {images[0].name} is an image file: pass it instead")
        return found, choose_series(found, str(source), series_uid=series_uid, force=force), str(source)
    first = read_header(source, source.name)
    if first.is_multiframe and series_uid is None:
        alone = Scan(root=source, files=[first], seen=1, ignored={tag: [first.name] for tag in first.ignored})
        return alone.finish(), [first], str(source)
    found = scan(source.parent, recursive=False)
    if series_uid is not None:
        return found, choose_series(found, str(source.parent), series_uid=series_uid, force=force), str(source)
    files = [f for f in found.files if f.series_uid == first.series_uid and f.is_image]
    if not files:
        raise InputError(f"{source}: not a DICOM image (no Rows/Columns)")
    return found, files, str(source.parent)


def _read_dicom(source: Path, series_uid: str | None, force: bool, max_voxels: int) -> Volume:
    found, files, label = _folder_or_file(source, series_uid, force)
    return read_series(
        files, label, force=force, max_voxels=max_voxels, fmt="dicom", source=source, warnings=list(found.warnings)
    )


def read_study(
    path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    force: bool = False,
    max_voxels: int = DEFAULT_MAX_VOXELS,
) -> Volume:
    """The study at `path` as a HU Volume; `series_uid` picks one of several series, `force` reads non-CT."""
    source = _existing(path)
    if source.is_file() and (fmt := image_format(source)) is not None:
        return read_image(source, fmt, max_voxels=max_voxels)
    if source.is_file() and _is_zip(source):
        return _read_zip(source, series_uid, force, max_voxels)
    return _read_dicom(source, series_uid, force, max_voxels)


def list_series(path: str | os.PathLike[str]) -> list[SeriesSummary]:
    """Every image series under `path` (DICOM file, folder or zip); one entry for an image file."""
    source = _existing(path)
    if source.is_file() and (fmt := image_format(source)) is not None:
        size = image_header(source, fmt).GetSize()
        count = int(size[2]) if len(size) > 2 else 1
        return [SeriesSummary(uid="", description=source.name, modality="", slice_count=count, first_file=source)]
    if source.is_file() and _is_zip(source):
        with open_zip(source) as archive, tempfile.TemporaryDirectory(prefix="covseg-zip-") as folder:
            target = Path(folder)
            found = scan_zip(archive, safe_members(archive, source), target, f"{source.name}:")
            return [
                replace(summarize(uid, files), first_file=source / files[0].path.relative_to(target))
                for uid, files in found.by_series().items()
            ]
    found = scan(source) if source.is_dir() else scan(source.parent, recursive=False)
    return [summarize(uid, files) for uid, files in found.by_series().items()]
