"""Per-case and summary evaluation tables (CSV and Markdown) from label maps.

Rows are plain dicts so that the experiment runner can add its own keys (strategy, pre-trained
model, fold) and group by them. Summaries give mean and sample standard deviation (ddof=1; None
for a single value) over the cases where a metric is defined, plus that count, so an undefined
HD95 (empty mask) is visible rather than silently averaged as 0 or infinity.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from covseg.engine.volume import Volume
from covseg.errors import InputError
from covseg.training.metrics import METRIC_NAMES, StructureSpec, case_metrics, undefined_reason

Row = dict[str, object]
T = TypeVar("T")
LABEL_MAP_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
SUMMARY_METRICS: tuple[str, ...] = (
    "dsc", "nsd", "sensitivity", "specificity", "precision", "f1", "accuracy", "hd95_mm", "assd_mm",
)


def case_rows(case_id: str, metrics: Mapping[str, Mapping[str, float | None]], **keys: object) -> list[Row]:
    """One row per structure of one case: keys, case, structure, every metric, notes on undefined values."""
    return [
        {**keys, "case": case_id, "structure": structure, **{m: values.get(m) for m in METRIC_NAMES},
         "notes": undefined_reason(values)}
        for structure, values in metrics.items()
    ]


def evaluate_volumes(
    case_id: str,
    prediction: Volume,
    truth: Volume,
    *,
    labels: Mapping[str, StructureSpec] | None = None,
    nsd_tolerance_mm: float = 3.0,
    **keys: object,
) -> list[Row]:
    """Rows of one case whose prediction and truth are Volumes on the same grid (InputError otherwise)."""
    if not prediction.geometry.same_grid(truth.geometry):
        raise InputError(
            f"case {case_id}: prediction grid {prediction.geometry.size} spacing {prediction.geometry.spacing} "
            f"differs from truth grid {truth.geometry.size} spacing {truth.geometry.spacing}"
        )
    spacing_zyx = tuple(float(s) for s in reversed(truth.geometry.spacing))
    metrics = case_metrics(
        _as_labels(prediction.array), _as_labels(truth.array), spacing_zyx,
        labels=labels, nsd_tolerance_mm=nsd_tolerance_mm,
    )
    return case_rows(case_id, metrics, **keys, nsd_tolerance_mm=nsd_tolerance_mm)


def _as_labels(array: np.ndarray) -> np.ndarray:
    """Integer label values of a label map that a reader returned as float."""
    if np.issubdtype(array.dtype, np.integer):
        return array
    return np.rint(array).astype(np.int16)


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    data = np.asarray(values, dtype=float)
    return float(data.mean()), (float(data.std(ddof=1)) if data.size > 1 else None)


def summarize(rows: Iterable[Row], *, by: Sequence[str] = ("structure",),
              metrics: Sequence[str] = SUMMARY_METRICS) -> list[Row]:
    """Mean, std and count of each metric per group of rows sharing the values of `by`."""
    groups: dict[tuple[object, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in by), []).append(row)
    summary: list[Row] = []
    for key, members in groups.items():
        out: Row = dict(zip(by, key, strict=True))
        out["cases"] = len(members)
        for metric in metrics:
            defined = [float(v) for r in members if isinstance(v := r.get(metric), int | float)
                       and math.isfinite(float(v))]
            mean, std = _mean_std(defined)
            out[f"{metric}_mean"], out[f"{metric}_std"], out[f"{metric}_n"] = mean, std, len(defined)
        summary.append(out)
    return summary


def format_value(value: object, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def mean_std(row: Mapping[str, object], metric: str, digits: int = 3) -> str:
    """'0.704 ± 0.206' from a summary row ('0.704' when std is undefined, '–' when nothing is defined)."""
    mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    if mean is None:
        return "–"
    text = format_value(mean, digits)
    return text if std is None else f"{text} ± {format_value(std, digits)}"


def write_csv(rows: Sequence[Row], path: Path, columns: Sequence[str] | None = None) -> Path:
    columns = list(columns or _columns(rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return path


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str],
                   formatters: Mapping[str, Callable[[Mapping[str, object]], str]] | None = None,
                   headers: Mapping[str, str] | None = None) -> str:
    """A GitHub Markdown table; `formatters[column](row)` overrides how a cell is written."""
    formatters = formatters or {}
    headers = headers or {}
    lines = ["| " + " | ".join(headers.get(c, c) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = [formatters[c](row) if c in formatters else format_value(row.get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _columns(rows: Sequence[Row]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    return columns


def write_summary_markdown(summary: Sequence[Row], path: Path, *, by: Sequence[str], title: str,
                           metrics: Sequence[str] = SUMMARY_METRICS) -> Path:
    formatters = {m: (lambda row, m=m: mean_std(row, m)) for m in metrics}
    text = f"# {title}\n\nMean ± sample standard deviation over cases; – where undefined.\n\n"
    text += markdown_table(summary, [*by, "cases", *metrics], formatters)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@dataclass(frozen=True)
class EvaluationTables:
    rows: list[Row]
    summary: list[Row]
    files: tuple[Path, ...] = ()


def write_evaluation(rows: Sequence[Row], out_dir: Path, *, by: Sequence[str] = ("structure",),
                     title: str = "Evaluation") -> EvaluationTables:
    """cases.csv, cases.md, summary.csv and summary.md in `out_dir`."""
    summary = summarize(rows, by=by)
    case_columns = [c for c in _columns(list(rows)) if c != "notes"] + ["notes"]
    cases_md = out_dir / "cases.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    cases_md.write_text(f"# {title}: per case\n\n" + markdown_table(rows, case_columns), encoding="utf-8")
    files = (
        write_csv(rows, out_dir / "cases.csv", case_columns),
        cases_md,
        write_csv(summary, out_dir / "summary.csv"),
        write_summary_markdown(summary, out_dir / "summary.md", by=by, title=title),
    )
    return EvaluationTables(rows=list(rows), summary=summary, files=files)


def case_id_of(path: Path) -> str:
    """File name without its label-map suffix ('case_01.nii.gz' -> 'case_01')."""
    name = path.name
    for suffix in LABEL_MAP_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def label_maps(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of label maps")
    return {case_id_of(p): p for p in sorted(folder.iterdir())
            if p.is_file() and p.name.lower().endswith(LABEL_MAP_SUFFIXES)}


def read_label_map(path: Path) -> Volume:
    """A label map through the engine's reader, rounded to integer label values."""
    from covseg.engine.reading import read_study

    volume = read_study(path, force=True)
    return volume.with_array(_as_labels(volume.array))


