"""The 2-D frames of a DICOM series, from classic single-frame files and enhanced multi-frame files.

Both kinds become the same `Frame` records, so sorting and the geometry checks in
`dicom_geometry` run once for either. Enhanced CT keeps position, orientation, pixel spacing and
rescale in per-frame or shared functional groups (PS3.3 C.7.6.16); classic files keep them at the
top level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydicom import Dataset

from covseg.engine.dicom_geometry import Frame, numbers
from covseg.engine.dicom_scan import PARSE_ERRORS, SECONDARY_CAPTURE_PREFIX, DicomFile
from covseg.errors import InputError

UNCOMPRESSED_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")


def tag(ds: Dataset, keyword: str, where: str) -> Any:
    """A tag's value, None when absent; InputError naming the tag when its bytes cannot be parsed."""
    try:
        return ds.get(keyword)
    except PARSE_ERRORS as error:
        raise InputError(f"{where}: tag {keyword} cannot be parsed ({error})") from error


def _integer(ds: Dataset, keyword: str, where: str, default: int | None = None) -> int:
    value = tag(ds, keyword, where)
    if value is None or value == "":
        if default is not None:
            return default
        raise InputError(f"{where}: {keyword} is missing")
    try:
        return int(value)
    except (TypeError, ValueError) as error:
        raise InputError(f"{where}: {keyword} {value!r} is not an integer") from error


def rescale_of(ds: Dataset, where: str) -> tuple[float, float] | None:
    """(slope, intercept); None when RescaleIntercept is absent (a missing slope alone means 1)."""
    intercept = tag(ds, "RescaleIntercept", where)
    slope = tag(ds, "RescaleSlope", where)
    if intercept is None or intercept == "":
        return None
    slope_value = 1.0 if slope is None or slope == "" else numbers(slope, 1, "RescaleSlope", where)[0]
    if slope_value == 0:
        raise InputError(f"{where}: RescaleSlope is 0")
    return slope_value, numbers(intercept, 1, "RescaleIntercept", where)[0]


def check_pixel_kind(file: DicomFile) -> None:
    """Refuse colour images and secondary captures: they are pictures of CT, not CT values."""
    ds, where = file.dataset, file.name
    samples = _integer(ds, "SamplesPerPixel", where, default=1)
    photometric = str(tag(ds, "PhotometricInterpretation", where) or "MONOCHROME2").upper()
    if samples != 1 or not photometric.startswith("MONOCHROME"):
        raise InputError(
            f"{where}: colour image (SamplesPerPixel {samples}, PhotometricInterpretation {photometric}); "
            "covseg needs greyscale CT values"
        )
    if file.sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
        raise InputError(f"{where}: secondary capture (SOPClassUID {file.sop_class}) holds no CT geometry or HU")


