"""The image a pipeline stage passes on: an array, its grid and what study it came from."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from covseg.engine.geometry import Geometry


@dataclass(frozen=True)
class StudyInfo:
    """Identifiers and provenance of a study; identifiers may be None when the input has none."""

    format: str = "unknown"  # dicom | nifti | nrrd | mha | zip (DICOM inside) | array
    modality: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    patient_birth_date: str | None = None
    patient_sex: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None
    study_date: str | None = None  # YYYY-MM-DD
    study_description: str | None = None
    series_description: str | None = None
    series_number: int | None = None
    accession_number: str | None = None
    source_path: Path | None = None
    source_files: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()

    def with_warning(self, message: str) -> StudyInfo:
        return replace(self, warnings=(*self.warnings, message))


@dataclass(frozen=True, eq=False)
class Volume:
    """A (z, y, x) numpy array (HU for CT, label values for masks) on a `Geometry`."""

    array: np.ndarray
    geometry: Geometry
    info: StudyInfo = field(default_factory=StudyInfo)

    def __post_init__(self) -> None:
        if tuple(self.array.shape) != self.geometry.shape_zyx:
            raise ValueError(
                f"array shape {self.array.shape} does not match geometry {self.geometry.shape_zyx} (z, y, x)"
            )

    def with_array(self, array: np.ndarray) -> Volume:
        """The same grid and study with another array (labels, probabilities of one class...)."""
        return Volume(array=array, geometry=self.geometry, info=self.info)