def evaluate_folder(
    pred_dir: str | Path,
    truth_dir: str | Path,
    *,
    labels: Mapping[str, StructureSpec] | None = None,
    nsd_tolerance_mm: float = 3.0,
    out_dir: str | Path | None = None,
) -> EvaluationTables:
    """Score every truth label map against the prediction of the same name; tables in `out_dir` if given.

    With `labels` None every covseg structure is scored, and those empty in every truth and every
    prediction are left out of the tables (they would only add rows of 'both empty').
    """
    truths = label_maps(Path(truth_dir))
    predictions = label_maps(Path(pred_dir))
    if not truths:
        raise InputError(f"{truth_dir}: no label maps ({', '.join(LABEL_MAP_SUFFIXES)})")
    missing = sorted(set(truths) - set(predictions))
    if missing:
        raise InputError(f"{pred_dir}: no prediction for case {missing[0]} ({len(missing)} missing)")
    rows: list[Row] = []
    for case_id, truth_path in truths.items():
        rows.extend(evaluate_volumes(case_id, read_label_map(predictions[case_id]), read_label_map(truth_path),
                                     labels=labels, nsd_tolerance_mm=nsd_tolerance_mm))
    if labels is None:
        present = {r["structure"] for r in rows if r.get("truth_voxels") or r.get("prediction_voxels")}
        rows = [r for r in rows if r["structure"] in present]
    if out_dir is None:
        return EvaluationTables(rows=rows, summary=summarize(rows))
    return write_evaluation(rows, Path(out_dir))


# --- paper 000's tables ------------------------------------------------------------------------------
def _ordered(values: Iterable[T]) -> list[T]:
    seen: list[T] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def _fold_summary(rows: Sequence[Row], metrics: Sequence[str]) -> list[Row]:
    """Per (strategy, pretrained) and fold, plus fold 'AVG' pooling every test case of every fold."""
    per_fold = summarize(rows, by=("strategy", "pretrained", "fold"), metrics=metrics)
    pooled = summarize(rows, by=("strategy", "pretrained"), metrics=metrics)
    for row in pooled:
        row["fold"] = "AVG"
    return per_fold + pooled


def _run_times(rows: Sequence[Row]) -> dict[tuple[object, object, object], float]:
    return {(r.get("strategy"), r.get("pretrained"), r.get("fold")): float(v) for r in rows
            if isinstance(v := r.get("seconds_per_epoch"), int | float)}