def _truncated(file: DicomFile) -> str | None:
    """Why an uncompressed file holds fewer pixel bytes than its header promises, or None."""
    ds = file.dataset
    if file.transfer_syntax not in UNCOMPRESSED_SYNTAXES or "PixelData" in ds:
        return None
    try:
        bits = int(ds.get("BitsAllocated", 16) or 16)
        expected = int(ds.Rows) * int(ds.Columns) * file.n_frames * max(1, bits // 8)
        available = file.path.stat().st_size - file.header_bytes
    except (*PARSE_ERRORS, AttributeError) as error:
        return f"{file.name}: header cannot be checked ({error})"
    if available < expected:
        return f"{file.name} is truncated ({max(available, 0)} pixel bytes, header promises {expected})"
    return None


def _classic_frame(file: DicomFile) -> Frame:
    ds, where = file.dataset, file.name
    return Frame(
        file=file,
        index=None,
        rows=_integer(ds, "Rows", where),
        columns=_integer(ds, "Columns", where),
        position=numbers(tag(ds, "ImagePositionPatient", where), 3, "ImagePositionPatient", where),
        orientation=numbers(tag(ds, "ImageOrientationPatient", where), 6, "ImageOrientationPatient", where),
        pixel_spacing=numbers(tag(ds, "PixelSpacing", where), 2, "PixelSpacing", where),
        rescale=rescale_of(ds, where),
    )


def _group_item(groups: list[Dataset], keyword: str, where: str) -> Dataset | None:
    for group in groups:
        sequence = tag(group, keyword, where)
        if sequence:
            return sequence[0]
    return None


def _enhanced_frames(file: DicomFile) -> list[Frame]:
    """One Frame per frame of an enhanced (or legacy-converted enhanced) multi-frame image."""
    ds, name = file.dataset, file.name
    shared_seq = tag(ds, "SharedFunctionalGroupsSequence", name)
    shared = [shared_seq[0]] if shared_seq else []
    per_frame = tag(ds, "PerFrameFunctionalGroupsSequence", name) or []
    if len(per_frame) != file.n_frames:
        raise InputError(
            f"{name}: NumberOfFrames is {file.n_frames} but PerFrameFunctionalGroupsSequence has {len(per_frame)} items"
        )
    rows, columns = _integer(ds, "Rows", name), _integer(ds, "Columns", name)
    frames = []
    own: Dataset
    for index, own in enumerate(per_frame):
        where = f"{name} frame {index + 1}"
        groups = [own, *shared]
        position = _group_item(groups, "PlanePositionSequence", where)
        orientation = _group_item(groups, "PlaneOrientationSequence", where)
        measures = _group_item(groups, "PixelMeasuresSequence", where)
        transform = _group_item(groups, "PixelValueTransformationSequence", where)
        frames.append(
            Frame(
                file=file,
                index=index,
                rows=rows,
                columns=columns,
                position=numbers(
                    tag(position or Dataset(), "ImagePositionPatient", where), 3, "ImagePositionPatient", where
                ),
                orientation=numbers(
                    tag(orientation or Dataset(), "ImageOrientationPatient", where), 6, "ImageOrientationPatient", where
                ),
                pixel_spacing=numbers(tag(measures or Dataset(), "PixelSpacing", where), 2, "PixelSpacing", where),
                rescale=rescale_of(transform, where) if transform is not None else rescale_of(ds, where),
            )
        )
    return frames


def _set_aside(
    files: list[DicomFile], warnings: list[str], what: str, test: Callable[[DicomFile], bool]
) -> list[DicomFile]:
    """Drop the files `test` picks, with a warning, unless that would leave nothing (then keep all)."""
    odd = [f for f in files if test(f)]
    if not odd or len(odd) == len(files):
        return files
    warnings.append(f"ignored {len(odd)} {what}, e.g. {odd[0].name}")
    return [f for f in files if not test(f)]


def series_frames(files: list[DicomFile]) -> tuple[list[Frame], list[str]]:
    """All frames of the chosen series' files; localizers, derived or secondary-capture images mixed
    into original slices, and truncated files are left out with a warning."""
    warnings: list[str] = []
    files = _set_aside(files, warnings, "localizer image(s)", lambda f: f.is_localizer)
    files = _set_aside(
        files, warnings, "secondary capture(s)", lambda f: f.sop_class.startswith(SECONDARY_CAPTURE_PREFIX)
    )
    if any(f.image_type[:1] == ("ORIGINAL",) for f in files):
        files = _set_aside(
            files, warnings, "DERIVED image(s) among ORIGINAL slices", lambda f: f.image_type[:1] == ("DERIVED",)
        )
    frames: list[Frame] = []
    truncated: list[str] = []
    for file in files:
        check_pixel_kind(file)
        own = _enhanced_frames(file) if file.is_multiframe else [_classic_frame(file)]
        problem = _truncated(file)
        if problem:
            truncated.append(problem)
            continue
        frames.extend(own)
    if truncated and not frames:
        raise InputError(truncated[0])
    warnings.extend(f"skipped {problem}" for problem in truncated)
    return frames, warnings
