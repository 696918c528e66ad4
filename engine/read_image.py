"""Reading NIfTI, NRRD and MetaImage volumes with SimpleITK, with the checks DICOM gets too.

SimpleITK already turns each format's orientation convention into LPS (NIfTI's RAS affine
included), so `Geometry.from_sitk` is the only conversion. The header is read first
(`ReadImageInformation`) so that absurd sizes and wrong dimensionality are refused before
any pixel buffer exists.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from covseg.engine.geometry import ORTHONORMAL_TOLERANCE, Geometry
from covseg.engine.volume import StudyInfo, Volume
from covseg.errors import InputError

FORMATS = {".nii": "nifti", ".nii.gz": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "mha", ".mhd": "mha"}


def image_format(path: Path) -> str | None:
    """The format a file name announces (nifti, nrrd, mha), or None."""
    name = path.name.lower()
    for suffix, fmt in FORMATS.items():
        if name.endswith(suffix):
            return fmt
    return None


def itk_reason(error: BaseException) -> str:
    """The useful line of a (multi-line) ITK exception message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if line.lower().startswith("description:"):
            return line.split(":", 1)[1].strip()
    return lines[-1] if lines else type(error).__name__


def image_header(path: Path, fmt: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(f"{path}: not a readable {fmt} image ({itk_reason(error)})") from error
    return reader


def _check_header(reader: sitk.ImageFileReader, path: Path, max_voxels: int) -> None:
    size = tuple(int(v) for v in reader.GetSize())
    if reader.GetNumberOfComponents() != 1:
        raise InputError(f"{path}: {reader.GetNumberOfComponents()} components per voxel (colour or vector image)")
    if len(size) < 3 or (len(size) == 3 and size[2] == 1):
        raise InputError(f"{path}: a 2-D image (size {list(size)}); covseg needs a 3-D CT volume")
    if len(size) > 4 or (len(size) == 4 and size[3] != 1):
        raise InputError(f"{path}: a {len(size)}-D image (size {list(size)}); covseg reads one 3-D volume")
    if min(size[:3]) < 2:
        raise InputError(f"{path}: size {list(size[:3])} has an axis shorter than 2 voxels")
    voxels = int(np.prod(np.array(size, dtype=np.float64)))
    if voxels > max_voxels:
        raise InputError(f"{path}: size {list(size)} is {voxels:,} voxels, over the limit of {max_voxels:,}")
    spacing = reader.GetSpacing()[:3]
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise InputError(f"{path}: spacing {list(spacing)} must be finite and positive")
    direction = np.asarray(reader.GetDirection(), dtype=float).reshape(len(size), len(size))[:3, :3]
    if not np.all(np.isfinite(direction)) or not np.allclose(
        direction.T @ direction, np.eye(3), atol=ORTHONORMAL_TOLERANCE
    ):
        raise InputError(f"{path}: direction {direction.reshape(-1).round(4).tolist()} is not orthonormal")


def _nifti_head(path: Path) -> bytes:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            return bytes(handle.read(540))
    except (OSError, EOFError, gzip.BadGzipFile):
        return b""


def _nifti_layout(head: bytes) -> tuple[str, int, tuple[float, ...], int, int, int] | None:
    """(byte order, NIfTI version, pixdim[1:4], datatype, vox_offset, voxel count), or None if not NIfTI."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            dims = struct.unpack(order + "8h", head[40:56])
            count = int(np.prod([max(int(d), 1) for d in dims[1 : 1 + max(0, min(int(dims[0]), 7))]]))
            datatype = struct.unpack(order + "h", head[70:72])[0]
            offset = int(struct.unpack(order + "f", head[108:112])[0])
            return order, 1, struct.unpack(order + "3f", head[80:92]), datatype, offset, count
        if len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:
            dims = struct.unpack(order + "8q", head[16:80])
            count = int(np.prod([max(int(d), 1) for d in dims[1 : 1 + max(0, min(int(dims[0]), 7))]]))
            datatype = struct.unpack(order + "h", head[12:14])[0]
            offset = int(struct.unpack(order + "q", head[168:176])[0])
            return order, 2, struct.unpack(order + "3d", head[112:136]), datatype, offset, count
    return None


NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _check_nifti_raw(path: Path) -> None:
    """Checks ITK hides: it reads a zero pixdim as 1 and non-finite float voxels as 0.

    Hand-parsed (nibabel is not an engine dependency); float data is streamed once more in
    chunks, which costs a second decompression only for float NIfTI (CT is usually int16).
    """
    layout = _nifti_layout(_nifti_head(path))
    if layout is None:
        return
    order, _version, pixdim, datatype, offset, count = layout
    if not all(np.isfinite(pixdim)) or min(pixdim) <= 0:
        raise InputError(f"{path}: NIfTI pixdim[1:4] {[float(v) for v in pixdim]} must be finite and positive")
    if datatype not in NIFTI_FLOATS:
        return
    dtype = np.dtype(order + NIFTI_FLOATS[datatype])
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    bad, seen = 0, 0
    with opener(path, "rb") as handle:
        handle.seek(offset)
        while seen < count and (chunk := handle.read(min(count - seen, 1 << 22) * dtype.itemsize)):
            values = np.frombuffer(chunk[: len(chunk) - len(chunk) % dtype.itemsize], dtype=dtype)
            bad += int(np.count_nonzero(~np.isfinite(values)))
            seen += values.size
    if bad:
        raise InputError(f"{path}: {bad} voxels are NaN or infinite")


def _squeeze_4d(image: sitk.Image) -> sitk.Image:
    """A 4-D image with one time point as 3-D (ITK keeps the 4th axis; Extract drops it)."""
    if image.GetDimension() == 3:
        return image
    size = list(image.GetSize())
    return sitk.Extract(image, [*size[:3], 0], [0, 0, 0, 0])


def read_image(path: Path, fmt: str, *, max_voxels: int) -> Volume:
    """A NIfTI / NRRD / MHA file as a float32 (z, y, x) Volume, its geometry in LPS."""
    reader = image_header(path, fmt)
    _check_header(reader, path, max_voxels)
    if fmt == "nifti":
        _check_nifti_raw(path)
    try:
        image = _squeeze_4d(reader.Execute())
    except RuntimeError as error:
        raise InputError(f"{path}: pixel data cannot be read ({itk_reason(error)})") from error
    array = sitk.GetArrayFromImage(image)
    if np.iscomplexobj(array):
        raise InputError(f"{path}: complex voxel type {image.GetPixelIDTypeAsString()}")
    array = array.astype(np.float32, copy=False)
    bad = ~np.isfinite(array)
    if bad.any():
        z, y, x = (int(v) for v in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(array[z, y, x]) else "infinite"
        raise InputError(f"{path}: {int(bad.sum())} voxels are NaN or infinite (first, {kind}, at x={x} y={y} z={z})")
    try:
        geometry = Geometry.from_sitk(image)
    except ValueError as error:
        raise InputError(f"{path}: invalid geometry ({error})") from error
    warnings: tuple[str, ...] = ()
    if len(reader.GetSize()) == 4:
        warnings = (f"4-D image with one volume in the 4th axis (size {list(reader.GetSize())}) read as 3-D",)
    info = StudyInfo(format=fmt, source_path=path, source_files=(path,), warnings=warnings)
    return Volume(array=array, geometry=geometry, info=info)
