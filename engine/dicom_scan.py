"""Finding DICOM files and grouping them into series, from headers only (no pixel data is read).

Every file under the input is opened with pydicom up to its pixel data; what cannot be read is
skipped with a warning (the series it belonged to is then checked for the gap it leaves), so one
bad file among good slices does not stop a study. Choosing the series lives here too, so that
the "several series" error and `list_series` show the same candidates.
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

from pydicom import Dataset, FileMetaDataset, dcmread
from pydicom.errors import BytesLengthException, InvalidDicomError

from covseg.errors import InputError

# File name endings that announce DICOM: a file so named that cannot be read earns a warning,
# any other unreadable file (README, XML annotations, licences) is skipped silently.
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima", ".dic")
# Objects without pixel data: reaching their end without Pixel Data is normal, not truncation.
NON_IMAGE_MODALITIES = frozenset(
    {"SR", "PR", "KO", "DOC", "REG", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "AU", "ECG", "HD", "FID", "PLAN"}
)
NON_IMAGE_CLASSES = (
    "1.2.840.10008.1.3.10",  # DICOMDIR
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports, key objects
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated documents
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, registration, fiducials
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT structure set
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT plan
)
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
ENHANCED_CT_CLASSES = ("1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2")
# Third-party parsers raise many exception types on corrupt bytes; these are the ones a damaged
# file produces (found by tests/test_bad_inputs_fuzz.py), each turned into a skip or InputError.
PARSE_ERRORS: tuple[type[BaseException], ...] = (
    InvalidDicomError,
    BytesLengthException,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    NotImplementedError,
    OverflowError,
    EOFError,
    OSError,
    struct.error,
    UnicodeError,
    RecursionError,
    zipfile.BadZipFile,
)


@dataclass(frozen=True)
class DicomFile:
    """One readable DICOM file: its header (no pixel data) and where it is."""

    path: Path
    name: str  # how messages name it (relative to the input, or zip:member)
    dataset: Dataset
    header_bytes: int  # bytes before the pixel data element, for the truncation check
    ignored: tuple[str, ...] = ()  # tags whose values could not be parsed (removed from `dataset`)

    @property
    def series_uid(self) -> str:
        return str(self.dataset.get("SeriesInstanceUID", "") or "")

    @property
    def modality(self) -> str:
        return str(self.dataset.get("Modality", "") or "").upper()

    @property
    def sop_class(self) -> str:
        value = self.dataset.get("SOPClassUID") or self.dataset.file_meta.get("MediaStorageSOPClassUID", "")
        return str(value or "")

    @property
    def transfer_syntax(self) -> str:
        return str(self.dataset.file_meta.get("TransferSyntaxUID", "") or "")

    @property
    def image_type(self) -> tuple[str, ...]:
        value = self.dataset.get("ImageType") or ()
        if isinstance(value, str):
            value = value.split("\\")
        return tuple(str(v).upper() for v in value)

    @property
    def is_image(self) -> bool:
        return "Rows" in self.dataset and "Columns" in self.dataset

    @property
    def n_frames(self) -> int:
        try:
            return max(1, int(self.dataset.get("NumberOfFrames", 1) or 1))
        except (TypeError, ValueError):
            return 1

    @property
    def is_multiframe(self) -> bool:
        """Enhanced (functional-group) layout: several frames, or one frame described by groups."""
        return self.n_frames > 1 or "PerFrameFunctionalGroupsSequence" in self.dataset

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type


@dataclass(frozen=True)
class SeriesSummary:
    """One series found under an input, as listed in the "several series" error."""

    uid: str
    description: str
    modality: str
    slice_count: int
    first_file: Path


@dataclass
class Scan:
    """All readable DICOM files under an input, plus the warnings about those skipped."""

    root: Path
    files: list[DicomFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seen: int = 0
    ignored: dict[str, list[str]] = field(default_factory=dict)  # unparseable tag -> files

    def finish(self) -> Scan:
        """Add one warning per unparseable tag (not one per file) and return self."""
        for tag, names in self.ignored.items():
            self.warnings.append(f"ignored unparseable element {tag} in {len(names)} file(s), e.g. {names[0]}")
        self.ignored = {}
        return self

    def by_series(self) -> dict[str, list[DicomFile]]:
        groups: dict[str, list[DicomFile]] = {}
        for item in self.files:
            if item.is_image:
                groups.setdefault(item.series_uid, []).append(item)
        return groups


def _candidates(root: Path, recursive: bool) -> Iterable[Path]:
    if root.is_file():
        yield root
        return
    if recursive:
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                yield Path(folder) / name
    else:
        yield from sorted(p for p in root.iterdir() if p.is_file())


def _display(path: Path, root: Path, prefix: str) -> str:
    """The name messages use: the path relative to the input folder (after a zip prefix)."""
    if root.is_dir():
        try:
            return prefix + str(path.relative_to(root))
        except ValueError:
            pass
    return prefix + (path.name if prefix else str(path))


class NotDicomError(InputError):
    """A file that is not DICOM at all (empty, no marker): skipped silently unless named like DICOM."""


def _looks_like_dicom(head: bytes) -> bool:
    """DICM magic at 128, or (for preamble-less files) a first tag in group 0x0002 or 0x0008."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[2:4] < b"\x00\x01"


