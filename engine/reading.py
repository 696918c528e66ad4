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
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from covseg.engine.dicom_reading import read_series
from covseg.engine.dicom_scan import DicomFile, Scan, SeriesSummary, choose_series, read_header, scan, summarize
from covseg.engine.read_image import _header, image_format, read_image
from covseg.engine.read_zip import extract_zip
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


def _with_zip(source: Path, max_voxels: int, work: Callable[[Path, str, Callable[[Path], Path]], Volume]) -> Volume:
    """Run `work` on the zip's contents, extracted to a temporary folder that is always removed."""
    with tempfile.TemporaryDirectory(prefix="covseg-zip-") as folder:
        target = Path(folder)
        extract_zip(source, target, max_bytes=4 * max_voxels + ZIP_OVERHEAD_BYTES)

        def rename(path: Path) -> Path:
            return source / path.relative_to(target)

        return work(target, f"{source.name}:", rename)


def _scan_input(source: Path, prefix: str = "") -> tuple[Scan, str]:
    if source.is_dir():
        found = scan(source, prefix=prefix)
        if found.seen == 0:
            raise InputError(f"{prefix or source}: folder is empty")
        return found, prefix.rstrip(":") or str(source)
    first = read_header(source, source.name)
    if first.n_frames > 1:
        return Scan(root=source, files=[first], seen=1), str(source)
    siblings = scan(source.parent, recursive=False)
    return siblings, str(source.parent)


def _read_dicom(
    source: Path,
    fmt: str,
    series_uid: str | None,
    force: bool,
    max_voxels: int,
    prefix: str = "",
    rename: Callable[[Path], Path] = lambda p: p,
) -> Volume:
    found, label = _scan_input(source, prefix)
    if source.is_file() and series_uid is None:
        own = read_header(source, source.name).series_uid
        files: list[DicomFile] = [f for f in found.files if f.series_uid == own and f.is_image]
        if not files:
            raise InputError(f"{source}: not a DICOM image (no Rows/Columns)")
    else:
        files = choose_series(found, label, series_uid=series_uid, force=force)
    return read_series(
        files,
        label,
        force=force,
        max_voxels=max_voxels,
        fmt=fmt,
        source=rename(source),
        warnings=list(found.warnings),
        rename=rename,
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

        def work(folder: Path, prefix: str, rename: Callable[[Path], Path]) -> Volume:
            volume = _read_dicom(folder, "zip", series_uid, force, max_voxels, prefix, rename)
            return Volume(volume.array, volume.geometry, replace(volume.info, source_path=source))

        return _with_zip(source, max_voxels, work)
    return _read_dicom(source, "dicom", series_uid, force, max_voxels)


def list_series(path: str | os.PathLike[str]) -> list[SeriesSummary]:
    """Every image series under `path` (DICOM file, folder or zip); one entry for an image file."""
    source = _existing(path)
    if source.is_file() and (fmt := image_format(source)) is not None:
        size = _header(source, fmt).GetSize()
        count = int(size[2]) if len(size) > 2 else 1
        return [SeriesSummary(uid="", description=source.name, modality="", slice_count=count, first_file=source)]
    if source.is_file() and _is_zip(source):
        with tempfile.TemporaryDirectory(prefix="covseg-zip-") as folder:
            target = Path(folder)
            extract_zip(source, target, max_bytes=4 * DEFAULT_MAX_VOXELS + ZIP_OVERHEAD_BYTES)
            found, _ = _scan_input(target, f"{source.name}:")
            return [
                replace(summarize(uid, files), first_file=source / files[0].path.relative_to(target))
                for uid, files in found.by_series().items()
            ]
    found, _ = _scan_input(source)
    return [summarize(uid, files) for uid, files in found.by_series().items()]
