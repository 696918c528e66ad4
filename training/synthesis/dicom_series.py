"""Write a `Volume` as a CT Image Storage series (pydicom) and as NIfTI (SimpleITK).

Why hand-assembled datasets rather than highdicom: highdicom builds derived objects (SEG, SR,
legacy-converted enhanced CT) but has no constructor for a classic single-frame CT Image, which is
what scanners export and what the engine's reader must handle. The attributes below are the
mandatory (type 1 and 2) attributes of the CT Image IOD modules, plus window presets.

Geometry (LPS, ITK convention: direction columns are the x, y, z index axes):
ImageOrientationPatient = the first two direction columns; slice k sits at origin + k * sz * column 3;
PixelSpacing = (row spacing = sy, column spacing = sx). Readers sort slices along the normal
column1 x column2, so a left-handed direction (third column opposite to that normal) reads back as
the equivalent right-handed grid: same voxel positions, slices in reverse order.

Determinism: with `uid_seed`, every UID comes from `generate_uid(entropy_srcs=[...])`, dates are fixed
and the implementation UID/version are covseg's own (not pydicom's), so the same seed and volume
give byte-identical files.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from covseg.engine.geometry import Geometry, array_to_sitk
from covseg.engine.volume import Volume

# Fixed per project, so files do not change when pydicom's own implementation UID does.
IMPLEMENTATION_CLASS_UID = UID("1.2.826.0.1.3680043.8.498.20913750116839045284961713016658371025")
IMPLEMENTATION_VERSION_NAME = "COVSEG_SYNTH_1"
SEEDED_DATE = "20200401"  # the date and time every seeded (reproducible) series carries
SEEDED_TIME = "120000"
PATIENT_NAME = "COVSEG^PHANTOM"
_INT16 = np.iinfo(np.int16)


def _ds(value: float) -> str:
    """A DS string of at most 16 characters; direction cosines below 1e-12 become exactly 0."""
    return format_number_as_ds(0.0 if abs(value) < 1e-12 else float(value))


def _ds_list(values: Sequence[float]) -> list[str]:
    return [_ds(v) for v in values]


def rescale_intercept(array: np.ndarray) -> int:
    """Intercept that lets int16 stored values (slope 1) hold the rounded HU range of `array`."""
    if array.size == 0:
        return 0
    low, high = int(np.floor(np.min(array))), int(np.ceil(np.max(array)))
    if low >= _INT16.min and high <= _INT16.max:
        return 0
    if high - low > _INT16.max - _INT16.min:
        raise ValueError(f"value range {low}..{high} does not fit 16-bit stored values")
    return low - int(_INT16.min)


def _uid(seed: str | None, *parts: str) -> UID:
    return generate_uid(entropy_srcs=[seed, *parts]) if seed is not None else generate_uid()


def _patient_id(seed: str | None) -> str:
    if seed is None:
        return "COVSEG-PHANTOM"
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", seed)
    return f"PHANTOM-{safe}"[:64]


def _dicom_date(iso: str | None) -> str | None:
    return iso.replace("-", "") if iso else None


def _series_header(volume: Volume, description: str, seed: str | None) -> Dataset:
    """Patient, study, series, frame of reference and equipment attributes shared by every slice."""
    info = volume.info
    now = _dt.datetime.now()
    date = _dicom_date(info.study_date) or (SEEDED_DATE if seed is not None else now.strftime("%Y%m%d"))
    time = SEEDED_TIME if seed is not None else now.strftime("%H%M%S")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = time
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "covseg"
    ds.ManufacturerModelName = "synthetic phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = info.study_description or "covseg synthetic chest CT"
    ds.SeriesDescription = description
    ds.PatientName = PATIENT_NAME
    ds.PatientID = _patient_id(seed)
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.BodyPartExamined = "CHEST"
    ds.KVP = ""
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = info.study_instance_uid or _uid(seed, "study")
    ds.SeriesInstanceUID = info.series_instance_uid or _uid(seed, "series", description)
    ds.StudyID = "1"
    ds.SeriesNumber = info.series_number if info.series_number is not None else 1
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = info.frame_of_reference_uid or _uid(seed, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = [_ds(-600), _ds(40)]
    ds.WindowWidth = [_ds(1500), _ds(400)]
    ds.WindowCenterWidthExplanation = ["LUNG", "MEDIASTINUM"]
    ds.RescaleSlope = _ds(1)
    ds.RescaleType = "HU"
    return ds


def _slice_dataset(header: Dataset, geometry: Geometry, k: int, pixels: np.ndarray, thickness: float,
                   seed: str | None) -> Dataset:
    direction = geometry.direction_matrix
    position = np.asarray(geometry.origin) + k * geometry.spacing[2] * direction[:, 2]
    normal = np.cross(direction[:, 0], direction[:, 1])
    ds = Dataset()
    ds.update(header)
    ds.SOPInstanceUID = _uid(seed, str(header.SeriesInstanceUID), "instance", str(k))
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = _ds_list(position)
    ds.ImageOrientationPatient = _ds_list([*direction[:, 0], *direction[:, 1]])
    ds.SliceLocation = _ds(float(position @ normal))
    ds.SliceThickness = _ds(thickness)
    ds.SpacingBetweenSlices = _ds(geometry.spacing[2])
    ds.PixelSpacing = _ds_list([geometry.spacing[1], geometry.spacing[0]])
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    return ds


def write_dicom_series(volume: Volume, folder: Path, *, series_description: str = "covseg synthetic phantom",
                       uid_seed: str | None = None, slice_thickness_mm: float | None = None) -> list[Path]:
    """Write `volume` (HU, (z, y, x)) as one CT Image file per slice into `folder`; return the paths.

    Stored values are rounded HU minus the rescale intercept (int16, slope 1). UIDs come from
    `volume.info` when present, else from `uid_seed` (deterministic) or at random. SliceThickness
    defaults to the slice spacing.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    geometry = volume.geometry
    array = np.asarray(volume.array)
    if not np.isfinite(array).all():
        raise ValueError(f"volume has {int(np.size(array) - np.isfinite(array).sum())} non-finite values; "
                         "DICOM stores integers only")
    intercept = rescale_intercept(array)
    stored = np.rint(array.astype(np.float64) - intercept).astype(np.int16)
    header = _series_header(volume, series_description, uid_seed)
    header.RescaleIntercept = _ds(intercept)
    thickness = float(slice_thickness_mm) if slice_thickness_mm is not None else float(geometry.spacing[2])
    digits = max(4, len(str(len(stored))))
    paths = []
    for k in range(stored.shape[0]):
        ds = _slice_dataset(header, geometry, k, stored[k], thickness, uid_seed)
        path = folder / f"slice_{k + 1:0{digits}d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def nifti_dtype(array: np.ndarray) -> np.dtype:
    """The dtype a NIfTI file stores: uint8 for label-like integers (0..255), int16/int32 for other
    integers, float32 for floating point (HU images)."""
    if array.dtype == np.bool_:
        return np.dtype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low >= 0 and high <= 255:
            return np.dtype(np.uint8)
        if low >= _INT16.min and high <= _INT16.max:
            return np.dtype(np.int16)
        return np.dtype(np.int32)
    return np.dtype(np.float32)


def write_nifti(volume: Volume, path: Path) -> Path:
    """Write `volume` as NIfTI (.nii or .nii.gz) with its LPS geometry (SimpleITK converts to RAS).

    Integer label maps are stored as uint8; see `nifti_dtype`. SimpleITK's gzip stream has no
    timestamp, so the same volume gives the same bytes.
    """
    import SimpleITK as sitk

    path = Path(path)
    array = np.asarray(volume.array)
    image = array_to_sitk(array.astype(nifti_dtype(array), copy=False), volume.geometry)
    sitk.WriteImage(image, str(path), useCompression=path.name.endswith(".gz"))
    return path
