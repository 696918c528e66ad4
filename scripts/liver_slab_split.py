"""Liver, same patient: two-fold split of 3D-IRCADb 1.17 by slab -> docs/evaluation/liver_same_patient/.

    python scripts/liver_slab_split.py [--epochs 6] [--source runs/default_models/liver_run/checkpoints/last]

The honest figure is the default liver model on 1.17 left out entirely (docs/evaluation/liver). This is
the other figure issue 11 asks for, and it must not be read as the first: the liver of the one labelled
patient is cut across at the slice that halves its volume (array order: "upper" = the slices with the
higher index); fold 1 fine-tunes the default liver model (strategy `continual`) on the upper slab and
scores the lower one, fold 2 the reverse. Train and test are different voxels of the same patient, scanner
and contrast phase, so this measures how well the model adapts to this patient, not generalisation.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_folds(shared: Path, out: Path) -> list[Path]:
    from covseg.engine.preprocess import crop_geometry
    from covseg.engine.volume import Volume
    from covseg.labels import Label
    from covseg.training.datasets import load_dataset
    from covseg.training.synthesis.dicom_series import write_nifti

    dataset = load_dataset(str(shared / "ircad" / "3Dircadb1.17"))
    image, labels = dataset.case(dataset.labelled()[0].id).load()
    liver = (np.rint(labels.array) == int(Label.LIVER)).astype(np.uint8) * np.uint8(Label.LIVER)  # covseg values
    per_slice = (liver > 0).sum(axis=(1, 2)).cumsum()
    cut = int(np.searchsorted(per_slice, per_slice[-1] / 2))  # half of the liver volume on each side
    depth, rows, cols = liver.shape
    halves = {"upper": slice(cut, depth), "lower": slice(0, cut)}  # array order; "upper" = higher slice index
    folds = []
    for name, (train, test) in {"fold1": ("upper", "lower"), "fold2": ("lower", "upper")}.items():
        folder = out / name
        for sub in ("images", "labels"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for part, tag in ((train, "a_train"), (test, "b_test")):
            zs = halves[part]
            grid = crop_geometry(image.geometry, (zs, slice(0, rows), slice(0, cols)))
            sub_image = Volume(np.ascontiguousarray(image.array[zs]), grid)
            sub_labels = sub_image.with_array(np.ascontiguousarray(liver[zs]))
            write_nifti(sub_image, folder / "images" / f"{tag}_{part}.nii.gz")
            write_nifti(sub_labels, folder / "labels" / f"{tag}_{part}.nii.gz")
        folds.append(folder)
    return folds


def _mm(value: str | None) -> str:
    return f"{float(value):.1f}" if value else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--source", type=Path,
                        default=ROOT / "runs" / "default_models" / "liver_run" / "checkpoints" / "last")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "liver_slab")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "evaluation" / "liver_same_patient")
    args = parser.parse_args()
    folds = write_folds(args.shared, args.work / "data")
    rows = []
    for folder in folds:
        out = args.work / folder.name
        subprocess.run([sys.executable, "-m", "covseg", "finetune", "--from", str(args.source), "--data", str(folder),
                        "--strategy", "continual", "--classes", "background,liver", "--validation-cases", "1",
                        "--epochs", str(args.epochs), "--no-export", "--out", str(out),
                        *(["--resume"] if (out / "checkpoints" / "last").exists() else [])], check=True)
        with (out / "evaluation" / "cases.csv").open() as handle:
            rows += [{"fold": folder.name, **r} for r in csv.DictReader(handle) if r["structure"] == "liver"]
    args.docs.mkdir(parents=True, exist_ok=True)
    lines = ["# Liver, same patient: 3D-IRCADb 1.17 split by slab (two folds)", "",
             __doc__.split("\n\n", 2)[2].strip(), "",
             f"Source: {args.source.resolve().relative_to(ROOT)}, fine-tuned {args.epochs} "
             "epochs with strategy `continual` on one slab; scored on the other with the training predictor "
             "(sliding window on the slab).", "",
             "| fold | trained on | scored on | DSC | NSD | sensitivity | HD95 mm |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        train, test = ("upper", "lower") if r["fold"] == "fold1" else ("lower", "upper")
        lines.append(f"| {r['fold']} | {train} half | {test} half | {float(r['dsc']):.3f} | {float(r['nsd']):.3f} | "
                     f"{float(r['sensitivity']):.3f} | {_mm(r.get('hd95_mm'))} |")
    (args.docs / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