def paper_tables(rows: Sequence[Row], out_dir: Path, *, structure: str, table3_pretrained: str,
                 nsd_tolerance_mm: float) -> list[Path]:
    """Tables 1-3 of paper 000 (CSV long form + Markdown wide form) from per-case experiment rows
    (keys strategy, pretrained, fold, seconds_per_epoch and the metrics)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    folds = sorted(_ordered(r.get("fold") for r in rows), key=lambda f: (str(type(f)), f if isinstance(f, int) else 0,
                                                                        str(f)))
    keys = _ordered((r.get("strategy"), r.get("pretrained")) for r in rows)
    summary = _fold_summary(rows, ("dsc", "nsd", "sensitivity", "f1", "accuracy"))
    cell = {(r["strategy"], r["pretrained"], r["fold"]): r for r in summary}
    times = _run_times(rows)
    note = (f"Structure: {structure}; NSD tolerance {nsd_tolerance_mm:g} mm. Mean ± sample std over test cases "
            "(AVG pools all test cases of all folds).\n\n")
    written: list[Path] = []

    # Table 1: DSC and NSD per fold and on average, per strategy and pre-trained model.
    t1_columns = ["strategy", "pretrained"] + [f"{m} fold {k}" for k in [*folds, "AVG"] for m in ("DSC", "NSD")]
    t1_rows = []
    for strategy, pretrained in keys:
        row: Row = {"strategy": strategy, "pretrained": pretrained}
        for k in [*folds, "AVG"]:
            source = cell.get((strategy, pretrained, k), {})
            row[f"DSC fold {k}"], row[f"NSD fold {k}"] = mean_std(source, "dsc"), mean_std(source, "nsd")
        t1_rows.append(row)
    written += _write_pair(out_dir / "table1", summary, "Table 1: DSC and NSD per fold",
                           markdown_table(t1_rows, t1_columns), note,
                           ["strategy", "pretrained", "fold", "cases", "dsc_mean", "dsc_std", "nsd_mean", "nsd_std"])

    # Table 2: sensitivity, F1 and accuracy (all folds pooled).
    pooled = [r for r in summary if r["fold"] == "AVG"]
    t2 = {m: (lambda r, m=m: mean_std(r, m, 4)) for m in ("sensitivity", "f1", "accuracy")}
    t2_csv = ["strategy", "pretrained", "cases", *[f"{m}_{s}" for m in t2 for s in ("mean", "std")]]
    written += _write_pair(out_dir / "table2", pooled, "Table 2: sensitivity, F1 and accuracy",
                           markdown_table(pooled, ["strategy", "pretrained", "sensitivity", "f1", "accuracy"], t2),
                           note, t2_csv)
    written += _table3(summary, times, out_dir, keys, folds, table3_pretrained, note)
    return written


def _table3(summary: Sequence[Row], times: Mapping[tuple[object, object, object], float], out_dir: Path,
            keys: Sequence[object], folds: Sequence[object], pretrained: str, note: str) -> list[Path]:
    """Table 3: per strategy (with `pretrained`, or none) DSC, NSD, sensitivity and time per epoch."""
    chosen = [k for k in keys if isinstance(k, tuple) and k[1] in (pretrained, "none")]
    cell = {(r["strategy"], r["pretrained"], r["fold"]): r for r in summary}
    long_rows: list[Row] = []
    wide: list[Row] = []
    for k in [*folds, "AVG"]:
        avg: Row = {"fold": k, "stat": "avg"}
        std: Row = {"fold": k, "stat": "std"}
        for strategy, model in chosen:
            source = cell.get((strategy, model, k), {})
            fold_times = [t for (s, p, _f), t in times.items() if (s, p) == (strategy, model)]
            seconds = times.get((strategy, model, k)) if k != "AVG" else _mean_std(fold_times)[0]
            spread = None if k != "AVG" else _mean_std(fold_times)[1]
            for metric, label in (("dsc", "DSC"), ("nsd", "NSD"), ("sensitivity", "Sen.")):
                avg[f"{strategy} {label}"] = format_value(source.get(f"{metric}_mean"))
                std[f"{strategy} {label}"] = format_value(source.get(f"{metric}_std"))
            avg[f"{strategy} Time"] = _seconds(seconds)
            std[f"{strategy} Time"] = _seconds(spread)
            long_rows.append({"strategy": strategy, "pretrained": model, "fold": k,
                              **{f"{m}_{s}": source.get(f"{m}_{s}") for m in ("dsc", "nsd", "sensitivity")
                                 for s in ("mean", "std")},
                              "seconds_per_epoch": seconds, "seconds_per_epoch_std": spread})
        wide += [avg, std]
    columns = ["fold", "stat"] + [f"{s} {m}" for s, _ in chosen for m in ("DSC", "NSD", "Sen.", "Time")]
    title = f"Table 3: strategies with pre-trained model {pretrained} (time per epoch)"
    return _write_pair(out_dir / "table3", long_rows, title, markdown_table(wide, columns), note, None)


def _seconds(value: float | None) -> str:
    """Seconds as paper 000 writes them ('224s'), with a decimal below 100 s (short test runs)."""
    if value is None:
        return "–"
    return f"{value:.0f}s" if value >= 100 else f"{value:.1f}s"


def _write_pair(stem: Path, rows: Sequence[Row], title: str, markdown: str, note: str,
                columns: Sequence[str] | None) -> list[Path]:
    md = stem.with_suffix(".md")
    md.write_text(f"# {title}\n\n{note}{markdown}", encoding="utf-8")
    return [write_csv(rows, stem.with_suffix(".csv"), columns), md]
