"""Evaluate the default model packages through `covseg infer` (issue 11); tables go to docs/evaluation/.

    python scripts/evaluate_default_models.py lung|infection|slices|liver [--models covseg/models]
    python scripts/evaluate_default_models.py lung --package lung-compact   # a variant: docs/evaluation/lung-compact
    python scripts/evaluate_default_models.py infection|slices --package infection-compact
    python scripts/evaluate_default_models.py liver --package liver-compact
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from covseg.training import default_evaluation as ev

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=("lung", "infection", "slices", "liver"))
    parser.add_argument("--models", type=Path, default=ROOT / "covseg" / "models")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--package", default=None, help="the package folder under --models (default: the model's name)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--record", type=Path, default=None,
                        help="checkpoint folder whose state.json receives the metrics (then export again)")
    parser.add_argument("--metrics-json", type=Path, default=None,
                        help="also write the model card entries here (for scripts/set_operating_point.py)")
    args = parser.parse_args()
    extra: list[dict[str, Any]] = []  # card entries beyond the per-case means
    out = args.out or ROOT / "docs" / "evaluation" / (args.package or args.model)
    if args.model == "lung":
        rows = ev.evaluate_lung(args.models / (args.package or "lung"), args.shared, out)
    elif args.model == "infection":
        infection = args.models / (args.package or "infection")
        result = ev.evaluate_infection(args.models / "lung", infection, args.shared, out)
        rows = result["rows"]
        print(json.dumps(result["false_positives"], indent=2))
        extra = [ev.false_positive_metric(result["false_positives"])]
    elif args.model == "slices":
        rows = ev.evaluate_covid_slices(args.models / (args.package or "infection"), args.shared, out)
    else:
        rows = ev.evaluate_liver(args.models / (args.package or "liver"), args.shared, out)
    for row in rows:
        print(row["case"], row["structure"], {k: row.get(k) for k in ("dsc", "nsd", "hd95_mm", "sensitivity")})
    print(f"tables in {out}")
    model_rows = [row for row in rows if row.get("kind") != ev.LIVER_BASELINE_KIND]  # a card lists its model only
    card = ev.card_metrics(model_rows) + extra
    if args.metrics_json is not None:
        args.metrics_json.write_text(json.dumps(card, indent=2) + "\n")
        print(f"card entries in {args.metrics_json}")
    if args.record is not None:
        ev.record_in_checkpoint(args.record, card, evaluation=args.model)
        print(f"metrics recorded in {args.record}/state.json")


if __name__ == "__main__":
    main()
