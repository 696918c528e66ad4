"""Training sets of the default models, built from the shared real CT and the phantom generator.

Lung model (issue 11): real CT with classical lung references (reference_dataset.py) plus phantoms,
written as an image/label "pairs" dataset that `covseg train` reads. Evaluation leaves a whole
patient out: `exclude_patients` keeps that patient's series out of the training folder.
Lung labels include what lies inside the lungs (infection, nodules): a lung mask that drops
consolidation would make infection percentages meaningless. Pleural effusion lies outside the lung.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from covseg.engine.volume import Volume
from covseg.labels import INFECTION_LABELS, LUNG_LABELS, Label
from covseg.training.reference_dataset import REAL_LUNG_CASES, reference_case
from covseg.training.synthesis.config import PhantomConfig
from covseg.training.synthesis.dicom_series import write_nifti
from covseg.training.synthesis.phantom import make_phantom

IN_LUNG_LESIONS = (*INFECTION_LABELS, Label.LESION_NODULE_TUMOUR)


def lungs_with_lesions(labels: np.ndarray) -> np.ndarray:
    """Left/right lung labels in which every in-lung lesion voxel takes the side of its nearest lung voxel."""
    lungs = np.where(np.isin(labels, LUNG_LABELS), labels, 0).astype(np.uint8)
    lesions = np.isin(labels, IN_LUNG_LESIONS)
    if not lesions.any() or not lungs.any():
        return lungs
    _, nearest = ndimage.distance_transform_edt(lungs == 0, return_indices=True)
    lungs[lesions] = lungs[tuple(index[lesions] for index in nearest)]
    return lungs


def _phantom_configs(count: int, seed: int) -> list[PhantomConfig]:
    """Varied phantoms: healthy, COVID-19 of growing burden, nodules, effusion; grids like real scans."""
    grids = (((192, 192, 72), (2.0, 2.0, 5.0)), ((224, 224, 160), (1.6, 1.6, 2.0)), ((160, 160, 96), (2.4, 2.4, 3.0)))
    kinds: tuple[tuple[str, ...], ...] = ((), ("covid",), ("covid", "nodule"), ("effusion",), ("covid", "effusion"))
    configs = []
    for i in range(count):
        size, spacing = grids[i % len(grids)]
        configs.append(PhantomConfig(seed=seed + i, size_xyz=size, spacing_xyz=spacing, lesions=kinds[i % len(kinds)],
                                     lesion_count=4 + 2 * (i % 4), lesion_scale=0.8 + 0.2 * (i % 3)))
    return configs


def _write_pair(out_dir: Path, case_id: str, image: Volume, lungs: np.ndarray) -> None:
    write_nifti(image, out_dir / "images" / f"{case_id}.nii.gz")
    write_nifti(image.with_array(lungs), out_dir / "labels" / f"{case_id}.nii.gz")


def build_lung_training_set(shared_data: Path | None, out_dir: Path, *, phantoms: int = 8, seed: int = 100,
                            exclude_patients: Sequence[str] = ("lungdx_a0001",)) -> list[dict[str, object]]:
    """Write the lung model's training folder (pairs layout) and its cases.json; return the records."""
    for folder in ("images", "labels"):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    records: list[dict[str, object]] = []
    if shared_data is not None:
        for case in REAL_LUNG_CASES:
            if case.patient in exclude_patients:
                continue
            image, reference = reference_case(case, shared_data)
            _write_pair(out_dir, case.case_id, image, reference.array)
            records.append({"case": case.case_id, "source": "real CT, classical lung reference",
                            "licence": case.licence})
    for config in _phantom_configs(phantoms, seed):
        phantom = make_phantom(config)
        case_id = f"phantom_{config.seed:04d}"
        _write_pair(out_dir, case_id, phantom.image, lungs_with_lesions(phantom.labels.array))
        records.append({"case": case_id, "source": f"phantom seed {config.seed}, lesions {list(config.lesions)}",
                        "licence": "synthetic (covseg)"})
    (out_dir / "cases.json").write_text(json.dumps(records, indent=2))
    return records
