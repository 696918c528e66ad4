"""Turn batch inputs (folders, CSV lists, globs) into studies with stable keys.

Each DICOM series is one study; so is each NIfTI/NRRD/MHA file. DICOM grouping is the reader's
(`covseg.engine.reading.list_series`); `_fallback_series` stands in only while that is missing.
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

from covseg.engine.batch.keys import FILE_SUFFIXES, disambiguate, study_key
from covseg.errors import InputError

_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Study:
    """One unit of batch work. `patient_id` is the raw identifier: it never reaches logs or tables
    unless identifiers are kept (tables hold a pseudonym)."""

    key: str
    path: str  # the file, or the folder holding the series (with series_uid to select it)
    kind: str  # dicom | file
    series_uid: str | None = None
    study_uid: str | None = None
    patient_id: str | None = None
    study_date: str | None = None  # YYYY-MM-DD
    modality: str | None = None
    files: tuple[str, ...] = ()  # what the input fingerprint covers
    skip_reason: str | None = None

    @property
    def file_name(self) -> str | None:
        return Path(self.path).name if self.kind == "file" else None


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


def _series_from_reader(root: Path) -> list[dict[str, Any]] | None:
    """Series under root from the engine reader, or None while the reader has no `list_series`."""
    try:
        from covseg.engine import reading
    except ImportError:
        return None
    lister = getattr(reading, "list_series", None)
    if lister is None:
        return None
    return [_series_record(item) for item in lister(root)]


def _series_record(item: Any) -> dict[str, Any]:
    """A reader series summary (object or mapping) as the fields discovery needs."""
    def get(*names: str) -> Any:
        for name in names:
            value = item.get(name) if isinstance(item, dict) else getattr(item, name, None)
            if value not in (None, ""):
                return value
        return None

    files = tuple(str(f) for f in (get("files", "paths") or ()))
    first = get("first_file", "path")
    return {"uid": str(get("series_instance_uid", "series_uid", "uid")),
            "study_uid": get("study_instance_uid", "study_uid"), "patient_id": get("patient_id"),
            "study_date": get("study_date"), "modality": get("modality"),
            "files": files or ((str(first),) if first else ())}


def _fallback_series(files: Iterable[Path]) -> list[dict[str, Any]]:
    """Group readable DICOM files by SeriesInstanceUID from headers only (until list_series lands)."""
    from pydicom import dcmread

    tags = ["SeriesInstanceUID", "StudyInstanceUID", "PatientID", "StudyDate", "Modality"]
    groups: dict[str, dict[str, Any]] = {}
    for path in files:
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=tags)
        except Exception:  # not DICOM (README, .raw data of an .mhd, ...): not a study file
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            continue
        group = groups.setdefault(uid, {
            "uid": uid, "study_uid": str(ds.get("StudyInstanceUID", "") or "") or None,
            "patient_id": str(ds.get("PatientID", "") or "") or None,
            "study_date": str(ds.get("StudyDate", "") or "") or None,
            "modality": str(ds.get("Modality", "") or "") or None, "files": []})
        group["files"].append(str(path))
    return list(groups.values())


def _dicom_studies(root: Path, others: list[Path]) -> Iterator[Study]:
    series = _series_from_reader(root)
    if series is None:
        series = _fallback_series(others)
    for item in series:
        files = tuple(sorted(item["files"]))
        folder = os.path.commonpath(files) if files else str(root)
        if Path(folder).is_file():
            folder = str(Path(folder).parent)
        modality = item.get("modality")
        skip = f"modality {modality} is not CT" if modality and str(modality).upper() != "CT" else None
        yield Study(key="", path=folder, kind="dicom", series_uid=item["uid"], study_uid=item.get("study_uid"),
                    patient_id=item.get("patient_id"),
                    study_date=normalize_date(item.get("study_date"), f"series {item['uid']}"),
                    modality=modality, files=files, skip_reason=skip)


def _studies_under(path: Path, exclude: Path | None) -> Iterator[Study]:
    if path.is_dir():
        images, others = _walk(path, exclude)
        for image in images:
            yield Study(key="", path=str(image), kind="file", files=(str(image),))
        if others:
            yield from _dicom_studies(path, others)
    elif _is_image_file(path) or not path.exists():
        # A missing path (from a CSV) stays a study: it fails with the reader's message, and the batch goes on.
        yield Study(key="", path=str(path), kind="file", files=(str(path),))
    else:
        yield from _dicom_studies(path.parent, [path])


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
            if ident in found:
                continue
            found[ident] = replace(study, patient_id=patient or study.patient_id, study_date=date or study.study_date)
    studies = list(found.values())
    keys = disambiguate([study_key(series_uid=s.series_uid, path=Path(s.path)) for s in studies],
                        [Path(s.path) for s in studies])
    return sorted((replace(s, key=k) for s, k in zip(studies, keys, strict=True)), key=lambda s: s.key)
