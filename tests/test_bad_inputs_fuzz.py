"""Fuzzing the DICOM reader: mutated headers and bytes of a small valid series never escape as bugs.

Only covseg.errors.CovsegError subclasses may leave read_study; a read that succeeds must give a
finite float32 volume. CI runs a fixed (derandomized) set of COVSEG_FUZZ_EXAMPLES examples
(default 50); set the variable higher for a longer, randomized run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from bad_inputs import write_series
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from covseg.engine.reading import read_study
from covseg.errors import CovsegError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about every invalid value

EXAMPLES = int(os.environ.get("COVSEG_FUZZ_EXAMPLES", "50"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="COVSEG_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

N_SLICES = 4
floats = st.floats(allow_nan=True, allow_infinity=True, width=32) | st.sampled_from([0.0, -0.0, 1e30, -1e30, 1e-30])
numbers = st.lists(floats, min_size=0, max_size=7)
integers = st.integers(-(2**31), 2**32) | st.sampled_from([0, 1, 2, 3, 8, 12, 15, 16, 32, 65535])
texts = st.text(max_size=12)
SYNTAXES = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.5",
    "1.2.3.4",
    "",
]
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "ImagePositionPatient": numbers,
    "ImageOrientationPatient": numbers,
    "PixelSpacing": numbers,
    "SliceThickness": floats,
    "RescaleSlope": floats,
    "RescaleIntercept": floats,
    "Rows": integers,
    "Columns": integers,
    "BitsAllocated": integers,
    "BitsStored": integers,
    "HighBit": integers,
    "PixelRepresentation": integers,
    "SamplesPerPixel": integers,
    "NumberOfFrames": integers,
    "PixelPaddingValue": integers,
    "PhotometricInterpretation": st.sampled_from(["MONOCHROME1", "RGB", "YBR_FULL", "PALETTE COLOR", ""]) | texts,
    "Modality": st.sampled_from(["CT", "MR", "", "SR"]) | texts,
    "ImageType": st.lists(st.sampled_from(["ORIGINAL", "DERIVED", "LOCALIZER", "AXIAL", ""]), max_size=4),
    "SeriesInstanceUID": st.sampled_from(["1.2.3", "", "x"]),
    "TransferSyntaxUID": st.sampled_from(SYNTAXES),
}


@pytest.fixture(scope="module")
def series_bytes() -> list[tuple[str, bytes]]:
    with tempfile.TemporaryDirectory() as folder:
        paths = write_series(Path(folder) / "s", n=N_SLICES, shape=(8, 6))
        return [(p.name, p.read_bytes()) for p in paths]


@contextmanager
def lenient_writing() -> Iterator[None]:
    """Let pydicom write invalid values (the point of fuzzing); restored afterwards."""
    config = pydicom.config.settings
    before = config.writing_validation_mode
    config.writing_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        config.writing_validation_mode = before


def mutate_header(data: bytes, keyword: str, value: Any) -> bytes | None:
    """The file with one element set (None deletes it); None when pydicom cannot encode the value."""
    ds = pydicom.dcmread(BytesIO(data))
    target = ds.file_meta if keyword == "TransferSyntaxUID" else ds
    try:
        if value is None:
            if keyword in target:
                delattr(target, keyword)
        else:
            setattr(target, keyword, value)
        out = BytesIO()
        with lenient_writing():
            ds.save_as(out, implicit_vr=False, little_endian=True, enforce_file_format=True)
    except Exception:  # pydicom raises many types when it cannot encode a value: skip such inputs
        return None
    return out.getvalue()


def damage_bytes(data: bytes, how: str, where: float, byte: int) -> bytes:
    cut = int(len(data) * where)
    if how == "truncate":
        return data[:cut]
    if how == "flip":
        return data[:cut] + bytes([byte]) + data[cut + 1 :]
    return data[:cut] + bytes([byte]) * 16 + data[cut:]  # insert


def check_read(path: Path) -> None:
    try:
        volume = read_study(path)
    except CovsegError as error:
        assert "\n" not in str(error)
        return
    assert volume.array.dtype == np.float32
    assert np.isfinite(volume.array).all()


@FUZZ
@given(
    field=st.sampled_from(sorted(FIELDS)),
    data=st.data(),
    which=st.sampled_from(["one", "all"]),
    index=st.integers(0, N_SLICES - 1),
)
def test_header_mutations(
    series_bytes: list[tuple[str, bytes]], field: str, data: st.DataObject, which: str, index: int
) -> None:
    value = data.draw(st.none() | FIELDS[field], label="value")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for k, (name, raw) in enumerate(series_bytes):
            if which == "all" or k == index:
                raw = mutate_header(raw, field, value) or raw
            (root / name).write_bytes(raw)
        check_read(root)


@FUZZ
@given(
    how=st.sampled_from(["truncate", "flip", "insert"]),
    where=st.floats(0, 1),
    byte=st.integers(0, 255),
    index=st.integers(0, N_SLICES - 1),
    single=st.booleans(),
)
def test_byte_damage(
    series_bytes: list[tuple[str, bytes]], how: str, where: float, byte: int, index: int, single: bool
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for k, (name, raw) in enumerate(series_bytes):
            if single and k != index:
                continue
            (root / name).write_bytes(damage_bytes(raw, how, where, byte) if k == index else raw)
        check_read(root)


GROUP_FIELDS = [
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "RescaleSlope",
    "RescaleIntercept",
    "SliceThickness",
]


@pytest.fixture(scope="module")
def enhanced_bytes() -> bytes:
    """A legacy-converted enhanced CT (highdicom) of the small valid series."""
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    with tempfile.TemporaryDirectory() as folder:
        paths = write_series(Path(folder) / "s", n=N_SLICES, shape=(8, 6))
        image = LegacyConvertedEnhancedCTImage(
            [pydicom.dcmread(p) for p in paths], "1.2.826.0.1.3680043.8.498.11", 9, "1.2.826.0.1.3680043.8.498.12", 1
        )
        out = BytesIO()
        image.save_as(out)
        return out.getvalue()


def _holder(ds: pydicom.Dataset, keyword: str) -> pydicom.Dataset | None:
    """The first dataset (depth first) holding `keyword`."""
    if keyword in ds:
        return ds
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                found = _holder(item, keyword)
                if found is not None:
                    return found
    return None


def mutate_group(data: bytes, keyword: str, value: Any, frame: int) -> bytes | None:
    """The enhanced file with one functional-group element of one frame (or the shared groups) changed."""
    ds = pydicom.dcmread(BytesIO(data))
    frames = ds.PerFrameFunctionalGroupsSequence
    target = _holder(frames[frame % len(frames)], keyword) or _holder(ds.SharedFunctionalGroupsSequence[0], keyword)
    if target is None:
        return None
    try:
        if value is None:
            delattr(target, keyword)
        else:
            setattr(target, keyword, value)
        out = BytesIO()
        with lenient_writing():
            ds.save_as(out)
    except Exception:  # pydicom raises many types when it cannot encode a value: skip such inputs
        return None
    return out.getvalue()


@FUZZ
@given(data=st.data(), frame=st.integers(0, N_SLICES - 1), nested=st.booleans())
def test_enhanced_mutations(enhanced_bytes: bytes, data: st.DataObject, frame: int, nested: bool) -> None:
    field = data.draw(st.sampled_from(GROUP_FIELDS if nested else sorted(FIELDS)), label="field")
    strategy = FIELDS.get(field, numbers)
    value = data.draw(st.none() | strategy, label="value")
    raw = mutate_group(enhanced_bytes, field, value, frame) if nested else mutate_header(enhanced_bytes, field, value)
    if raw is None:
        return
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "enhanced.dcm").write_bytes(raw)
        check_read(Path(folder) / "enhanced.dcm")


@FUZZ
@given(how=st.sampled_from(["truncate", "flip", "insert"]), where=st.floats(0, 1), byte=st.integers(0, 255))
def test_enhanced_byte_damage(enhanced_bytes: bytes, how: str, where: float, byte: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "enhanced.dcm").write_bytes(damage_bytes(enhanced_bytes, how, where, byte))
        check_read(Path(folder) / "enhanced.dcm")
