"""Training sets of the default models, built from the shared real CT and the phantom generator.

Lung model (issue 11): real CT with classical lung references (reference_dataset.py) plus phantoms,
written as an image/label "pairs" dataset that `covseg train` reads. Evaluation leaves a whole
patient out: `exclude_patients` keeps that patient's series out of the training folder.
Lung labels include what lies inside the lungs (infection, nodules): a lung mask that drops
consolidation would make infection percentages meaningless. Pleural effusion lies outside the lung.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from covseg.engine.reading import read_study
from covseg.engine.volume import Volume
from covseg.labels import INFECTION_LABELS, LUNG_LABELS, Label
from covseg.training.reference_dataset import REAL_LUNG_CASES, reference_case
from covseg.training.synthesis.config import DENSE_GGO_FILL, FAINT_GGO_FILL, GGO_FILL, PhantomConfig
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


def phantom_configs(count: int, seed: int) -> list[PhantomConfig]:
    """Varied phantoms: healthy, COVID-19 of growing burden, nodules, effusion; grids like real scans."""
    grids = (((192, 192, 72), (2.0, 2.0, 5.0)), ((224, 224, 160), (1.6, 1.6, 2.0)), ((160, 160, 96), (2.4, 2.4, 3.0)))
    kinds: tuple[tuple[str, ...], ...] = ((), ("covid",), ("covid", "nodule"), ("effusion",), ("covid", "effusion"))
    configs = []
    for i in range(count):
        size, spacing = grids[i % len(grids)]
        configs.append(PhantomConfig(seed=seed + i, size_xyz=size, spacing_xyz=spacing, lesions=kinds[i % len(kinds)],
                                     lesion_count=4 + 2 * (i % 4), lesion_scale=0.8 + 0.2 * (i % 3)))
    return configs


def _write_pair(out_dir: Path, case_id: str, image: Volume, labels: np.ndarray) -> None:
    """One training case: the image and its label map on the image's grid (the dataset folder layout)."""
    write_nifti(image, out_dir / "images" / f"{case_id}.nii.gz")
    write_nifti(image.with_array(labels), out_dir / "labels" / f"{case_id}.nii.gz")


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
    for config in phantom_configs(phantoms, seed):
        phantom = make_phantom(config)
        case_id = f"phantom_{config.seed:04d}"
        _write_pair(out_dir, case_id, phantom.image, lungs_with_lesions(phantom.labels.array))
        records.append({"case": case_id, "source": f"phantom seed {config.seed}, lesions {list(config.lesions)}",
                        "licence": "synthetic (covseg)"})
    (out_dir / "cases.json").write_text(json.dumps(records, indent=2))
    return records


def mosmed_split_folder(out_dir: Path, files: Sequence[Path]) -> Path:
    """A folder of links to one split's MosMed masks, for PhantomConfig(mosmed_dir=...)."""
    folder = out_dir / "mosmed_split"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.nii.gz"):
        old.unlink()
    for path in files:
        (folder / path.name).symlink_to(path.resolve())
    return folder


