"""Experiment (issue 11): the infection model's operating point -> docs/experiments/infection_threshold/.

    python scripts/experiment_infection_threshold.py [--thresholds 0.5,0.6,0.7,0.8,0.9] [--slices]

The engine labels a voxel infection where the model's softmax probability exceeds 0.5 (argmax of two
classes). Would a higher decision threshold, or test-time mirroring (`covseg infer --tta`), remove the
25-28 mL the shipped model calls infection on lungdx_a0001 (no COVID-19) without losing the lesions?
The threshold is chosen on the validation phantom (MosMed validation-split shapes; the last case of the
training set, never trained on), then read on the test cases of `evaluate_default_models.py infection`;
the whole curve on the test cases is printed too, labelled as such.

How: the engine's sliding window is wrapped in this process only (nothing in covseg changes): for the
two-class infection model the probabilities are shifted so that argmax means p(infection) > threshold,
and each case's probabilities are computed once and reused across thresholds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETTINGS: dict[str, Any] = {"threshold": 0.5, "tta": False}


def thresholded_sliding_window(original: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    from covseg.engine.decision import apply_threshold

    cache: dict[tuple[Any, ...], np.ndarray] = {}

    def wrapped(image: np.ndarray, predictor: Any, **kwargs: Any) -> np.ndarray:
        binary = kwargs.get("num_classes") == 2  # the infection model; the lung model has three classes
        if binary:
            kwargs["tta"] = SETTINGS["tta"]
        key = (hashlib.sha1(image.tobytes()).hexdigest(), image.shape, kwargs.get("num_classes"), kwargs["tta"])
        if key not in cache:
            cache[key] = original(image, predictor, **kwargs)
        probabilities = cache[key].copy()
        return apply_threshold(probabilities, SETTINGS["threshold"]) if binary else probabilities

    return wrapped


def validation_dice(packages: list[Path], training_set: Path) -> float:
    from covseg.engine.reading import read_study
    from covseg.labels import INFECTION_LABELS
    from covseg.training import default_evaluation as ev
    from covseg.training.metrics import overlap_scores

    image = training_set / "images" / "zz_validation_phantom.nii.gz"
    truth = np.isin(np.rint(read_study(training_set / "labels" / "zz_validation_phantom.nii.gz").array),
                    [int(v) for v in INFECTION_LABELS])
    with tempfile.TemporaryDirectory() as tmp:
        prediction, _ = ev.infer(image, packages, Path(tmp) / "out")
    predicted = np.isin(prediction.array, [int(v) for v in INFECTION_LABELS])
    return float(overlap_scores(predicted, truth)["dsc"] or 0.0)


def summary(result: dict[str, Any]) -> dict[str, float]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for row in result["rows"]:
        if row["structure"] == "infection":
            by_kind.setdefault(row["kind"], []).append(row)

    def mean(kind_part: str, metric: str) -> float:
        rows = [r for kind, rs in by_kind.items() if kind.endswith(kind_part) for r in rs]
        return float(np.mean([r[metric] for r in rows if r[metric] is not None]))

    fps = result["false_positives"]
    return {"dsc_real_ignored": mean("tumour region ignored", "dsc"),
            "sens_real_ignored": mean("tumour region ignored", "sensitivity"),
            "dsc_phantom": mean("test-split MosMed lesions", "dsc"),
            "fp_series2_ml": fps[0]["infection_ml_outside_tumour_region"],
            "fp_series3_ml": fps[1]["infection_ml_outside_tumour_region"]}


def slice_curve(package: Path, shared: Path, thresholds: list[float], docs: Path, *, tta: bool = False) -> None:
    """Mean DSC / sensitivity / specificity on the real 2-D slices per threshold (the only real COVID-19 data)."""
    from covseg.training import default_evaluation as ev

    results = []
    for threshold in thresholds:
        SETTINGS.update(threshold=threshold, tta=tta)
        with tempfile.TemporaryDirectory() as tmp:
            rows = ev.evaluate_covid_slices(package, shared, Path(tmp))
        means = {metric: float(np.mean([r[metric] for r in rows if r[metric] is not None]))
                 for metric in ("dsc", "sensitivity", "specificity")}
        results.append({"tta": tta, "threshold": threshold, **{f"slices_{k}": v for k, v in means.items()}})
        print(json.dumps(results[-1]), flush=True)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / ("slices_tta.json" if tta else "slices.json")).write_text(json.dumps(results, indent=2))


def main() -> None:
    from covseg.engine import pipeline
    from covseg.training import default_evaluation as ev

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--models", type=Path, default=ROOT / "covseg" / "models")
    parser.add_argument("--training-set", type=Path,
                        default=ROOT / "runs" / "default_models" / "infection_dependent_train")
    parser.add_argument("--thresholds", default="0.5,0.6,0.7,0.8,0.9")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "experiments" / "infection_threshold")
    parser.add_argument("--slices", action="store_true",
                        help="only the 50 real 2-D COVID-19 slices -> slices.json (slices_tta.json with --tta)")
    parser.add_argument("--tta", action="store_true", help="with --slices: with test-time mirroring")
    args = parser.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")]
    packages = [args.models / "lung", args.models / "infection"]
    pipeline.sliding_window = thresholded_sliding_window(pipeline.sliding_window)
    if args.slices:
        slice_curve(packages[1], args.shared, thresholds, args.docs, tta=args.tta)
        return
    results = []
    for tta in (False, True):
        for threshold in thresholds:
            SETTINGS.update(threshold=threshold, tta=tta)
            val = validation_dice(packages, args.training_set)
            with tempfile.TemporaryDirectory() as tmp:
                test = summary(ev.evaluate_infection(packages[0], packages[1], args.shared, Path(tmp)))
            results.append({"tta": tta, "threshold": threshold, "validation_phantom_dsc": val, **test})
            print(json.dumps(results[-1]), flush=True)
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
