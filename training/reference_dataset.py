"""The real-CT lung dataset of the default lung model: shared CT with classical lung references.

No manual lung mask exists in ../shared/data (its README), so each real CT gets the classical
reference of lung_reference.py, a contact sheet for inspection, and a patient id so that
evaluation can leave a whole patient out. The label files are derived data of licensed images:
they are written to a local folder for training and never committed or redistributed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from covseg.engine.reading import read_study
from covseg.engine.volume import Volume
from covseg.training.inspection import contact_sheet
from covseg.training.lung_reference import lung_reference
from covseg.training.synthesis.dicom_series import write_nifti


@dataclass(frozen=True)
class RealCase:
    """One real CT series of the shared data, with the patient it belongs to and its licence."""

    case_id: str
    patient: str
    relative_path: str
    licence: str
    series_uid: str | None = None
    lungs_complete: bool = True  # False: only the lung bases are in the field of view


REAL_LUNG_CASES: tuple[RealCase, ...] = (
    RealCase("lungdx_a0001_s2", "lungdx_a0001", "lungdx_a0001_chest_ct/series2_5mm_kernel_L",
             "CC BY 4.0 (TCIA Lung-PET-CT-Dx)"),
    RealCase("lungdx_a0001_s3", "lungdx_a0001", "lungdx_a0001_chest_ct/series3_5mm_kernel_B",
             "CC BY 4.0 (TCIA Lung-PET-CT-Dx)"),
    RealCase("ircad_1_17", "ircad_1_17", "ircad/3Dircadb1.17/PATIENT_DICOM.zip",
             "CC BY-NC-ND 3.0 (IRCAD): research use only, non-commercial", lungs_complete=False),
    RealCase("ircad_1_1", "ircad_1_1", "ircad/3Dircadb1.1/PATIENT_DICOM.zip",
             "CC BY-NC-ND 3.0 (IRCAD): research use only, non-commercial", lungs_complete=False),
)


def reference_case(case: RealCase, shared_data: Path) -> tuple[Volume, Volume]:
    """The CT of a real case and its classical lung reference."""
    image = read_study(shared_data / case.relative_path, series_uid=case.series_uid)
    return image, lung_reference(image)


def build_lung_reference_dataset(shared_data: Path, out_dir: Path, *, sheets_dir: Path | None = None,
                                 every: int = 4) -> list[dict[str, object]]:
    """Write images/<id>.nii.gz, labels/<id>.nii.gz and cases.json; sheets to `sheets_dir` if given."""
    records = []
    for folder in ("images", "labels"):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    for case in REAL_LUNG_CASES:
        image, labels = reference_case(case, shared_data)
        write_nifti(image, out_dir / "images" / f"{case.case_id}.nii.gz")
        write_nifti(labels, out_dir / "labels" / f"{case.case_id}.nii.gz")
        volumes = {name: float((labels.array == value).sum() * image.geometry.voxel_volume_ml)
                   for name, value in (("lung_left_ml", 1), ("lung_right_ml", 2))}
        if sheets_dir is not None:
            contact_sheet(image, labels, sheets_dir / f"{case.case_id}.png", every=every,
                          title=f"{case.case_id}: classical lung reference (left blue, right green)")
        records.append({**asdict(case), **volumes})
    (out_dir / "cases.json").write_text(json.dumps(records, indent=2))
    return records
