"""The bad-input corpus: a small valid CT series written with pydicom, and many ways to break it.

Every case builds its input in a fresh temporary folder (nothing binary is committed) and states
the expected outcome: an InputError, or a read that succeeds with a warning (documented handling,
such as duplicate removal). `python tests/bad_inputs.py` regenerates docs/bad_inputs.md from the
messages read_study actually gives; tests/test_bad_inputs.py checks the committed table is current.
"""

from __future__ import annotations

import math
import os
import stat
import struct
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "docs" / "bad_inputs.md"
Mutate = Callable[[int, Dataset], None]


def uid(seed: str) -> str:
    """A deterministic UID, so that the generated table does not change between runs."""
    return str(generate_uid(entropy_srcs=[seed]))


def phantom(n: int, rows: int, cols: int) -> np.ndarray:
    """HU (z, y, x): air around an ellipse of soft tissue whose value changes with z (slices differ)."""
    y, x = np.mgrid[0:rows, 0:cols]
    inside = ((y - rows / 2 + 0.5) / (rows / 2.5)) ** 2 + ((x - cols / 2 + 0.5) / (cols / 2.5)) ** 2 < 1
    volume = np.full((n, rows, cols), -1000, dtype=np.int16)
    for k in range(n):
        volume[k][inside] = 20 + 10 * k
    return volume


def set_pixels(ds: Dataset, hu: np.ndarray, *, intercept: float = -1024.0) -> None:
    """Store `hu` as unsigned 16-bit values with the given rescale intercept (slope 1)."""
    ds.Rows, ds.Columns = hu.shape
    ds.PixelData = (hu.astype(np.int32) - int(intercept)).astype("<u2").tobytes()


def base_dataset(series: str, k: int, modality: str = "CT") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid(f"{series}-sop-{k}")
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "BAD^INPUT", "BAD001", "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid(f"series-{series}")
    ds.FrameOfReferenceUID = uid("frame")
    ds.StudyDate, ds.StudyDescription, ds.SeriesDescription = "20200401", "corpus", f"series {series}"
    ds.SeriesNumber, ds.AccessionNumber = 7, "ACC1"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    return ds


def write_series(
    folder: Path,
    *,
    n: int = 5,
    shape: tuple[int, int] = (12, 10),
    pixel: tuple[float, float] = (0.8, 0.7),
    step: float = 2.5,
    iop: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    origin: tuple[float, float, float] = (-5.0, -4.0, 10.0),
    series: str = "a",
    modality: str = "CT",
    mutate: Mutate | None = None,
) -> list[Path]:
    """A valid series of `n` slices (InstanceNumber descending, so sorting must use positions)."""
    folder.mkdir(parents=True, exist_ok=True)
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    hu = phantom(n, *shape)
    paths = []
    for k in range(n):
        ds = base_dataset(series, k, modality)
        ds.InstanceNumber = n - k
        ds.ImagePositionPatient = [round(float(v), 4) for v in np.asarray(origin) + k * step * normal]
        ds.ImageOrientationPatient = list(iop)
        ds.PixelSpacing, ds.SliceThickness = list(pixel), step
        set_pixels(ds, hu[k])
        if mutate is not None:
            mutate(k, ds)
        path = folder / f"{series}{k:03d}.dcm"
        ds.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=True)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class Case:
    """One bad input: how to build it, and what read_study must say about it."""

    name: str
    what: str
    build: Callable[[Path], Path]
    expect: tuple[str, ...]  # substrings the message must contain (the culprit)
    outcome: str = "InputError"  # or "warning": read succeeds and a warning contains `expect`
    kwargs: dict[str, Any] = field(default_factory=dict)
    skip: Callable[[], str | None] = lambda: None


def outcome_of(case: Case, root: Path) -> tuple[str, str]:
    """(outcome, message) of read_study on the case's input built under `root`."""
    from covseg.engine.reading import read_study
    from covseg.errors import InputError

    path = case.build(root)
    try:
        volume = read_study(path, **case.kwargs)
    except InputError as error:
        return "InputError", str(error)
    return "warning" if volume.info.warnings else "read", " | ".join(volume.info.warnings)


