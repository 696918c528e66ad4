"""Analysis (issue 11): is the infection model's miss on the standard-kernel series about the kernel or the lesions?

    python scripts/kernel_swap_check.py OUT.json [--models covseg/models] [--variants 0,1]

lungdx_a0001's two series are one acquisition reconstructed with two kernels (L: lung, B: standard) on the
same slices. The evaluation (`evaluate_default_models.py infection`) draws its test lesions into each
series from that series' own lung reference, so the two series get different lesions. Here the lesions of
each series' case are drawn, with the same seed and lung reference, into *both* series: the same
lesions in the same places under either kernel. Scores (DSC, sensitivity) come from `covseg infer`, as in
the evaluation, with the tumour regions of both series ignored.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from covseg.engine.reading import read_study
from covseg.labels import INFECTION_LABELS
from covseg.training import default_evaluation as ev
from covseg.training.lung_reference import lung_reference
from covseg.training.metrics import overlap_scores
from covseg.training.synthesis.dicom_series import write_nifti

ROOT = Path(__file__).resolve().parents[1]


def swapped_scores(models: Path, shared: Path, variants: list[int]) -> list[dict[str, Any]]:
    test_shapes = ev.mosmed_test_shapes(shared)
    series = {Path(relative).name: read_study(shared / relative) for relative in ev.LUNGDX}
    references = {name: lung_reference(image).array for name, image in series.items()}
    regions = {name: ev.lungdx_tumour(image, shared / relative, shared)[1]
               for (name, image), relative in zip(series.items(), ev.LUNGDX, strict=True)}
    keep = ~np.logical_or.reduce(list(regions.values()))  # one tumour region for both kernels: same voxels scored
    infection = [int(v) for v in INFECTION_LABELS]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for lesions_of in series:
            for variant in variants:
                for kernel_of, image in series.items():
                    # the evaluation's draw for `lesions_of` (its seed, count and lung reference), into `kernel_of`
                    case = ev.held_out_lesions(image, references[lesions_of], variant, test_shapes)
                    path = work / f"lesions_{lesions_of}_{variant}_in_{kernel_of}.nii.gz"
                    write_nifti(case.image, path)
                    prediction, _ = ev.infer(path, [models / "lung", models / "infection"], work / "out")
                    truth = np.isin(case.labels.array, infection) & keep
                    found = np.isin(prediction.array, infection) & keep
                    scores = overlap_scores(found, truth)
                    rows.append({"lesions_of": f"{lesions_of}_covid{variant}", "image": kernel_of,
                                 "truth_ml": float(truth.sum() * np.prod(image.geometry.spacing) / 1000.0),
                                 "dsc": scores["dsc"], "sensitivity": scores["sensitivity"]})
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--models", type=Path, default=ROOT / "covseg" / "models")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--variants", default="0,1")
    args = parser.parse_args()
    rows = swapped_scores(args.models, args.shared, [int(v) for v in args.variants.split(",")])
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"{len(rows)} rows in {args.out}")


if __name__ == "__main__":
    main()
