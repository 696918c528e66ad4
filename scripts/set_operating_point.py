"""Give an exported two-class package a new operating point (export/operating_point.py), issue 11.

    python scripts/set_operating_point.py covseg/models/infection runs/pkg/infection --threshold 0.7 \
        --version 1.2.0 --chosen-on "..." [--metrics a.json b.json] [--overwrite]

The weights stay as they are; model.json gains output.threshold, the version and, when given, the
model card entries measured at that threshold (written by evaluate_default_models.py --metrics-json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from covseg.export.operating_point import set_operating_point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--threshold", type=float, required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--chosen-on", required=True, help="which data chose the threshold, in words")
    parser.add_argument("--metrics", type=Path, nargs="*", default=None, help="card entry lists to concatenate")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    metrics = None
    if args.metrics is not None:
        metrics = [entry for path in args.metrics for entry in json.loads(path.read_text())]
    meta = set_operating_point(args.package, args.out, args.threshold, version=args.version,
                               chosen_on=args.chosen_on, metrics=metrics, overwrite=args.overwrite)
    print(f"{args.out}: {meta['name']} {meta['version']} at threshold {meta['output']['threshold']}, "
          f"sha256 {meta['onnx']['sha256'][:12]}")


if __name__ == "__main__":
    main()