def render_table(rows: list[tuple[Case, str, str]]) -> str:
    """The markdown table of docs/bad_inputs.md (tmp paths replaced by <tmp>)."""
    lines = ["| case | input | outcome | message |", "|---|---|---|---|"]
    for case, outcome, message in rows:
        text = message.replace("|", "\\|")
        lines.append(f"| `{case.name}` | {case.what} | {outcome} | {text} |")
    return "\n".join(lines) + "\n"


# --- builders --------------------------------------------------------------------------------


def series(mutate: Mutate | None = None, **options: Any) -> Callable[[Path], Path]:
    """A builder writing one series (mutated per slice) into root/s and returning that folder."""

    def build(root: Path) -> Path:
        write_series(root / "s", mutate=mutate, **options)
        return root / "s"

    return build


def then(build: Callable[[Path], Path], change: Callable[[Path], Path | None]) -> Callable[[Path], Path]:
    """A builder that runs `build`, then `change` on its output (returning a new input path or None)."""

    def run(root: Path) -> Path:
        path = build(root)
        return change(path) or path

    return run


def truncate(name: str, keep: float | int) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        target = folder / name
        data = target.read_bytes()
        target.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])

    return change


def patch_bytes(name: str, old: bytes, new: bytes) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        data = (folder / name).read_bytes()
        assert old in data
        (folder / name).write_bytes(data.replace(old, new, 1))

    return change


def write_file(name: str, content: bytes) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        (folder / name).write_bytes(content)

    return change


def only(name: str) -> Callable[[Path], Path]:
    """Change: delete every other file, so `name` is the only input."""

    def change(folder: Path) -> Path:
        for path in folder.iterdir():
            if path.name != name:
                path.unlink()
        return folder / name

    return change