def build_infection_training_set(shared_data: Path, out_dir: Path, *, phantoms: int = 10, real_variants: int = 4,
                                 seed: int = 300, exclude_patients: Sequence[str] = ("lungdx_a0001",),
                                 dependent_phantoms: int = 0, dense_ground_glass: bool = False,
                                 faint_variants: int = 0) -> list[dict[str, object]]:
    """The infection model's training folder: COVID-19 lesions synthesised into real lungs and phantoms.

    Lesion shapes come from the MosMed *train* split only (lesion_insertion.split_mosmed); the
    validation case (id sorted last, as `build_cases` takes the last cases to validate) uses the
    validation split. `exclude_patients` stays out entirely: lungdx_a0001 is the held-out anatomy of
    the evaluation and the real CT on which false positives are measured. `dependent_phantoms`: that
    many more phantoms with the dependent density band of normal lung (synthesis/dependent.py), every
    other one without lesions: negatives for the band that is not infection. `dense_ground_glass`: the
    training lesions' ground glass reaches ~-150 HU (config.DENSE_GGO_FILL); the validation phantom
    keeps the standard range, so validation figures stay comparable. `faint_variants`: that many more draws
    per real CT of many small, faint ground-glass lesions (config.FAINT_GGO_FILL), from a random stream of
    their own so that every other case is drawn exactly as without them.
    """
    from covseg.training.lesion_insertion import insert_covid, split_mosmed
    from covseg.training.synthesis.mosmed_shapes import LICENCE, mask_files

    split = split_mosmed(mask_files(shared_data / "mosmed_covid_masks" / "masks"))
    for folder in ("images", "labels"):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    records: list[dict[str, object]] = []
    rng = np.random.default_rng(seed)
    faint_rng = np.random.default_rng([seed, 1])
    for case in REAL_LUNG_CASES:
        if case.patient in exclude_patients:
            continue
        image, reference = reference_case(case, shared_data)
        for variant in range(real_variants):
            inserted = insert_covid(image, reference.array, seed=int(rng.integers(1 << 31)),
                                    count=int(rng.integers(3, 9)), scale=float(rng.uniform(0.6, 1.3)),
                                    shape_files=split["train"] if variant % 2 == 0 else None,
                                    ggo_fill=DENSE_GGO_FILL if dense_ground_glass else GGO_FILL)
            case_id = f"{case.case_id}_covid{variant}"
            _write_pair(out_dir, case_id, inserted.image, inserted.labels.array)
            records.append({"case": case_id, "source": "real CT + synthesised COVID-19 lesions",
                            "licence": f"{case.licence}; {LICENCE}"})
        for variant in range(faint_variants):
            inserted = insert_covid(image, reference.array, seed=int(faint_rng.integers(1 << 31)),
                                    count=int(faint_rng.integers(6, 13)), scale=float(faint_rng.uniform(0.4, 0.8)),
                                    shape_files=split["train"], ggo_fill=FAINT_GGO_FILL)
            case_id = f"{case.case_id}_covid_faint{variant}"
            _write_pair(out_dir, case_id, inserted.image, inserted.labels.array)
            records.append({"case": case_id, "source": "real CT + synthesised small faint COVID-19 lesions",
                            "licence": f"{case.licence}; {LICENCE}"})
    mosmed_train = mosmed_split_folder(out_dir / "train_shapes", split["train"])
    for i, config in enumerate(phantom_configs(phantoms, seed)):
        config = dataclasses.replace(config, lesions=("covid", *(k for k in config.lesions if k != "covid")),
                                     use_mosmed=i % 2 == 0, mosmed_dir=mosmed_train,
                                     dense_ground_glass=dense_ground_glass)
        phantom = make_phantom(config)
        case_id = f"phantom_{config.seed:04d}"
        _write_pair(out_dir, case_id, phantom.image, phantom.labels.array)
        records.append({"case": case_id, "source": f"phantom seed {config.seed}, lesions {list(config.lesions)}",
                        "licence": f"synthetic (covseg); {LICENCE}"})
    for i, config in enumerate(phantom_configs(dependent_phantoms, seed + phantoms)):
        lesions = ("covid", *(k for k in config.lesions if k != "covid")) if i % 2 else ()
        config = dataclasses.replace(config, lesions=lesions, dependent_density=True, use_mosmed=True,
                                     mosmed_dir=mosmed_train, dense_ground_glass=dense_ground_glass)
        phantom = make_phantom(config)
        case_id = f"phantom_{config.seed:04d}_dependent"
        _write_pair(out_dir, case_id, phantom.image, phantom.labels.array)
        records.append({"case": case_id, "source": f"phantom seed {config.seed}, dependent density band, lesions "
                        f"{list(config.lesions)}", "licence": f"synthetic (covseg); {LICENCE}"})
    mosmed_val = mosmed_split_folder(out_dir / "validation_shapes", split["validation"])
    validation = make_phantom(PhantomConfig(seed=seed + 999, size_xyz=(192, 192, 72), spacing_xyz=(2.0, 2.0, 5.0),
                                            lesions=("covid",), lesion_count=8, use_mosmed=True,
                                            mosmed_dir=mosmed_val))
    _write_pair(out_dir, "zz_validation_phantom", validation.image, validation.labels.array)
    records.append({"case": "zz_validation_phantom", "source": "validation phantom, MosMed validation shapes",
                    "licence": f"synthetic (covseg); {LICENCE}"})
    (out_dir / "cases.json").write_text(json.dumps({"cases": records, "mosmed_split": {
        k: [p.name for p in v] for k, v in split.items()}}, indent=2))
    return records