def read_header(path: Path, name: str, opener: Callable[[], IO[bytes]] | None = None) -> DicomFile:
    """The header of one DICOM file up to its pixel data; InputError naming the file if unreadable.

    `opener` reads the bytes from elsewhere (a zip member) while `path` says where the file will be.
    """
    try:
        with opener() if opener is not None else path.open("rb") as handle:
            head = handle.read(132)
            if not head:
                raise NotDicomError(f"{name}: file is empty (0 bytes)")
            if not _looks_like_dicom(head):
                raise NotDicomError(f"{name}: not a DICOM file (no DICM marker)")
            handle.seek(0)
            dataset = dcmread(handle, stop_before_pixels=True, force=head[128:132] != b"DICM")
            header_bytes = handle.tell()
            at_end = not handle.read(1)
    except PermissionError as error:
        raise InputError(f"{name}: cannot be read (permission denied)") from error
    except InputError:
        raise
    except PARSE_ERRORS as error:
        raise InputError(f"{name}: unreadable DICOM header ({type(error).__name__}: {error})") from error
    if "file_meta" not in dataset.__dict__ or dataset.file_meta is None:
        dataset.file_meta = FileMetaDataset()
    ignored: list[str] = []
    _parse_all(dataset.file_meta, ignored)
    _parse_all(dataset, ignored)
    modality = str(dataset.get("Modality", "") or "").upper()
    sop_class = str(dataset.file_meta.get("MediaStorageSOPClassUID", "") or dataset.get("SOPClassUID", "") or "")
    if at_end and modality not in NON_IMAGE_MODALITIES and not sop_class.startswith(NON_IMAGE_CLASSES):
        # pydicom stops quietly at the end of a cut file; an image header must reach its pixel data
        raise InputError(f"{name} is truncated (the file ends before its pixel data, at byte {header_bytes})")
    return DicomFile(path=path, name=name, dataset=dataset, header_bytes=header_bytes, ignored=tuple(ignored))


def _parse_all(ds: Dataset, ignored: list[str], depth: int = 0) -> None:
    """Parse every element now (pydicom parses lazily, so a corrupt value would raise anywhere later);
    elements that cannot be parsed are removed and listed, and a needed one is then reported missing."""
    for tag in list(ds.keys()):
        try:
            element = ds[tag]
            items = list(element.value) if element.VR == "SQ" and depth < 8 else []
        except PARSE_ERRORS:
            del ds[tag]
            ignored.append(str(tag))
            continue
        for item in items:
            _parse_all(item, ignored, depth + 1)