def copy_slice(name: str, new_name: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        from pydicom import dcmread

        ds = dcmread(folder / name)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid(f"copy-{new_name}")
        ds.save_as(folder / new_name, enforce_file_format=True)

    return change


def extra_slice(new_name: str, **fields: Any) -> Callable[[Path], None]:
    """Change: add one slice whose header fields (and matrix, via `shape`) differ."""

    def change(folder: Path) -> None:
        shape = fields.pop("shape", (12, 10))
        ds = base_dataset("a", 99)
        ds.InstanceNumber, ds.PixelSpacing = 99, [0.8, 0.7]
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [-5, -4, 10], [1, 0, 0, 0, 1, 0]
        set_pixels(ds, np.full(shape, -1000, np.int16))
        for key, value in fields.items():
            setattr(ds, key, value)
        ds.save_as(folder / new_name, enforce_file_format=True)

    return change


def non_image(name: str, sop_class: str, modality: str | None) -> Callable[[Path], None]:
    """Change: add a DICOM object without pixel data (report, DICOMDIR) beside the slices."""

    def change(folder: Path) -> None:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = uid(name)
        if modality is not None:
            ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, uid(name), modality
            ds.SeriesInstanceUID, ds.StudyInstanceUID = uid(f"series-{name}"), uid("study")
        ds.save_as(folder / name, implicit_vr=False, little_endian=True, enforce_file_format=True)

    return change


def setter(**fields: Any) -> Mutate:
    def mutate(k: int, ds: Dataset) -> None:
        for key, value in fields.items():
            setattr(ds, key, value)

    return mutate


def deleter(*keywords: str, at: int | None = None) -> Mutate:
    def mutate(k: int, ds: Dataset) -> None:
        if at is None or k == at:
            for keyword in keywords:
                delattr(ds, keyword)

    return mutate


def position(fn: Callable[[int, list[float]], list[float]]) -> Mutate:
    def mutate(k: int, ds: Dataset) -> None:
        ds.ImagePositionPatient = [round(v, 4) for v in fn(k, [float(v) for v in ds.ImagePositionPatient])]

    return mutate


def _signed_hu(k: int, ds: Dataset) -> None:
    del ds.RescaleIntercept, ds.RescaleSlope
    ds.PixelRepresentation = 1
    ds.PixelData = phantom(5, 12, 10)[k].astype("<i2").tobytes()


def _mixed_matrix(k: int, ds: Dataset) -> None:
    if k == 2:
        set_pixels(ds, np.full((14, 10), -1000, np.int16))


def _rgb_capture(k: int, ds: Dataset) -> None:
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = bytes(12 * 10 * 3)


def _absurd(k: int, ds: Dataset) -> None:
    ds.Rows, ds.Columns = 65535, 65535  # pixel data stays 240 bytes: only the header is absurd


def _fake_syntax(k: int, ds: Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.8.498.4242"


def _mpeg2(k: int, ds: Dataset) -> None:
    from pydicom.encaps import encapsulate

    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video: pydicom has no decoder
    ds.PixelData = encapsulate([bytes(ds.PixelData)])
    ds["PixelData"].VR = "OB"


def _two_series(root: Path) -> Path:
    write_series(root / "s", series="a")
    write_series(root / "s", series="b")
    return root / "s"


def _stacked_volumes(root: Path) -> Path:
    write_series(root / "s", series="a")
    for k in range(5):
        copy_slice(f"a{k:03d}.dcm", f"b{k:03d}.dcm")(root / "s")
    return root / "s"


def _single(root: Path) -> Path:
    write_series(root / "s", n=1)
    return root / "s"


def _enhanced_bad_count(root: Path) -> Path:
    from highdicom.legacy import LegacyConvertedEnhancedCTImage
    from pydicom import dcmread

    paths = write_series(root / "classic")
    frames = LegacyConvertedEnhancedCTImage([dcmread(p) for p in paths], uid("enh-series"), 8, uid("enh-sop"), 1)
    frames.NumberOfFrames = 6
    frames.save_as(root / "enhanced.dcm")
    return root / "enhanced.dcm"


def zipped(
    extra: Callable[[zipfile.ZipFile], None] | None = None, *, with_series: bool = True
) -> Callable[[Path], Path]:
    """A builder for a zip of the valid series plus whatever `extra` adds."""

    def build(root: Path) -> Path:
        archive = root / "study.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
            if with_series:
                for path in write_series(root / "s"):
                    handle.write(path, f"DICOM/{path.name}")
            if extra is not None:
                extra(handle)
        return archive

    return build


def _symlink_member(handle: zipfile.ZipFile) -> None:
    info = zipfile.ZipInfo("DICOM/link.dcm")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    handle.writestr(info, "/etc/passwd")


def image(array: np.ndarray, name: str, *, spacing: tuple[float, ...] | None = None, vector: bool = False):  # type: ignore[no-untyped-def]
    """A builder writing `array` (numpy order) with SimpleITK as `name`."""

    def build(root: Path) -> Path:
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(array, isVector=vector)
        if spacing is not None:
            img.SetSpacing(spacing)
        sitk.WriteImage(img, str(root / name))
        return root / name

    return build


def _nifti_header_only(root: Path) -> Path:
    """A NIfTI header claiming 30000^3 voxels over a few bytes of data."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((30_000, 30_000, 30_000))
    header["vox_offset"] = 352
    (root / "huge.nii").write_bytes(header.binaryblock + bytes(4) + bytes(64))
    return root / "huge.nii"


def _nifti_zero_pixdim(root: Path) -> Path:
    """pixdim[1] = 0 written raw (nibabel and ITK would both silently 'fix' it to 1)."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape((4, 5, 6))
    header["vox_offset"] = 352
    block = bytearray(header.binaryblock)
    block[80:84] = struct.pack("<f", 0.0)
    (root / "zero.nii").write_bytes(bytes(block) + bytes(4) + bytes(4 * 5 * 6 * 4))
    return root / "zero.nii"


def _metaimage(name: str, line: str) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        head = "" if "NDims" in line else "NDims = 3\nDimSize = 4 5 6\n"
        text = f"ObjectType = Image\n{head}{line}\nElementType = MET_SHORT\nElementDataFile = LOCAL\n"
        (root / name).write_bytes(text.encode() + bytes(4 * 5 * 6 * 2))
        return root / name

    return build


def _unreadable(root: Path) -> Path:
    paths = write_series(root / "s", n=1)
    paths[0].chmod(0)
    return paths[0]


def _as_root() -> str | None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "running as root: chmod 000 does not stop root from reading"
    return None


def _files(**files: bytes) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        (root / "d").mkdir()
        for name, content in files.items():
            (root / "d" / name.replace("_", ".")).write_bytes(content)
        return root / "d"

    return build


def _text_file(name: str, content: bytes) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        (root / name).write_bytes(content)
        return root / name

    return build


def _empty(root: Path) -> Path:
    (root / "empty").mkdir()
    return root / "empty"


TILT = math.tan(math.radians(15))
VOL = phantom(5, 12, 10).astype(np.float32)

CASES: list[Case] = [
    # --- series structure
    Case(
        "missing_slice",
        "5-slice series with the middle slice deleted",
        then(series(), lambda f: (f / "a002.dcm").unlink()),
        ("missing slice", "a001.dcm", "a003.dcm"),
    ),
    Case(
        "duplicate_slice",
        "a slice copied under another SOPInstanceUID",
        then(series(), copy_slice("a002.dcm", "z_copy.dcm")),
        ("duplicate", "z_copy.dcm"),
        "warning",
    ),
    Case(
        "several_volumes_same_positions",
        "every slice present twice (two volumes in one series)",
        _stacked_volumes,
        ("share positions",),
    ),
    Case("two_series", "two CT series in one folder", _two_series, (uid("series-a"), uid("series-b"), "--series-uid")),
    Case(
        "series_uid_absent",
        "--series-uid naming no series in the folder",
        series(),
        ("1.2.3.4", "not in"),
        kwargs={"series_uid": "1.2.3.4"},
    ),
    Case(
        "localizer_mixed_in",
        "a LOCALIZER image (sagittal, 8x8) among the slices",
        then(
            series(),
            extra_slice(
                "loc.dcm",
                ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
                ImageOrientationPatient=[0, 1, 0, 0, 0, -1],
                shape=(8, 8),
            ),
        ),
        ("localizer", "loc.dcm"),
        "warning",
    ),
    Case(
        "other_orientation_mixed_in",
        "a coronal image without LOCALIZER in ImageType among the slices",
        then(series(), extra_slice("coronal.dcm", ImageOrientationPatient=[1, 0, 0, 0, 0, -1])),
        ("another orientation", "coronal.dcm"),
        "warning",
    ),
    Case("single_slice", "a series of one slice", _single, ("only 1 slice", "a000.dcm")),
    Case(
        "mixed_matrix_sizes", "one slice 14x10 among 12x10 slices", series(_mixed_matrix), ("mixed matrix", "a002.dcm")
    ),
    Case(
        "derived_mixed_in",
        "a DERIVED\\SECONDARY image at the position of slice 2",
        then(
            series(),
            extra_slice("derived.dcm", ImageType=["DERIVED", "SECONDARY", "AXIAL"], ImagePositionPatient=[-5, -4, 15]),
        ),
        ("DERIVED", "derived.dcm"),
        "warning",
    ),
    Case(
        "secondary_capture_mixed_in",
        "a Secondary Capture image (same geometry) among the slices",
        then(
            series(),
            extra_slice("capture.dcm", SOPClassUID="1.2.840.10008.5.1.4.1.1.7", ImagePositionPatient=[-5, -4, 15]),
        ),
        ("secondary capture", "capture.dcm"),
        "warning",
    ),
    Case(
        "report_and_dicomdir_beside_series",
        "a structured report and a DICOMDIR (no pixel data) beside the slices",
        then(
            then(series(), non_image("report.dcm", "1.2.840.10008.5.1.4.1.1.88.11", "SR")),
            non_image("DICOMDIR", "1.2.840.10008.1.3.10", None),
        ),
        (),
        "read",
    ),
    Case(
        "localizer_series_beside_ct",
        "a separate series holding one LOCALIZER image beside the CT series",
        then(
            series(),
            extra_slice(
                "scout.dcm",
                ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
                SeriesInstanceUID=uid("series-scout"),
                ImageOrientationPatient=[0, 1, 0, 0, 0, -1],
            ),
        ),
        (),
        "read",
    ),
    Case(
        "nifti_in_folder",
        "a folder holding a NIfTI file instead of DICOM",
        lambda root: image(VOL, "ct.nii.gz")(root) and root,
        ("ct.nii.gz", "pass it instead"),
    ),
    Case(
        "corrupt_element_in_one_slice",
        "slice 2's Modality element has a corrupt VR (bytes 'C\\0')",
        then(series(), patch_bytes("a002.dcm", b"\x08\x00\x60\x00CS", b"\x08\x00\x60\x00C\x00")),
        ("unparseable element (0008,0060)", "a002.dcm"),
        "warning",
    ),
    # --- geometry
    Case(
        "gantry_tilt",
        "positions drift in y by tan(15 deg) per mm along z",
        series(position(lambda k, p: [p[0], p[1] + k * 2.5 * TILT, p[2]])),
        ("gantry tilt", "a001.dcm"),
    ),
    Case(
        "uneven_spacing",
        "slice 3 is 1 mm further than the 2.5 mm spacing",
        series(position(lambda k, p: [p[0], p[1], p[2] + (1.0 if k >= 3 else 0.0)])),
        ("uneven", "a002.dcm", "a003.dcm"),
    ),
    Case(
        "zero_slice_spacing",
        "all slices at the same position",
        series(position(lambda k, p: [-5, -4, 10])),
        ("share positions",),
    ),
    Case(
        "zero_pixel_spacing", "PixelSpacing 0\\0.7", series(setter(PixelSpacing=[0, 0.7])), ("PixelSpacing", "a000.dcm")
    ),
    Case(
        "negative_pixel_spacing",
        "PixelSpacing -0.8\\0.7",
        series(setter(PixelSpacing=[-0.8, 0.7])),
        ("PixelSpacing", "a000.dcm"),
    ),
    Case(
        "non_orthonormal_orientation",
        "ImageOrientationPatient 1\\0\\0\\0.5\\0.8\\0",
        series(setter(ImageOrientationPatient=[1, 0, 0, 0.5, 0.8, 0])),
        ("ImageOrientationPatient", "a000.dcm"),
    ),
    Case(
        "missing_position",
        "slice 1 has no ImagePositionPatient",
        series(deleter("ImagePositionPatient", at=1)),
        ("ImagePositionPatient", "a001.dcm"),
    ),
    Case(
        "absurd_dimensions",
        "headers claim 65535x65535 x 5 slices (pixel data tiny)",
        series(_absurd),
        ("exceeds the limit", "65535"),
    ),
    # --- content
    Case("mr_modality", "Modality MR", series(modality="MR"), ("modality MR", "--force")),
    Case(
        "mr_modality_forced",
        "Modality MR with force=True",
        series(modality="MR"),
        ("modality MR",),
        "warning",
        kwargs={"force": True},
    ),
    Case("rgb_secondary_capture", "RGB Secondary Capture images", series(_rgb_capture), ("colour image", "a000.dcm")),
    Case(
        "missing_rescale",
        "no RescaleSlope/Intercept, unsigned stored values 24..1064",
        series(deleter("RescaleIntercept", "RescaleSlope")),
        ("RescaleIntercept", "a000.dcm"),
    ),
    Case(
        "missing_rescale_signed_hu",
        "no RescaleSlope/Intercept, signed stored values already in HU",
        series(_signed_hu),
        ("RescaleIntercept", "air"),
        "warning",
    ),
    Case("zero_rescale_slope", "RescaleSlope 0", series(setter(RescaleSlope=0)), ("RescaleSlope", "a000.dcm")),
    Case(
        "unsupported_transfer_syntax",
        "a made-up transfer syntax UID (no decoder exists)",
        series(_fake_syntax),
        ("transfer syntax", "1.2.826.0.1.3680043.8.498.4242", "a000.dcm"),
    ),
    Case(
        "video_transfer_syntax",
        "pixel data labelled MPEG2 Main Profile (a real syntax with no decoder)",
        series(_mpeg2),
        ("transfer syntax 1.2.840.10008.1.2.4.100", "MPEG2", "a000.dcm"),
    ),
    Case(
        "enhanced_frame_count",
        "enhanced CT whose NumberOfFrames disagrees with its functional groups",
        _enhanced_bad_count,
        ("NumberOfFrames", "enhanced.dcm"),
    ),
    # --- damaged files
    Case(
        "truncated_middle_slice",
        "slice 2 cut to half its bytes",
        then(series(), truncate("a002.dcm", 0.5)),
        ("missing slice", "a002.dcm is truncated"),
    ),
    Case(
        "truncated_last_slice",
        "last slice cut to half its bytes (skipped, 4 slices read)",
        then(series(), truncate("a004.dcm", 0.5)),
        ("a004.dcm is truncated",),
        "warning",
    ),
    Case(
        "truncated_pixels_middle_slice",
        "slice 2 missing its last 100 pixel bytes",
        then(series(), truncate("a002.dcm", -100)),
        ("missing slice", "a002.dcm is truncated"),
    ),
    Case(
        "truncated_only_file",
        "a file missing its last 100 pixel bytes, as the only input",
        then(then(series(), truncate("a000.dcm", -100)), only("a000.dcm")),
        ("a000.dcm", "truncated"),
    ),
    Case(
        "truncated_header",
        "a file cut inside its header, as the only input",
        then(then(series(n=1), truncate("a000.dcm", 300)), only("a000.dcm")),
        ("a000.dcm",),
    ),
    Case(
        "zero_byte_file_in_series",
        "an empty extra.dcm beside a good series",
        then(series(), write_file("extra.dcm", b"")),
        ("extra.dcm", "empty"),
        "warning",
    ),
    Case(
        "zero_byte_only_file",
        "an empty .dcm file as the input",
        then(then(series(), write_file("extra.dcm", b"")), only("extra.dcm")),
        ("extra.dcm", "empty"),
    ),
    Case(
        "non_dicom_named_dcm_in_series",
        "a text file notes.dcm beside a good series",
        then(series(), write_file("notes.dcm", b"not an image\n" * 20)),
        ("notes.dcm", "not a DICOM"),
        "warning",
    ),
    Case(
        "non_dicom_named_dcm_only",
        "a text file named .dcm as the input",
        then(then(series(), write_file("notes.dcm", b"not an image\n" * 20)), only("notes.dcm")),
        ("notes.dcm", "not a DICOM"),
    ),
    Case(
        "unreadable_file",
        "a chmod 000 file as the only input",
        _unreadable,
        ("a000.dcm", "permission denied"),
        skip=_as_root,
    ),
    # --- folders and paths
    Case("empty_folder", "an empty folder", _empty, ("empty",)),
    Case("nonexistent_path", "a path that does not exist", lambda root: root / "nope", ("nope", "no such file")),
    Case(
        "only_non_image_files",
        "a folder with README.txt and boxes.xml",
        _files(README_txt=b"hi", boxes_xml=b"<a/>"),
        ("no DICOM image series",),
    ),
    # --- zips
    Case(
        "zip_path_traversal",
        "zip with a member ../evil.dcm",
        zipped(lambda z: z.writestr("../evil.dcm", b"x")),
        ("../evil.dcm", "path traversal"),
    ),
    Case(
        "zip_absolute_member",
        "zip with a member /tmp/evil.dcm",
        zipped(lambda z: z.writestr("/tmp/evil.dcm", b"x")),
        ("/tmp/evil.dcm", "path traversal"),
    ),
    Case(
        "zip_symlink_member", "zip with a symbolic-link member", zipped(_symlink_member), ("link.dcm", "symbolic link")
    ),
    Case(
        "zip_bomb",
        "zip with a 16 MiB member of zeros (expands ~1000x)",
        zipped(lambda z: z.writestr("DICOM/big.dcm", bytes(16 << 20))),
        ("big.dcm", "zip bomb"),
    ),
    Case(
        "zip_without_dicom",
        "zip holding only readme.txt",
        zipped(lambda z: z.writestr("readme.txt", b"hi"), with_series=False),
        ("no DICOM image series",),
    ),
    Case(
        "not_a_zip", "a text file named study.zip", _text_file("study.zip", b"hi"), ("study.zip", "not a readable zip")
    ),
    # --- NIfTI / NRRD / MetaImage
    Case(
        "nifti_nan",
        "NIfTI float volume with NaN voxels",
        image(np.where(VOL == 20, np.nan, VOL), "nan.nii.gz"),
        ("nan.nii.gz", "NaN"),
    ),
    Case(
        "nifti_inf",
        "NIfTI float volume with +inf voxels",
        image(np.where(VOL == 20, np.inf, VOL), "inf.nii.gz"),
        ("inf.nii.gz", "infinite"),
    ),
    Case("image_2d", "a 2-D NIfTI image", image(VOL[0], "slice.nii.gz"), ("slice.nii.gz", "2-D")),
    Case(
        "image_4d", "a 4-D NIfTI with 2 volumes", image(np.stack([VOL, VOL]), "series.nii.gz"), ("series.nii.gz", "4-D")
    ),
    Case(
        "image_4d_singleton",
        "a 4-D NIfTI with 1 volume (ITK drops the singleton axis)",
        image(VOL[None], "one.nii.gz"),
        (),
        "read",
    ),
    Case(
        "mha_4d_singleton",
        "a 4-D MetaImage with 1 volume (squeezed with a warning)",
        _metaimage("one.mha", "NDims = 4\nDimSize = 4 5 6 1"),
        ("read as 3-D",),
        "warning",
    ),
    Case(
        "nifti_header_absurd",
        "NIfTI header claiming 2.7e13 voxels over 64 bytes",
        _nifti_header_only,
        ("huge.nii", "over the limit"),
    ),
    Case("nifti_zero_pixdim", "NIfTI with pixdim[1] = 0", _nifti_zero_pixdim, ("zero.nii", "pixdim")),
    Case(
        "mha_negative_spacing",
        "MetaImage ElementSpacing -1 1 1",
        _metaimage("neg.mha", "ElementSpacing = -1 1 1"),
        ("neg.mha", "spacing"),
    ),
    Case(
        "mha_non_orthonormal",
        "MetaImage TransformMatrix with a sheared axis",
        _metaimage("shear.mha", "TransformMatrix = 1 0 0 0.5 1 0 0 0 1"),
        ("shear.mha", "not orthonormal"),
    ),
    Case(
        "nrrd_rgb",
        "a 3-component (RGB) NRRD volume",
        image(np.zeros((5, 6, 7, 3), np.uint8), "rgb.nrrd", vector=True),
        ("rgb.nrrd", "components"),
    ),
    Case(
        "text_named_nii_gz",
        "a text file named scan.nii.gz",
        _text_file("scan.nii.gz", b"hello"),
        ("scan.nii.gz", "nifti"),
    ),
]

DOC_HEAD = """# Bad inputs: what `read_study` does with them

Generated by `python tests/bad_inputs.py` from the messages `covseg.engine.reading.read_study`
actually gives (temporary folders shown as `<tmp>`); `tests/test_bad_inputs.py` fails when this
table is out of date. Every input is built in a temporary folder from a small valid CT series
written with pydicom (5 slices of 12x10, 2.5 mm apart, InstanceNumber descending) or with
SimpleITK; nothing binary is committed. Every refusal is a `covseg.errors.InputError` (exit code 3)
with one line naming the file, slice, tag or value at fault.

## Policies and tolerances

- **Series choice.** A folder is searched recursively and its files grouped by SeriesInstanceUID.
  Series made only of localizers or secondary captures are not candidates. Exactly one CT series
  is read; several are refused with a list (UID, description, modality, slice count) and a hint to
  pick one with `--series-uid`. A non-CT series is refused unless `force=True` (then read with a
  warning).
- **Images left out with a warning:** ImageType LOCALIZER; images whose orientation differs from
  the majority of the series (reformats, unlabelled scouts); duplicate positions (the first by
  file name is kept), unless half or more of the slices are duplicates, which means several
  volumes in one series and is refused; unreadable, empty or non-DICOM files (a warning only when
  named `.dcm`/`.dicom`/`.ima` or carrying the DICM marker, so READMEs and annotations pass
  silently); uncompressed files shorter than their pixel data (truncated).
- **Sorting** is by distance along the slice normal (row x column cosines), never by InstanceNumber.
- **Spacing:** a gap may differ from the median gap by 0.05 mm + 2 % of it. A gap close to a
  whole multiple of the median is reported as missing slices, any other as uneven spacing; both
  are refused naming the two slices around the gap (file name and position). The slice spacing of
  the grid is (last - first) / (n - 1).
- **Tilt:** every slice must lie on the normal through the first slice within 0.1 mm + tan(0.1 deg)
  x its distance along the normal; otherwise refused as gantry tilt (covseg does not resample
  tilted stacks), naming the first slice off the normal and the angle.
- **Orientation:** row and column cosines must be unit vectors and perpendicular within 1e-3
  (then re-orthonormalised); NIfTI/NRRD/MHA directions must be orthonormal within 1e-4.
- **Spacing values:** PixelSpacing, NIfTI pixdim and ITK spacing must be finite and positive
  (the raw NIfTI pixdim is checked because ITK silently turns 0 into 1).
- **Rescale:** RescaleSlope/RescaleIntercept are applied per slice (enhanced CT: per frame, from
  the Pixel Value Transformation functional group). A missing slope alone means 1. When
  RescaleIntercept is missing, the stored values are taken as HU (slope 1, intercept 0) with a
  warning only if they contain air (some value at or below -500), as IRCAD-style signed files do;
  otherwise the series is refused rather than guessing an offset (unsigned data without the
  -1024 intercept would put air at 0 HU). A slope of 0, or a rescale that overflows float32, is
  refused.
- **Pixel padding:** stored values equal to PixelPaddingValue (or within PixelPaddingRangeLimit)
  become -1024 HU (air).
- **Size guard:** rows x columns x frames summed over the chosen series' headers (or the image
  header for NIfTI/NRRD/MHA) must not exceed `max_voxels` (default 1.5e9); checked before any
  pixel buffer is allocated.
- **Dimensions:** 2-D images (or a third axis of 1) and 4-D images with more than one volume are
  refused; a 4-D image with a single volume is read as 3-D with a warning. At least 2 slices.
- **Decoders:** pixel data is decoded by pydicom with pylibjpeg-openjpeg (JPEG 2000),
  pyjpegls (JPEG-LS, preferred: about 3x faster here than pylibjpeg-libjpeg) and pylibjpeg-libjpeg
  (JPEG). A transfer syntax without an installed decoder is refused naming the syntax before any
  decoding; a codestream that fails to decode is refused naming the file.
- **Zip:** extracted to a temporary folder that is always removed. Members with absolute paths,
  drive letters or `..`, and symbolic links are refused; a member claiming to expand more than 200x
  (and over 1 MiB), or contents beyond 4 bytes x `max_voxels` + 64 MiB, are refused as zip bombs.
  `source_files` of a zipped study are reported as `<zip path>/<member>`.
- **NIfTI/NRRD/MHA:** NaN or infinite voxels, colour/vector voxels and complex voxels are refused.

## Corpus

"""
DOC_TAIL = """
Outcome `warning`: the study is read and the message is the warning(s) recorded in
`StudyInfo.warnings`. Outcome `skipped`: the case cannot be built on this machine (reason given).
"""


def run_corpus() -> list[tuple[Case, str, str]]:
    """Every case's actual (outcome, message), temporary paths replaced by <tmp>."""
    rows = []
    for case in CASES:
        reason = case.skip()
        if reason:
            rows.append((case, "skipped", reason))
            continue
        with tempfile.TemporaryDirectory(prefix="covseg-bad-") as folder:
            outcome, message = outcome_of(case, Path(folder))
            rows.append((case, outcome, message.replace(str(Path(folder).resolve()), "<tmp>").replace(folder, "<tmp>")))
    return rows


if __name__ == "__main__":
    TABLE.write_text(DOC_HEAD + render_table(run_corpus()) + DOC_TAIL)
    print(f"wrote {TABLE}")