# Real CT with classical liver references (liver_reference.py). 3D-IRCADb 1.17 holds the only manual
# liver mask and is the left-out test case, never used here.
REAL_LIVER_CASES = tuple(case for case in REAL_LUNG_CASES if case.case_id == "ircad_1_1")
# A chest CT of another patient (unenhanced, liver dome to neck), used from liver 1.2.0 on: the heart above
# the liver is background in its classical reference, which no abdominal CT among the real cases shows. The
# method's first version grew into this heart (its liver and heart differ by a few HU) and was rejected;
# the current one leaves it out (docs/inspection/liver_lungdx_a0001_s*.png).
CHEST_LIVER_CASES = tuple(case for case in REAL_LUNG_CASES if case.patient == "lungdx_a0001")


def build_liver_training_set(shared_data: Path, out_dir: Path, *, phantoms: int = 6, real_repeats: int = 3,
                             seed: int = 500, sheets_dir: Path | None = None,
                             enhanced_phantoms: int = 0, chest_cases: bool = False) -> list[dict[str, object]]:
    """The liver model's fine-tuning folder: real CT with classical liver references plus phantoms.

    Each real case is listed `real_repeats` times (links to one file): with one real CT among the
    phantoms it would otherwise be drawn in one patch of ten. The validation case (sorted last) is a
    phantom, so that no real liver is spent on validation. `sheets_dir`: inspection contact sheets.
    `enhanced_phantoms`: that many more phantoms in the portal venous phase (enhanced heart, great
    vessels and kidneys beside an enhanced liver; synthesis/contrast.py), seeds after the others.
    `chest_cases`: also the chest CT series of CHEST_LIVER_CASES (never 3D-IRCADb 1.17, the test case).
    """
    from covseg.training.inspection import SOFT_TISSUE_WINDOW_HU, contact_sheet
    from covseg.training.liver_reference import liver_reference

    for folder in ("images", "labels"):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    records: list[dict[str, object]] = []
    for case in REAL_LIVER_CASES + (CHEST_LIVER_CASES if chest_cases else ()):
        image = read_study(shared_data / case.relative_path, series_uid=case.series_uid)
        reference, intensity = liver_reference(image)
        _write_pair(out_dir, case.case_id, image, reference.array)
        if sheets_dir is not None:
            contact_sheet(image, reference, sheets_dir / f"liver_{case.case_id}.png", every=4, columns=10, tile=160,
                          window=SOFT_TISSUE_WINDOW_HU,
                          title=f"{case.case_id}: classical liver reference (soft-tissue window)")
        for repeat in range(1, real_repeats):
            for folder in ("images", "labels"):
                link = out_dir / folder / f"{case.case_id}_r{repeat}.nii.gz"
                link.unlink(missing_ok=True)
                link.symlink_to(f"{case.case_id}.nii.gz")
        records.append({"case": case.case_id, "source": f"real CT, classical liver reference (liver at "
                        f"{intensity.mode_hu:.0f} HU), listed {real_repeats} times", "licence": case.licence})
    for i, config in enumerate(phantom_configs(phantoms + 1, seed)):
        phantom = make_phantom(config)
        case_id = f"phantom_{config.seed:04d}" if i < phantoms else "zz_validation_phantom"
        _write_pair(out_dir, case_id, phantom.image, phantom.labels.array * (phantom.labels.array == Label.LIVER))
        records.append({"case": case_id, "source": f"phantom seed {config.seed}", "licence": "synthetic (covseg)"})
    for config in phantom_configs(enhanced_phantoms, seed + phantoms + 1):
        config = dataclasses.replace(config, contrast="portal")
        phantom = make_phantom(config)
        case_id = f"phantom_{config.seed:04d}_portal"
        _write_pair(out_dir, case_id, phantom.image, phantom.labels.array * (phantom.labels.array == Label.LIVER))
        records.append({"case": case_id, "source": f"phantom seed {config.seed}, portal venous phase",
                        "licence": "synthetic (covseg)"})
    (out_dir / "cases.json").write_text(json.dumps(records, indent=2))
    return records
