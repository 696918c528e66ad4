"""Sensitivity on the 50 real 2-D COVID-19 slices by lesion density (issue 11).

    python scripts/slices_by_density.py docs/evaluation/slices/cases.csv [more cases.csv ...]

Each slice's greys are mapped to HU as the evaluation maps them (default_evaluation.grey_to_hu); the
median HU inside the radiologist's mask puts the slice in a band; the table gives each band's slice
count and mean sensitivity per cases.csv (written by `evaluate_default_models.py slices`).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from covseg.training.default_evaluation import grey_to_hu

ROOT = Path(__file__).resolve().parents[1]
BANDS_HU = ((-1000.0, -600.0), (-600.0, -400.0), (-400.0, -200.0), (-200.0, 500.0))


def lesion_median_hu(folder: Path) -> dict[str, float]:
    """Slice id -> median mapped HU inside its infection mask (slices without infection left out)."""
    medians = {}
    for image_path in folder.glob("images/*.jpg"):
        truth = np.asarray(Image.open(folder / "infection_binary" / f"{image_path.stem}.png").convert("L")) > 127
        if truth.any():
            hu, _ = grey_to_hu(np.asarray(Image.open(image_path).convert("L")))
            medians[image_path.stem] = float(np.median(hu[truth]))
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", type=Path, nargs="+")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    medians = lesion_median_hu(args.shared / "covid_ct_labelled")
    tables = []
    for path in args.cases:
        with path.open(newline="", encoding="utf-8") as handle:
            tables.append({row["case"]: float(row["sensitivity"] or 0.0) for row in csv.DictReader(handle)})
    columns = " | ".join(f"sensitivity ({path.parent.as_posix()})" for path in args.cases)
    print(f"| lesion median HU | slices | {columns} |")
    print("|---|---|" + "---|" * len(args.cases))
    for low, high in BANDS_HU:
        ids = [case for case, hu in medians.items() if low <= hu < high]
        means = [f"{np.mean([table[case] for case in ids]):.3f}" if ids else "-" for table in tables]
        print(f"| {low:.0f} to {high:.0f} | {len(ids)} | " + " | ".join(means) + " |")


if __name__ == "__main__":
    main()
