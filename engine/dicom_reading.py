"""Reading one chosen DICOM series into a HU `Volume`: size guard, frames, checks, decoding, rescale.

Pixel data is decoded by pydicom with its pylibjpeg / pylibjpeg-openjpeg / pyjpegls plugins rather
than by SimpleITK/GDCM: the headers are already parsed by pydicom (grouping, functional groups,
checks), one library then owns each file from header to pixels, a missing decoder is detected per
transfer syntax before decoding starts, and SimpleITK stays free to be the independent second
reader the tests compare against.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import UID

from covseg.engine.dicom_frames import UNCOMPRESSED_SYNTAXES, series_frames, tag
from covseg.engine.dicom_geometry import Frame, Stack, plan_stack
from covseg.engine.dicom_scan import PARSE_ERRORS, DicomFile
from covseg.engine.volume import StudyInfo, Volume
from covseg.errors import InputError

AIR_HU = -1024.0  # what pixel padding (outside the reconstruction circle) becomes
JPEGLS_SYNTAXES = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")
MISSING_RESCALE_AIR_HU = -500.0  # without rescale tags, stored values must reach this to pass as HU


def check_size(files: list[DicomFile], max_voxels: int, label: str) -> None:
    """Refuse absurd sizes from the headers alone, before any pixel buffer is allocated."""
    total = 0
    for file in files:
        try:
            rows, columns = int(file.dataset.get("Rows") or 0), int(file.dataset.get("Columns") or 0)
        except PARSE_ERRORS as error:
            raise InputError(f"{file.name}: Rows/Columns cannot be parsed ({error})") from error
        total += rows * columns * file.n_frames
    if total > max_voxels:
        raise InputError(
            f"{label}: {total:,} voxels (e.g. {files[0].name}: {files[0].dataset.get('Rows')}x"
            f"{files[0].dataset.get('Columns')}, {len(files)} files) exceeds the limit of {max_voxels:,}"
        )


def check_decoders(files: list[DicomFile]) -> None:
    """InputError naming the transfer syntax when no installed plugin can decode a file's pixels."""
    seen: set[str] = set()
    for file in files:
        syntax = file.transfer_syntax or "1.2.840.10008.1.2"
        if syntax in seen or syntax in UNCOMPRESSED_SYNTAXES:
            continue
        seen.add(syntax)
        name = UID(syntax).name
        name = f" ({name})" if name != syntax else " (unknown)"
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError as error:
            raise InputError(f"{file.name}: transfer syntax {syntax}{name} has no pixel data decoder") from error
        if not decoder.is_available:
            raise InputError(
                f"{file.name}: transfer syntax {syntax}{name} needs a decoder plugin that is not installed "
                "(pylibjpeg with pylibjpeg-openjpeg / pylibjpeg-libjpeg, or pyjpegls)"
            )


def _plugin(syntax: str) -> str:
    """pyjpegls for JPEG-LS when installed (about 3x faster than pylibjpeg-libjpeg here), else pydicom's pick."""
    if syntax in JPEGLS_SYNTAXES:
        try:
            if "pyjpegls" in get_decoder(syntax).available_plugins:
                return "pyjpegls"
        except NotImplementedError:
            pass
    return ""


def _decode(file: DicomFile) -> tuple[np.ndarray, Dataset]:
    """Stored values of every frame of one file, shape (frames, rows, columns)."""
    try:
        ds = dcmread(file.path, force=True)
        pixels = np.asarray(pixel_array(ds, decoding_plugin=_plugin(file.transfer_syntax)))
    except PARSE_ERRORS as error:
        raise InputError(
            f"{file.name}: pixel data cannot be decoded (transfer syntax {file.transfer_syntax}: "
            f"{type(error).__name__}: {error})"
        ) from error
    except RuntimeError as error:  # decoder plugins raise RuntimeError on corrupt codestreams
        raise InputError(f"{file.name}: pixel data cannot be decoded ({error})") from error
    expected = (file.n_frames, int(ds.Rows), int(ds.Columns))
    pixels = pixels.reshape((-1, *pixels.shape[-2:])) if pixels.ndim >= 2 else pixels
    if pixels.shape != expected:
        raise InputError(f"{file.name}: pixel data has shape {pixels.shape}, header says {expected}")
    return pixels, ds


def _padding_mask(stored: np.ndarray, ds: Dataset, where: str) -> np.ndarray | None:
    pad = tag(ds, "PixelPaddingValue", where)
    if pad is None or pad == "":
        return None
    low = np.array(int(pad)).astype(stored.dtype)
    limit = tag(ds, "PixelPaddingRangeLimit", where)
    if limit is None or limit == "":
        return stored == low
    high = np.array(int(limit)).astype(stored.dtype)
    return (stored >= min(low, high)) & (stored <= max(low, high))


