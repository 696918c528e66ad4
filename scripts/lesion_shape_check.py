"""Analysis (issue 11): which synthesised test lesions does the infection model miss, by size, place and thickness?

    python scripts/lesion_shape_check.py OUT.json [--models covseg/models] [--series 1] [--variants 0,1]

Draws the lesions of `evaluate_default_models.py infection` (same seeds, counts and test shapes) into one
lungdx_a0001 series, runs `covseg infer`, and describes every true lesion of at least 1 mL: volume, mean HU,
fraction found, height in the lungs (0 lowest lung slice, 1 highest), slices spanned, mean depth under the
lung surface and its thickness (twice the largest distance from its inside to its edge, in mm).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from covseg.engine.reading import read_study
from covseg.labels import INFECTION_LABELS, LUNG_LABELS
from covseg.training import default_evaluation as ev
from covseg.training.lung_reference import lung_reference
from covseg.training.synthesis.dicom_series import write_nifti

ROOT = Path(__file__).resolve().parents[1]
MIN_ML = 1.0


def describe(labels: np.ndarray, found: np.ndarray, hu: np.ndarray, lungs: np.ndarray, spacing_zyx: np.ndarray
             ) -> list[dict[str, Any]]:
    """One row per true lesion (connected component) of at least MIN_ML."""
    depth = ndimage.distance_transform_edt(lungs, sampling=spacing_zyx)
    lung_z = np.nonzero(lungs.any(axis=(1, 2)))[0]
    components, _ = ndimage.label(labels)
    rows = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        inside = components[box] == index
        ml = float(inside.sum() * np.prod(spacing_zyx) / 1000.0)
        if box is None or ml < MIN_ML:
            continue
        z = np.nonzero(inside)[0] + box[0].start
        padded = np.pad(inside, 1)  # the box edge is the lesion's edge too
        rows.append({"ml": ml, "mean_hu": float(hu[box][inside].mean()), "sens": float(found[box][inside].mean()),
                     "height": float((z.mean() - lung_z.min()) / max(1, lung_z.max() - lung_z.min())),
                     "slices": [int(z.min()), int(z.max())], "depth_mm": float(depth[box][inside].mean()),
                     "thickness_mm": float(2.0 * ndimage.distance_transform_edt(padded, sampling=spacing_zyx).max())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--models", type=Path, default=ROOT / "covseg" / "models")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--series", type=int, default=1, help="index into LUNGDX (0: series 2, 1: series 3)")
    parser.add_argument("--variants", default="0,1")
    args = parser.parse_args()
    relative = ev.LUNGDX[args.series]
    image = read_study(args.shared / relative)
    reference = lung_reference(image).array
    lungs = np.isin(reference, LUNG_LABELS)
    spacing_zyx = np.array(image.geometry.spacing)[::-1]
    test_shapes = ev.mosmed_test_shapes(args.shared)
    infection = [int(v) for v in INFECTION_LABELS]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in (int(v) for v in args.variants.split(",")):
            case = ev.held_out_lesions(image, reference, variant, test_shapes)
            path = Path(tmp) / f"{Path(relative).name}_covid{variant}.nii.gz"
            write_nifti(case.image, path)
            prediction, _ = ev.infer(path, [args.models / "lung", args.models / "infection"], Path(tmp) / "out")
            for row in describe(np.isin(case.labels.array, infection), np.isin(prediction.array, infection),
                                case.image.array, lungs, spacing_zyx):
                rows.append({"case": path.name.removesuffix(".nii.gz"), **row})
                print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"{len(rows)} lesions in {args.out}")


if __name__ == "__main__":
    main()
