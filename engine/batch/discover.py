"""Turn batch inputs (folders, CSV lists, globs) into studies with stable keys.

Each DICOM series is one study; so is each NIfTI/NRRD/MHA file and each series in a zip. DICOM
grouping is the reader's (`covseg.engine.dicom_scan.scan(...).by_series()`, the same grouping
`covseg.engine.reading.list_series` and `read_study` use); `list_series` alone is not enough
here because it returns no file list (needed for the input fingerprint) and no patient or date.
Series that are not CT (SEG, SR, PET...) become `skipped` studies, so the table says why they
were left out instead of failing the batch.
"""

from __future__ import annotations

import csv
import glob
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from covseg.engine.batch.keys import disambiguate, study_key
from covseg.errors import InputError

_GLOB_CHARS = re.compile(r"[*?\[]")
FILE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class Study:
    """One unit of batch work. `patient_id` is the raw identifier: it never reaches logs or tables
    unless identifiers are kept (tables hold a pseudonym)."""

    key: str
    path: str  # the file, or the folder holding the series (with series_uid to select it)
    kind: str  # dicom | file | zip (a zip of DICOM: path + series_uid)
    series_uid: str | None = None
    study_uid: str | None = None
    patient_id: str | None = None
    study_date: str | None = None  # YYYY-MM-DD
    modality: str | None = None
    files: tuple[str, ...] = ()  # what the input fingerprint covers
    skip_reason: str | None = None

    @property
    def file_name(self) -> str | None:
        return Path(self.path).name if self.kind in ("file", "zip") else None


def normalize_date(value: str | None, where: str) -> str | None:
    """YYYYMMDD or YYYY-MM-DD -> YYYY-MM-DD; empty -> None."""
    text = (value or "").strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})", text)
    if not match:
        raise InputError(f"{where}: study date {text!r} is not YYYY-MM-DD or YYYYMMDD")
    return "-".join(match.groups())


def _is_image_file(path: Path) -> bool:
    return path.name.lower().endswith(FILE_SUFFIXES)


def _image_files(path: Path) -> tuple[str, ...]:
    """The files an image study is made of: a detached header (.mhd, .nhdr) brings its data file
    (same stem: .raw, .zraw, .raw.gz...), so that replacing the pixels alone also changes the fingerprint."""
    if path.suffix.lower() not in (".mhd", ".nhdr") or not path.parent.is_dir():
        return (str(path),)
    siblings = [p for p in path.parent.iterdir() if p.name.split(".")[0] == path.name.split(".")[0] and p != path]
    return (str(path), *sorted(str(p) for p in siblings if p.is_file()))


def _walk(root: Path, exclude: Path | None) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under root, sorted, never descending into `exclude`."""
    images: list[Path] = []
    others: list[Path] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if exclude is None or (here / d).resolve() != exclude)
        for name in sorted(names):
            path = here / name
            (images if _is_image_file(path) else others).append(path)
    return images, others


def _skip_reason(modality: str | None, files: list[Any]) -> str | None:
    if modality and modality.upper() != "CT":
        return f"modality {modality} is not CT"
    if all(f.is_localizer for f in files):
        return "localizer images only"
    return None


def _dicom_studies(root: Path, exclude: Path | None) -> Iterator[Study]:
    """One study per series, grouped by the reader's own header scan (`dicom_scan.scan`)."""
    from covseg.engine.dicom_scan import scan

    found = scan(root) if root.is_dir() else scan(root.parent, recursive=False)
    for uid, files in sorted(found.by_series().items()):
        if root.is_file() and all(f.path != root for f in files):
            continue  # a single file names its own series only
        if exclude is not None:
            files = [f for f in files if not f.path.resolve().is_relative_to(exclude)]
        if not files or not uid:
            continue
        paths = tuple(sorted(str(f.path) for f in files))
        folder = Path(os.path.commonpath(paths))
        folder = folder.parent if folder.is_file() else folder
        first = files[0].dataset
        modality = str(first.get("Modality", "") or "") or None
        yield Study(key="", path=str(folder), kind="dicom", series_uid=uid,
                    study_uid=str(first.get("StudyInstanceUID", "") or "") or None,
                    patient_id=str(first.get("PatientID", "") or "") or None,
                    study_date=normalize_date(str(first.get("StudyDate", "") or ""), f"series {uid}"),
                    modality=modality, files=paths, skip_reason=_skip_reason(modality, files))


