"""Analysis (issue 11): the infection model's components on the infection evaluation cases -> JSON.

    python scripts/infection_components.py OUT.json [--models covseg/models]

On lungdx_a0001 as it is (no COVID-19) and with test-split lesions synthesised in (the cases of
`evaluate_default_models.py infection`, same seeds), through `covseg infer`:

- each predicted infection component: volume, mean and 90th-percentile HU, front-to-back position in the
  lungs (y_frac: 0 anterior, 1 posterior), mean slice, whether it touches the tumour region and, on
  synthesised cases, the fraction of it that is true lesion;
- each true lesion: volume, mean HU after and before synthesis, and the fraction of it found.

docs/experiments/infection_more_real reads it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from covseg.engine.postprocess import FULL
from covseg.engine.reading import read_study
from covseg.engine.volume import Volume
from covseg.labels import INFECTION_LABELS, LUNG_LABELS
from covseg.training import default_evaluation as ev
from covseg.training.lung_reference import lung_reference
from covseg.training.synthesis.dicom_series import write_nifti

ROOT = Path(__file__).resolve().parents[1]
INFECTION = [int(v) for v in INFECTION_LABELS]


def predicted_components(case: str, image: Volume, prediction: Volume, truth: np.ndarray | None,
                         region: np.ndarray, lungs: np.ndarray) -> list[dict[str, Any]]:
    labels, _ = ndimage.label(np.isin(prediction.array, INFECTION), FULL)
    rows = np.nonzero(lungs.any(axis=(0, 2)))[0]
    voxel_ml = prediction.geometry.voxel_volume_ml
    out = []
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        inside = labels[box] == i
        z, y, _ = np.nonzero(inside)
        hu = image.array[box][inside]
        out.append({"case": case, "ml": float(inside.sum() * voxel_ml), "mean_hu": float(hu.mean()),
                    "p90_hu": float(np.percentile(hu, 90)),
                    "y_frac": float((y.mean() + box[1].start - rows.min()) / (rows.max() - rows.min() + 1)),
                    "z": float(z.mean() + box[0].start), "tumour": bool((region[box] & inside).any()),
                    "tp_frac": None if truth is None else float(truth[box][inside].mean())})
    return out


def true_lesions(case: str, original: Volume, inserted: Volume, truth: np.ndarray, prediction: Volume,
                 region: np.ndarray) -> list[dict[str, Any]]:
    labels, _ = ndimage.label(truth, FULL)
    found = np.isin(prediction.array, INFECTION)
    out = []
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        inside = labels[box] == i
        out.append({"case": case, "truth": True, "ml": float(inside.sum() * prediction.geometry.voxel_volume_ml),
                    "mean_hu": float(inserted.array[box][inside].mean()),
                    "orig_hu": float(original.array[box][inside].mean()),
                    "sens": float(found[box][inside].mean()), "tumour": bool((region[box] & inside).any())})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--models", type=Path, default=ROOT / "covseg" / "models")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    packages = [args.models / "lung", args.models / "infection"]
    test_shapes = ev.mosmed_test_shapes(args.shared)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for relative in ev.LUNGDX:
            study = args.shared / relative
            image = read_study(study)
            reference = lung_reference(image).array
            lungs = np.isin(reference, LUNG_LABELS)
            _, region = ev.lungdx_tumour(image, study, args.shared)
            prediction, _ = ev.infer(study, packages, work / "out")
            rows += predicted_components(study.name, image, prediction, None, region, lungs)
            for variant in range(2):  # the cases of default_evaluation.evaluate_infection
                inserted = ev.held_out_lesions(image, reference, variant, test_shapes)
                path = work / f"{study.name}_covid{variant}.nii.gz"
                write_nifti(inserted.image, path)
                prediction, _ = ev.infer(path, packages, work / "out")
                truth = np.isin(inserted.labels.array, INFECTION)
                case = path.name.removesuffix(".nii.gz")
                rows += predicted_components(case, inserted.image, prediction, truth, region, lungs)
                rows += true_lesions(case, image, inserted.image, truth, prediction, region)
    args.out.write_text(json.dumps(rows, indent=1))
    print(f"{len(rows)} rows in {args.out}")


if __name__ == "__main__":
    main()