def scan(root: Path, *, recursive: bool = True, prefix: str = "") -> Scan:
    """Read every DICOM header under `root` (a folder, or one file); skip the unreadable with a warning."""
    result = Scan(root=root)
    for path in _candidates(root, recursive):
        _record(result, path, _display(path, root, prefix))
    return result.finish()


def _record(result: Scan, path: Path, name: str, opener: Callable[[], IO[bytes]] | None = None) -> None:
    result.seen += 1
    try:
        found = read_header(path, name, opener)
        result.files.append(found)
        for tag in found.ignored:
            result.ignored.setdefault(tag, []).append(name)
    except NotDicomError as error:
        if path.suffix.lower() in DICOM_SUFFIXES:
            result.warnings.append(f"skipped {error}")
    except InputError as error:
        result.warnings.append(f"skipped {error}")


def scan_zip(
    archive: zipfile.ZipFile, members: list[tuple[zipfile.ZipInfo, PurePosixPath]], target: Path, prefix: str
) -> Scan:
    """Read the DICOM headers of zip members in place; each DicomFile.path is where it would be extracted."""
    result = Scan(root=target)
    for info, relative in members:
        _record(result, target.joinpath(*relative.parts), prefix + str(relative), partial(archive.open, info))
    return result.finish()


def summarize(uid: str, files: list[DicomFile]) -> SeriesSummary:
    first = files[0].dataset
    return SeriesSummary(
        uid=uid,
        description=str(first.get("SeriesDescription", "") or ""),
        modality=files[0].modality,
        slice_count=sum(f.n_frames for f in files if not f.is_localizer),
        first_file=files[0].path,
    )


def _is_volume_series(files: list[DicomFile]) -> bool:
    """A series that could be a volume: not only localizers, secondary captures or single 2-D frames."""
    images = [f for f in files if not f.is_localizer]
    return bool(images) and not all(f.sop_class.startswith(SECONDARY_CAPTURE_PREFIX) for f in images)


def _listing(summaries: list[SeriesSummary], groups: dict[str, list[DicomFile]]) -> str:
    """Each series as: UID "description" (modality, slice count, first file)."""
    return "; ".join(
        f'{s.uid} "{s.description}" ({s.modality or "no modality"}, {s.slice_count} slices, {groups[s.uid][0].name})'
        for s in summaries
    )


def choose_series(found: Scan, label: str, *, series_uid: str | None, force: bool) -> list[DicomFile]:
    """The files of the one series to read; InputError listing the candidates when that is ambiguous."""
    groups = found.by_series()
    if not groups:
        detail = f"{found.seen} files checked"
        if found.warnings:
            detail += f"; {found.warnings[0]}"
        raise InputError(f"no DICOM image series found in {label} ({detail})")
    summaries = [summarize(uid, files) for uid, files in groups.items()]
    if series_uid is not None:
        if series_uid not in groups:
            raise InputError(f"series {series_uid} is not in {label}; found: {_listing(summaries, groups)}")
        return groups[series_uid]
    volumes = {s.uid: s for s in summaries if _is_volume_series(groups[s.uid])}
    ct = [s for s in volumes.values() if s.modality == "CT"]
    if len(ct) == 1:
        return groups[ct[0].uid]
    if len(ct) > 1:
        raise InputError(f"{label} holds {len(ct)} CT series; pick one with --series-uid: {_listing(ct, groups)}")
    pool = list(volumes.values()) or summaries
    if len(pool) == 1 and (force or pool[0].modality == "CT"):
        return groups[pool[0].uid]
    if len(pool) == 1:
        only = pool[0]
        raise InputError(
            f"{label}: series {only.uid} has modality {only.modality or 'none'}, not CT "
            "(covseg segments CT; use --force to read it anyway)"
        )
    raise InputError(
        f"{label} holds no CT series but {len(pool)} others; pick one with --series-uid: {_listing(pool, groups)}"
    )
