"""The label map output: uint8, exactly on the input grid, NIfTI (default) or NRRD, via SimpleITK.

SimpleITK writes the LPS geometry into the file's own convention (RAS qform/sform for NIfTI,
"left-posterior-superior" space for NRRD), so every reader places the labels where the CT is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from covseg.engine.geometry import Geometry, array_to_sitk

LABEL_FORMATS: dict[str, str] = {"nifti": "labels.nii.gz", "nrrd": "labels.nrrd"}


def label_file_name(label_format: str) -> str:
    """The output file name of a label format; ValueError naming the format when unknown."""
    try:
        return LABEL_FORMATS[label_format]
    except KeyError:
        raise ValueError(f"unknown label format {label_format!r}; choose one of {', '.join(LABEL_FORMATS)}") from None


def write_label_map(labels: np.ndarray, geometry: Geometry, path: Path) -> Path:
    """Write a (z, y, x) uint8 label map on `geometry` to `path` (format from the suffix), compressed."""
    import SimpleITK as sitk

    if labels.dtype != np.uint8:
        raise ValueError(f"label maps are uint8, got {labels.dtype}")
    image = array_to_sitk(labels, geometry)
    sitk.WriteImage(image, str(path), useCompression=True)
    return Path(path)
