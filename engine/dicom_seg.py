"""DICOM SEG output with highdicom, referencing the source series (DESIGN.md section 4).

Frames: one per source frame (a file of a classic series, or a frame of an enhanced multi-frame
file), in the source order, so every frame references its source instance and lies exactly on it.
Each frame is taken from the label map by nearest-neighbour resampling onto the source frame's
plane (SimpleITK), which is the identity when the reader kept the source grid and stays correct if
it did not (e.g. reversed slice order). Segments: the engine-output labels present in the map,
numbered 1..n in label-value order, with names, codes and colours from covseg/labels.py.
BINARY by default (widest viewer support); LABELMAP on request (smaller, needs DICOM 2024+ readers).
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from covseg import __version__
from covseg.engine.geometry import Geometry, array_to_sitk
from covseg.engine.volume import StudyInfo
from covseg.errors import InputError
from covseg.labels import ANATOMICAL_STRUCTURE, BY_VALUE, ENGINE_OUTPUT_LABELS, Code

SEG_SERIES_NUMBER = 9100
SEG_SERIES_DESCRIPTION = "covseg segmentation"
SEGMENTATION_TYPES = ("BINARY", "LABELMAP")
LUNG_REGION = Code("39607008", "SCT", "Lung")
# Attributes blanked (type 2) when identifiers are stripped from the SEG; the pseudonym replaces name and ID.
STRIPPED_ATTRIBUTES = ("PatientBirthDate", "PatientSex", "AccessionNumber", "ReferringPhysicianName", "StudyID",
                       "StudyDate", "StudyTime", "PatientAge", "OtherPatientIDs", "InstitutionName")


@dataclass(frozen=True)
class Plane:
    """One source frame's grid: position of the first pixel, row/column directions, size, spacing."""

    position: tuple[float, float, float]
    orientation: tuple[float, ...]  # 6 values: row direction then column direction (DICOM IOP)
    rows: int
    columns: int
    spacing: tuple[float, float]  # (between rows, between columns), as DICOM PixelSpacing


def seg_unavailable_reason(info: StudyInfo) -> str | None:
    """Why no SEG can be written for this input, or None when it can."""
    if info.format not in ("dicom", "zip"):
        return f"input is {info.format}, not DICOM: a DICOM SEG needs source DICOM instances to reference"
    if not info.source_files:
        return "the source DICOM files are not known"
    return None


def _read_source(path: Path) -> Dataset:
    """A source header, also from inside a zip (the reader names such files <archive.zip>/<member>)."""
    if path.is_file():
        return pydicom.dcmread(path, stop_before_pixels=True)
    for parent in path.parents:
        if parent.is_file() and zipfile.is_zipfile(parent):
            with zipfile.ZipFile(parent) as archive:
                data = archive.read(path.relative_to(parent).as_posix())
            return pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
    raise InputError(f"{path}: source DICOM file is no longer readable, cannot write the DICOM SEG")


def load_sources(info: StudyInfo) -> list[Dataset]:
    """Source datasets (headers only), one per distinct source file, in slice order."""
    unique = list(dict.fromkeys(Path(p) for p in info.source_files))
    return [_read_source(path) for path in unique]


def _plane(position: Sequence[float], orientation: Sequence[float], rows: int, columns: int,
           spacing: Sequence[float]) -> Plane:
    return Plane(tuple(float(v) for v in position), tuple(float(v) for v in orientation),  # type: ignore[arg-type]
                 int(rows), int(columns), (float(spacing[0]), float(spacing[1])))


def source_planes(ds: Dataset) -> list[Plane]:
    """The plane of every frame of a source instance (classic single-frame or enhanced multi-frame)."""
    rows, columns = int(ds.Rows), int(ds.Columns)
    if "PerFrameFunctionalGroupsSequence" not in ds:
        return [_plane(ds.ImagePositionPatient, ds.ImageOrientationPatient, rows, columns,
                       ds.PixelSpacing)]
    shared = ds.SharedFunctionalGroupsSequence[0]
    planes = []
    for frame in ds.PerFrameFunctionalGroupsSequence:
        def pick(name: str, frame: Dataset = frame) -> Dataset:
            group = frame if name in frame else shared
            return getattr(group, name)[0]

        planes.append(_plane(pick("PlanePositionSequence").ImagePositionPatient,
                             pick("PlaneOrientationSequence").ImageOrientationPatient,
                             rows, columns, pick("PixelMeasuresSequence").PixelSpacing))
    return planes


