"""The summary table: one row per study, rebuilt from the per-study records, written atomically.

Rows are built only from what is on disk (done.json + report.json, or failed.json), so the table
of a resumed, sharded or Dask-run batch equals that of one uninterrupted run. Columns: fixed
identity and status columns, every quantification field of report schema covseg.report/1
flattened with dots (`infection.by_lung.lung_left.percent`), then any further numeric report
fields sorted by name, so shards and merges agree on the column order.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from covseg.engine.batch.atomic import atomic_path, write_text_atomic
from covseg.engine.batch.discover import Study
from covseg.engine.batch.records import DONE, FAILED, load_report, read_json
from covseg.errors import InputError, RuntimeUnavailableError

Row = dict[str, Any]
IDENTITY = ["key", "status", "error", "input_path", "input_format", "patient_id", "study_instance_uid",
            "series_instance_uid", "file_name", "study_date", "models", "model_versions", "model_sha256",
            "warnings", "reasons"]
_STRUCTURES = [f"structures.{s}.{f}" for s in ("lung_left", "lung_right", "liver") for f in ("volume_ml", "mean_hu")]
_INFECTION = [f"infection.{f}" for f in (
    "volume_ml", "percent_of_lungs", "by_lung.lung_left.volume_ml", "by_lung.lung_left.percent",
    "by_lung.lung_right.volume_ml", "by_lung.lung_right.percent", "ground_glass_ml", "consolidation_ml",
    "consolidation_threshold_hu", "mean_hu", "lesion_count", "min_lesion_ml", "ct_severity_score")]
_RUNTIME = [f"runtime.seconds.{s}" for s in ("read", "preprocess", "inference", "postprocess", "write", "total")]
_RUNTIME += ["runtime.peak_memory_mb", "runtime.device", "runtime.threads"]
FIXED = IDENTITY + _STRUCTURES + _INFECTION + _RUNTIME
TEXT_COLUMNS = {*IDENTITY, "runtime.device"}
WITHHELD = ("input_path", "file_name", "study_date")  # with --anonymize, as infer withholds them in reports
STATUS_RANK = {"ok": 0, "failed": 1, "skipped": 2}
UNFINISHED = "not finished: the batch stopped before this study completed (rerun with --resume)"


def flatten(prefix: str, value: Any, into: Row) -> None:
    """Scalar leaves of nested dicts as dotted columns; lists are left out (not tabular)."""
    if isinstance(value, dict):
        for name, item in value.items():
            flatten(f"{prefix}.{name}", item, into)
    elif value is None or isinstance(value, int | float | str):
        into[prefix] = value


def _patient(study: Study, report: dict[str, Any] | None, keep_identifiers: bool, anonymize: bool) -> str | None:
    """The PatientID (a CSV's patient_id first) as infer's report writes it: its salted pseudonym
    (same salt, COVSEG_PSEUDONYM_SALT, so batch and report ids agree), raw only when kept."""
    from covseg.engine.report import pseudonym

    if study.patient_id:
        return study.patient_id if keep_identifiers and not anonymize else pseudonym(study.patient_id)
    value = ((report or {}).get("input") or {}).get("patient")
    return str(value) if value else None


def _report_columns(report: dict[str, Any], row: Row) -> None:
    inputs = report.get("input") or {}
    models = report.get("models") or []
    row.update({
        "input_format": inputs.get("format"),
        "study_instance_uid": row.get("study_instance_uid") or inputs.get("study_instance_uid"),
        "series_instance_uid": row.get("series_instance_uid") or inputs.get("series_instance_uid"),
        "study_date": row.get("study_date") or inputs.get("study_date"),
        "models": ";".join(str(m.get("name")) for m in models),
        "model_versions": ";".join(str(m.get("version")) for m in models),
        "model_sha256": ";".join(str(m.get("sha256")) for m in models),
        "warnings": " | ".join(str(w) for w in inputs.get("warnings") or []) or None,
        "reasons": json.dumps(report["reasons"], sort_keys=True) if report.get("reasons") else None,
    })
    flatten("structures", report.get("structures") or {}, row)
    flatten("infection", report.get("infection") or {}, row)
    runtime = report.get("runtime") or {}
    flatten("runtime.seconds", runtime.get("seconds") or {}, row)
    for name in ("peak_memory_mb", "device", "threads"):
        row[f"runtime.{name}"] = runtime.get(name)


def study_row(study: Study, folder: Path, *, keep_identifiers: bool = False, anonymize: bool = False) -> Row:
    """The row of one study from its records: ok (done.json + report), failed, or skipped; a study with no
    record at all (the batch stopped before it finished) is failed with that reason."""
    row: Row = {"key": study.key, "input_path": study.path, "series_instance_uid": study.series_uid,
                "study_instance_uid": study.study_uid, "file_name": study.file_name, "study_date": study.study_date,
                "input_format": study.kind if study.kind != "file" else None}
    report = load_report(folder) if (folder / DONE).is_file() else None
    row["patient_id"] = _patient(study, report, keep_identifiers, anonymize)
    if study.skip_reason:
        row.update(status="skipped", error=study.skip_reason)
    elif report is not None:
        row["status"] = "ok"
        _report_columns(report, row)
    else:
        failed = read_json(folder / FAILED)
        row.update(status="failed", error=(failed or {}).get("error") or UNFINISHED)
    return row


def columns_of(rows: Iterable[Row]) -> list[str]:
    extra = sorted({name for row in rows for name in row} - set(FIXED))
    return FIXED + extra


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def write_csv(rows: list[Row], target: Path) -> None:
    ordered = sorted(rows, key=lambda r: str(r["key"]))
    columns = columns_of(ordered)

    def write(handle: Any) -> None:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in ordered:
            writer.writerow({name: _cell(row.get(name)) for name in columns})

    write_text_atomic(target, write)


def _arrow_type(values: list[Any], name: str) -> Any:
    import pyarrow as pa

    present = [v for v in values if v is not None]
    if name in TEXT_COLUMNS or any(isinstance(v, str) for v in present):
        return pa.string()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    return pa.float64()


def write_parquet(rows: list[Row], target: Path) -> bool:
    """summary.parquet beside the CSV when pyarrow is installed; returns whether it was written."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    ordered = sorted(rows, key=lambda r: str(r["key"]))
    columns = columns_of(ordered)
    arrays = {}
    for name in columns:
        values = [row.get(name) for row in ordered]
        kind = _arrow_type(values, name)
        arrays[name] = pa.array([None if v is None else (str(v) if kind == pa.string() else v) for v in values],
                                type=kind)
    with atomic_path(target) as temp:
        pq.write_table(pa.table(arrays), temp)
    return True


def parse_cell(name: str, text: str) -> Any:
    """A CSV cell back to its value: '' -> None, numbers in numeric columns -> int or float."""
    if text == "":
        return None
    if name in TEXT_COLUMNS:
        return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def read_csv(path: Path) -> list[Row]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return [{k: parse_cell(k, v) for k, v in row.items()} for row in csv.DictReader(handle)]
    except OSError as error:
        raise InputError(f"{path}: cannot read the batch summary ({error.strerror})") from error


def merge_rows(tables: Iterable[list[Row]]) -> list[Row]:
    """Union of shard tables; a study in several shards keeps its best row (ok > failed > skipped)."""
    best: dict[str, Row] = {}
    for rows in tables:
        for row in rows:
            key = str(row["key"])
            old = best.get(key)
            if old is None or STATUS_RANK.get(str(row.get("status")), 9) < STATUS_RANK.get(str(old.get("status")), 9):
                best[key] = row
    return sorted(best.values(), key=lambda r: str(r["key"]))


def summary_files(folder: Path) -> list[Path]:
    """The tables a folder holds: its shard-K-of-N/summary.csv files when it has shards (its own
    summary.csv is then an earlier merge, not a source), else its summary.csv; or the file itself."""
    if folder.is_file():
        return [folder]
    shards = sorted(folder.glob("shard-*-of-*/summary.csv"))
    if shards:
        return shards
    if (folder / "summary.csv").is_file():
        return [folder / "summary.csv"]
    raise InputError(f"{folder}: no summary.csv (is it a covseg batch folder?)")


def merge_batches(folders: Iterable[Path], out: Path) -> list[Row]:
    """Merge the summary tables of shard folders into `out` (summary, longitudinal, plot)."""
    from covseg.engine.batch.outputs import write_outputs

    tables = [read_csv(path) for folder in folders for path in summary_files(Path(folder))]
    rows = merge_rows(tables)
    write_outputs(rows, Path(out))
    return rows


def require(module: str) -> Any:
    """Import an optional dependency of the `batch` extra or say how to get it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise RuntimeUnavailableError(
            f"{module} is not installed; install the batch extra: pip install 'covseg[batch]'") from error