def _zip_studies(path: Path) -> Iterator[Study]:
    """Series inside a zip, listed by the reader; the study is the zip plus the series UID."""
    from covseg.engine.reading import list_series

    for summary in list_series(path):
        skip = f"modality {summary.modality} is not CT" if summary.modality and summary.modality != "CT" else None
        yield Study(key="", path=str(path), kind="zip", series_uid=summary.uid or None, modality=summary.modality,
                    files=(str(path),), skip_reason=skip)


def _studies_under(path: Path, exclude: Path | None) -> Iterator[Study]:
    if path.is_dir():
        images, others = _walk(path, exclude)
        for image in images:
            yield Study(key="", path=str(image), kind="file", files=_image_files(image))
        for archive in (p for p in others if p.suffix.lower() == ".zip"):
            yield from _zip_studies(archive)
        if any(p.suffix.lower() != ".zip" for p in others):
            yield from _dicom_studies(path, exclude)
    elif _is_image_file(path) or not path.exists():
        # A missing path (from a CSV) stays a study: it fails with the reader's message, and the batch goes on.
        yield Study(key="", path=str(path), kind="file", files=_image_files(path))
    elif path.suffix.lower() == ".zip":
        yield from _zip_studies(path)
    else:
        yield from _dicom_studies(path, exclude)


def _csv_rows(path: Path) -> Iterator[tuple[Path, str | None, str | None]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise InputError(f"{path}: a batch list needs a 'path' column (found {reader.fieldnames})")
        for number, row in enumerate(reader, start=2):
            value = (row.get("path") or "").strip()
            if not value:
                raise InputError(f"{path}, line {number}: empty 'path'")
            target = Path(value) if Path(value).is_absolute() else path.parent / value
            date = normalize_date(row.get("study_date"), f"{path}, line {number}")
            yield target, (row.get("patient_id") or "").strip() or None, date


def _expand(inputs: Iterable[str]) -> Iterator[tuple[Path, str | None, str | None]]:
    """(path, patient id, study date) for each command-line input, CSV row or glob match."""
    for text in inputs:
        path = Path(text)
        if path.is_file() and path.suffix.lower() == ".csv":
            yield from _csv_rows(path)
        elif path.exists():
            yield path, None, None
        elif _GLOB_CHARS.search(text):
            # glob.glob, not Path.glob: patterns may be absolute (Path.glob takes relative ones only).
            matches = sorted(glob.glob(text, recursive=True))  # noqa: PTH207
            if not matches:
                raise InputError(f"{text}: the pattern matches no file or folder")
            for match in matches:
                yield from _expand([match])
        else:
            raise InputError(f"{text}: no such file or folder")


def discover(inputs: Iterable[str], *, exclude: Path | None = None) -> list[Study]:
    """Every study under the inputs, sorted by key; `exclude` (the batch folder) is never searched."""
    excluded = exclude.resolve() if exclude is not None else None
    found: dict[tuple[str | None, str], Study] = {}
    for path, patient, date in _expand(inputs):
        for study in _studies_under(path, excluded):
            ident = (study.series_uid, str(Path(study.path).resolve()) if study.kind == "file" else study.path)
            old = found.get(ident, study)  # the same study twice (a folder and a CSV row): merge what they tell
            found[ident] = replace(old, patient_id=patient or old.patient_id, study_date=date or old.study_date)
    studies = list(found.values())
    keys = disambiguate([study_key(series_uid=s.series_uid, path=Path(s.path)) for s in studies],
                        [Path(s.path) for s in studies])
    return sorted((replace(s, key=k) for s, k in zip(studies, keys, strict=True)), key=lambda s: s.key)