def decode_stack(stack: Stack, warnings: list[str]) -> np.ndarray:
    """The (z, y, x) float32 HU array of a checked stack; each file decoded once."""
    size = stack.geometry.shape_zyx
    volume = np.empty(size, dtype=np.float32)
    cache: dict[Path, tuple[np.ndarray, Dataset]] = {}
    missing_rescale: list[Frame] = []
    for z, frame in enumerate(stack.frames):
        if frame.file.path not in cache:
            cache = {frame.file.path: _decode(frame.file)}  # keep one file: multi-frame files decode once
        stored, ds = cache[frame.file.path]
        plane = stored[frame.index or 0]
        slope, intercept = frame.rescale or (1.0, 0.0)
        if frame.rescale is None:
            missing_rescale.append(frame)
        np.multiply(plane, np.float32(slope), out=volume[z], casting="unsafe")  # one pass, no temporaries
        volume[z] += np.float32(intercept)
        mask = _padding_mask(plane, ds, frame.label)
        if mask is not None:
            volume[z][mask] = AIR_HU
    if missing_rescale:
        _accept_missing_rescale(volume, missing_rescale, warnings)
    if not np.isfinite(volume).all():
        z = int(np.argwhere(~np.isfinite(volume))[0][0])
        frame = stack.frames[z]
        raise InputError(f"{frame.label}: RescaleSlope/RescaleIntercept {frame.rescale} overflow float32 HU values")
    return volume


def _accept_missing_rescale(volume: np.ndarray, frames: list[Frame], warnings: list[str]) -> None:
    """Missing RescaleIntercept: accept stored values as HU only when they contain air (see docs)."""
    low = float(volume.min())
    if low > MISSING_RESCALE_AIR_HU:
        raise InputError(
            f"{frames[0].label}: RescaleIntercept/RescaleSlope missing and the stored values (min {low:.0f}) "
            "do not look like HU (no air below -500); refusing to guess the rescale"
        )
    warnings.append(
        f"RescaleIntercept/RescaleSlope missing on {len(frames)} slice(s) (e.g. {frames[0].label}); "
        "stored values used as HU (slope 1, intercept 0) because they include air"
    )


def _text(ds: Dataset, keyword: str) -> str | None:
    try:
        value = ds.get(keyword)
    except PARSE_ERRORS:
        return None
    text = str(value).strip() if value is not None else ""
    return text or None


def _date(ds: Dataset, warnings: list[str]) -> str | None:
    raw = _text(ds, "StudyDate") or _text(ds, "SeriesDate")
    if raw is None:
        return None
    digits = raw.replace("-", "").replace(".", "")
    if len(digits) == 8 and digits.isdigit():
        return f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"
    warnings.append(f"StudyDate {raw!r} is not YYYYMMDD; left empty")
    return None


def study_info(stack: Stack, fmt: str, source: Path, warnings: list[str], rename: Callable[[Path], Path]) -> StudyInfo:
    """The StudyInfo of a read series, from the header of its first slice."""
    ds = stack.frames[0].file.dataset
    number = _text(ds, "SeriesNumber")
    files: list[Path] = []
    for frame in stack.frames:
        path = rename(frame.file.path)
        if not files or files[-1] != path:
            files.append(path)
    return StudyInfo(
        format=fmt,
        modality=_text(ds, "Modality"),
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        patient_birth_date=_text(ds, "PatientBirthDate"),
        patient_sex=_text(ds, "PatientSex"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
        study_date=_date(ds, warnings),
        study_description=_text(ds, "StudyDescription"),
        series_description=_text(ds, "SeriesDescription"),
        series_number=int(float(number)) if number and number.lstrip("-").replace(".", "", 1).isdigit() else None,
        accession_number=_text(ds, "AccessionNumber"),
        source_path=source,
        source_files=tuple(files),
        warnings=tuple(warnings),
    )


def read_series(
    files: list[DicomFile],
    label: str,
    *,
    force: bool,
    max_voxels: int,
    fmt: str,
    source: Path,
    warnings: list[str],
    rename: Callable[[Path], Path] = lambda path: path,
) -> Volume:
    """The HU volume of one series' files; every user-caused problem is an InputError."""
    modality = files[0].modality
    if modality != "CT" and not force:
        raise InputError(
            f"{files[0].name}: modality {modality or 'missing'}, not CT (covseg segments CT; "
            "use --force to read it anyway)"
        )
    check_size(files, max_voxels, label)
    frames, frame_warnings = series_frames(files)
    try:
        stack = plan_stack(frames, label)
    except InputError as error:
        skipped = [w for w in [*warnings, *frame_warnings] if w.startswith("skipped ")]
        if not skipped:
            raise
        raise InputError(f"{error}; note: {skipped[0]}") from error
    check_decoders([f.file for f in stack.frames])
    all_warnings = [*warnings, *frame_warnings, *stack.warnings]
    if modality != "CT":
        all_warnings.append(f"modality {modality or 'missing'} read as CT because force=True")
    array = decode_stack(stack, all_warnings)
    return Volume(array=array, geometry=stack.geometry, info=study_info(stack, fmt, source, all_warnings, rename))
