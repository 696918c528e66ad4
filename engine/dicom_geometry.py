"""From the 2-D frames of one series to a checked 3-D grid: orientation, sorting, spacing, tilt.

Frames are sorted by their distance along the slice normal (row x column cosines), never by
InstanceNumber, which scanners number in either direction. The tolerances are module constants
and documented in docs/bad_inputs.md; a series that breaks one is refused with an InputError
naming the frame (file name and position), because resampling a gapped, uneven or tilted stack
as if it were regular would put every later slice in the wrong place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from covseg.engine.dicom_scan import DicomFile
from covseg.engine.geometry import Geometry
from covseg.errors import InputError

ORIENTATION_TOLERANCE = 1e-3  # row/column cosines: unit length and perpendicular within this
SAME_ORIENTATION_TOLERANCE = 1e-3  # two frames share an orientation when cosines agree within this
DUPLICATE_TOLERANCE_MM = 0.01  # frames closer than this along the normal share a position
SPACING_TOLERANCE_MM = 0.05  # a gap may differ from the nominal spacing by this ...
SPACING_TOLERANCE_FRACTION = 0.02  # ... plus this fraction of the nominal spacing
TILT_TOLERANCE_MM = 0.1  # in-plane drift of any frame from the first may be this ...
TILT_TOLERANCE_DEG = 0.1  # ... plus the drift of a stack tilted by this angle
MIN_SLICES = 2


@dataclass(frozen=True)
class Frame:
    """One 2-D image of a series: a single-frame file, or one frame of an enhanced multi-frame file."""

    file: DicomFile
    index: int | None  # frame number (0-based) inside a multi-frame file, None for a single frame
    rows: int
    columns: int
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]  # (between rows = y, between columns = x), as DICOM orders it
    rescale: tuple[float, float] | None  # (slope, intercept); None when the tags are missing

    @property
    def label(self) -> str:
        return self.file.name if self.index is None else f"{self.file.name} frame {self.index + 1}"

    def where(self, distance: float | None = None) -> str:
        """The frame named for a message: file (frame) and its position."""
        pos = ", ".join(f"{v:.2f}" for v in self.position)
        extra = f", {distance:.2f} mm along the normal" if distance is not None else ""
        return f"{self.label} (position {pos}{extra})"


@dataclass
class Stack:
    """Frames sorted along the normal, with the grid they define and what was dropped on the way."""

    frames: list[Frame]
    geometry: Geometry
    warnings: list[str] = field(default_factory=list)


def numbers(value: Any, count: int, what: str, where: str) -> tuple[float, ...]:
    """`count` finite floats from a DICOM multi-value; InputError naming the tag and value otherwise."""
    if value is None or value == "":
        raise InputError(f"{where}: {what} is missing")
    items = list(value) if isinstance(value, Sequence | np.ndarray) and not isinstance(value, str) else [value]
    try:
        result = tuple(float(v) for v in items)
    except (TypeError, ValueError) as error:
        raise InputError(f"{where}: {what} {value!r} is not numeric") from error
    if len(result) != count or not all(math.isfinite(v) for v in result):
        raise InputError(f"{where}: {what} {list(result)} must be {count} finite numbers")
    return result


def _axes(frame: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cosines = np.asarray(frame.orientation, dtype=float)
    row, col = cosines[:3], cosines[3:]
    if (
        abs(np.linalg.norm(row) - 1) > ORIENTATION_TOLERANCE
        or abs(np.linalg.norm(col) - 1) > ORIENTATION_TOLERANCE
        or abs(float(row @ col)) > ORIENTATION_TOLERANCE
    ):
        raise InputError(
            f"{frame.label}: ImageOrientationPatient {list(frame.orientation)} is not two perpendicular unit vectors"
        )
    row = row / np.linalg.norm(row)
    col = col - (col @ row) * row  # Gram-Schmidt: Geometry asks for orthonormality to 1e-4
    col = col / np.linalg.norm(col)
    return row, col, np.cross(row, col)


def _majority_orientation(frames: list[Frame], warnings: list[str]) -> list[Frame]:
    """Keep the largest group of frames sharing one orientation (others are localizers or reformats)."""
    groups: list[list[Frame]] = []
    for frame in frames:
        for group in groups:
            if np.allclose(group[0].orientation, frame.orientation, atol=SAME_ORIENTATION_TOLERANCE):
                group.append(frame)
                break
        else:
            groups.append([frame])
    groups.sort(key=len, reverse=True)
    for other in groups[1:]:
        warnings.append(
            f"ignored {len(other)} image(s) with another orientation, e.g. {other[0].label} "
            f"(ImageOrientationPatient {list(other[0].orientation)})"
        )
    return groups[0]


def _check_matrix(frames: list[Frame]) -> None:
    first = frames[0]
    for frame in frames:
        if frame.rows < 1 or frame.columns < 1:
            raise InputError(f"{frame.label}: Rows x Columns {frame.rows}x{frame.columns} is empty")
        if (frame.rows, frame.columns) != (first.rows, first.columns):
            raise InputError(
                f"mixed matrix sizes: {frame.label} is {frame.rows}x{frame.columns}, "
                f"{first.label} is {first.rows}x{first.columns}"
            )
        if min(frame.pixel_spacing) <= 0:
            raise InputError(f"{frame.label}: PixelSpacing {list(frame.pixel_spacing)} must be positive")
        if not np.allclose(frame.pixel_spacing, first.pixel_spacing, rtol=1e-3, atol=1e-4):
            raise InputError(
                f"mixed pixel spacing: {frame.label} has PixelSpacing {list(frame.pixel_spacing)}, "
                f"{first.label} has {list(first.pixel_spacing)}"
            )


def _drop_duplicates(frames: list[Frame], dist: np.ndarray, warnings: list[str]) -> tuple[list[Frame], np.ndarray]:
    keep = [0]
    dropped: list[str] = []
    for i in range(1, len(frames)):
        if abs(dist[i] - dist[keep[-1]]) < DUPLICATE_TOLERANCE_MM:
            dropped.append(f"{frames[i].label} duplicates {frames[keep[-1]].where(float(dist[i]))}")
        else:
            keep.append(i)
    if dropped and len(dropped) * 2 >= len(frames):
        raise InputError(
            f"{len(dropped)} of {len(frames)} slices share positions (several volumes in one series?), "
            f"e.g. {dropped[0]}"
        )
    if dropped:
        warnings.append(f"removed {len(dropped)} duplicate slice(s) at the same position: " + "; ".join(dropped[:3]))
    return [frames[i] for i in keep], dist[keep]


def _check_tilt(frames: list[Frame], normal: np.ndarray, dist: np.ndarray) -> None:
    origin = np.asarray(frames[0].position)
    limit_slope = math.tan(math.radians(TILT_TOLERANCE_DEG))
    for frame, d in zip(frames[1:], dist[1:], strict=True):
        offset = np.asarray(frame.position) - origin
        drift = float(np.linalg.norm(offset - (offset @ normal) * normal))
        along = abs(float(d - dist[0]))
        if drift > TILT_TOLERANCE_MM + limit_slope * along:
            angle = math.degrees(math.atan2(drift, along))
            raise InputError(
                f"gantry tilt or sheared stack: {frame.where(float(d))} is {drift:.2f} mm off the slice normal "
                f"of {frames[0].label} ({angle:.1f} degrees); covseg does not resample tilted series"
            )


def _check_spacing(frames: list[Frame], dist: np.ndarray) -> float:
    gaps = np.diff(dist)
    nominal = float(np.median(gaps))
    tolerance = SPACING_TOLERANCE_MM + SPACING_TOLERANCE_FRACTION * nominal
    for i, gap in enumerate(gaps):
        if abs(gap - nominal) <= tolerance:
            continue
        before, after = frames[i].where(float(dist[i])), frames[i + 1].where(float(dist[i + 1]))
        ratio = gap / nominal
        if ratio > 1.5 and abs(ratio - round(ratio)) * nominal <= tolerance:
            raise InputError(
                f"missing slice(s): gap of {gap:.2f} mm (expected {nominal:.2f} mm, about {round(ratio) - 1} "
                f"slice(s) missing) between {before} and {after}"
            )
        raise InputError(
            f"uneven slice spacing: gap of {gap:.2f} mm (expected {nominal:.2f} mm) between {before} and {after}"
        )
    return float(dist[-1] - dist[0]) / (len(frames) - 1)


def plan_stack(frames: list[Frame], label: str) -> Stack:
    """Sort, deduplicate and check the frames of one series; InputError naming the frame at fault."""
    if not frames:
        raise InputError(f"{label}: no image slices to read")
    warnings: list[str] = []
    for frame in frames:
        _axes(frame)
    frames = _majority_orientation(frames, warnings)
    _check_matrix(frames)
    row, col, normal = _axes(frames[0])
    dist = np.array([float(np.asarray(f.position) @ normal) for f in frames])
    order = np.argsort(dist, kind="stable")
    frames, dist = [frames[i] for i in order], dist[order]
    frames, dist = _drop_duplicates(frames, dist, warnings)
    if len(frames) < MIN_SLICES:
        raise InputError(
            f"{label}: only {len(frames)} slice ({frames[0].label}); covseg needs a 3-D series of at least "
            f"{MIN_SLICES} slices"
        )
    _check_tilt(frames, normal, dist)
    slice_spacing = _check_spacing(frames, dist)
    geometry = Geometry(
        size=(frames[0].columns, frames[0].rows, len(frames)),
        spacing=(frames[0].pixel_spacing[1], frames[0].pixel_spacing[0], slice_spacing),
        origin=frames[0].position,
        direction=tuple(float(v) for v in np.column_stack([row, col, normal]).reshape(-1)),
    )
    return Stack(frames=frames, geometry=geometry, warnings=warnings)