def labels_on_plane(image: sitk.Image, plane: Plane) -> np.ndarray:
    """The (rows, columns) uint8 labels of a SimpleITK label image on one source frame (nearest neighbour)."""
    row_dir = np.asarray(plane.orientation[:3])
    col_dir = np.asarray(plane.orientation[3:])
    direction = np.column_stack([row_dir, col_dir, np.cross(row_dir, col_dir)]).ravel()
    out = sitk.Resample(image, [plane.columns, plane.rows, 1], sitk.Transform(), sitk.sitkNearestNeighbor,
                        plane.position, (plane.spacing[1], plane.spacing[0], 1.0),
                        [float(v) for v in direction], 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(out)[0]


def _slice_index(geometry: Geometry, plane: Plane, tolerance: float = 1e-3) -> int | None:
    """k when the plane is exactly slice k of the label grid (same rows, columns, spacing); else None."""
    direction = geometry.direction_matrix
    if (plane.rows, plane.columns) != (geometry.size[1], geometry.size[0]):
        return None
    if not (np.allclose(plane.orientation[:3], direction[:, 0], atol=tolerance)
            and np.allclose(plane.orientation[3:], direction[:, 1], atol=tolerance)
            and np.allclose((plane.spacing[1], plane.spacing[0]), geometry.spacing[:2], atol=tolerance)):
        return None
    index = geometry.lps_to_index(np.asarray(plane.position))
    k = round(float(index[2]))
    if abs(index[0]) > tolerance or abs(index[1]) > tolerance or abs(index[2] - k) > tolerance:
        return None
    return k if 0 <= k < geometry.size[2] else None


def seg_frames(labels: np.ndarray, geometry: Geometry, planes: Sequence[Plane]) -> np.ndarray:
    """(frames, rows, columns) label values, one frame per source plane (a copy of the slice when the
    plane is one of the label grid's slices, the usual case; SimpleITK resampling otherwise)."""
    image: sitk.Image | None = None
    frames = []
    for plane in planes:
        k = _slice_index(geometry, plane)
        if k is not None:
            frames.append(labels[k])
            continue
        if image is None:
            image = array_to_sitk(labels, geometry)
        frames.append(labels_on_plane(image, plane))
    return np.stack(frames)


def _code(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def segment_descriptions(values: Sequence[int], model_names: Sequence[str]) -> list[hd.seg.SegmentDescription]:
    """highdicom SegmentDescriptions for label `values` (segment i + 1 is values[i])."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name="covseg", family=codes.cid7162.ArtificialIntelligence, version=__version__,
        parameters={"models": ", ".join(model_names) or "none"})
    lung_region = _code(LUNG_REGION)
    out = []
    for number, value in enumerate(values, start=1):
        info = BY_VALUE[value]
        # Lesions say where they are (the lung); anatomical structures are their own region.
        regions = [lung_region] if info.category != ANATOMICAL_STRUCTURE else None
        out.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=info.display_name[:64],
            segmented_property_category=_code(info.category), segmented_property_type=_code(info.code),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            tracking_id=info.name, tracking_uid=hd.UID(), anatomic_regions=regions,
            display_color=hd.color.CIELabColor.from_rgb(*info.colour)))
    return out


def present_values(labels: np.ndarray) -> list[int]:
    """Engine-output label values present in the map, ascending."""
    counts = np.bincount(labels.ravel(), minlength=256)
    return [info.value for info in ENGINE_OUTPUT_LABELS if counts[info.value] > 0]


def strip_identifiers(ds: Dataset, pseudonym: str) -> None:
    """Replace patient name and ID by the pseudonym and blank the other identifying attributes. UIDs stay:
    the SEG must still reference its source series."""
    ds.PatientName = pseudonym
    ds.PatientID = pseudonym
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "covseg --anonymize: name and ID pseudonymised, dates and identifiers blanked"[:64]
    for keyword in STRIPPED_ATTRIBUTES:
        if keyword in ds:
            setattr(ds, keyword, "" if keyword != "OtherPatientIDs" else None)
            if keyword == "OtherPatientIDs":
                del ds.OtherPatientIDs


def write_seg(labels: np.ndarray, geometry: Geometry, info: StudyInfo, path: Path, *,
              model_names: Sequence[str] = (), segmentation_type: str = "BINARY",
              pseudonym: str | None = None) -> Path | None:
    """Write the SEG to `path`; None (nothing written) when no engine label is present.

    pseudonym: when given, identifiers are stripped (`--anonymize`) and the pseudonym replaces them.
    """
    if segmentation_type not in SEGMENTATION_TYPES:
        raise ValueError(f"segmentation type must be one of {SEGMENTATION_TYPES}, got {segmentation_type!r}")
    values = present_values(labels)
    if not values:
        return None
    sources = load_sources(info)
    planes = [plane for ds in sources for plane in source_planes(ds)]
    frames = seg_frames(labels, geometry, planes)
    lookup = np.zeros(256, dtype=np.uint8)
    lookup[values] = np.arange(1, len(values) + 1, dtype=np.uint8)
    with warnings.catch_warnings():
        # highdicom quotes the source's PatientName in its person-name warnings: never log identifiers.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"highdicom\.")
        seg = _segmentation(sources, lookup[frames], segmentation_type, values, model_names)
    if pseudonym is not None:
        strip_identifiers(seg, pseudonym)
    seg.save_as(path)
    return Path(path)


def _segmentation(sources: list[Dataset], pixels: np.ndarray, segmentation_type: str, values: Sequence[int],
                  model_names: Sequence[str]) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=segmentation_type,
        segment_descriptions=segment_descriptions(values, model_names),
        series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="covseg", manufacturer_model_name="covseg",
        software_versions=__version__, device_serial_number="none", content_label="COVSEG",
        content_description="covseg automatic segmentation (research use only)"[:64],
        series_description=SEG_SERIES_DESCRIPTION, omit_empty_frames=True)
