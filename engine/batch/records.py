"""Completion records (done.json / failed.json) and the fingerprints that make resume safe.

Input fingerprint: sha256 over (name relative to the study folder, size, mtime_ns) of every input
file, not over the content. Why: a resume over thousands of series would otherwise read the
whole data set again before doing anything, and the reader reads it once more anyway. Replacing,
editing, adding or removing a file changes the size, the mtime or the name list, so the study is
recomputed; copying without preserving times (plain `cp`, `rsync` without -t) also changes mtimes
and costs a recomputation, never a wrong skip. The one miss is a same-size rewrite that restores
the old mtime on purpose.

Settings fingerprint: the options that change results (models resolved to their verified sha256,
overlap, tta, label format, anonymisation, any further infer option, covseg version); device,
threads and the memory guard do not enter it.

Protocol per study (`runner.run_study`): remove done.json -> run the task (it writes the study
folder atomically, overwriting) -> write done.json atomically. A kill at any moment leaves either
a valid record for complete outputs or no record (the study is recomputed).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from covseg.engine.batch.atomic import write_json_atomic
from covseg.engine.batch.discover import Study

DONE = "done.json"
FAILED = "failed.json"
REPORT = "report.json"
DONE_SCHEMA = "covseg.batch.done/1"
FAILED_SCHEMA = "covseg.batch.failed/1"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def input_fingerprint(study: Study) -> str:
    """sha256 of the (relative name, size, mtime_ns) of the study's files; see the module docstring."""
    base = Path(study.path) if study.kind == "dicom" else Path(study.path).parent
    entries = []
    for name in sorted(study.files):
        path = Path(name)
        try:
            stat = path.stat()
            entries.append([os.path.relpath(path, base), stat.st_size, stat.st_mtime_ns])
        except OSError:
            entries.append([os.path.relpath(path, base), None, None])
    return canonical_hash({"kind": study.kind, "series": study.series_uid, "files": entries})


# Options that change how a study is computed but not what comes out; every other option keys resume.
NOT_RESULT_OPTIONS = frozenset({"models", "model_paths", "device", "threads", "max_memory_mb", "progress"})


def models_identity(models: str | list[str] | tuple[str, ...] | None, model_paths: tuple[str, ...] | list[str]) -> Any:
    """Name, version and verified sha256 of every model a run would use, from the engine registry.

    Explicitly requested models that cannot be resolved stop the batch before any study runs (the
    same ModelPackageError every study would hit). With no request and no shipped package, the
    identity says so and the task decides (an injected task may need no package).
    """
    from covseg.engine.registry import resolve_models
    from covseg.errors import ModelPackageError

    spec = ",".join(models) if isinstance(models, list | tuple) else models
    try:
        packages = resolve_models(spec or None, list(model_paths))
    except ModelPackageError as error:
        if spec or model_paths:
            raise
        return {"unresolved": str(error)}
    return [{"name": p.name, "version": p.version, "sha256": p.sha256} for p in packages]


def settings_fingerprint(options: dict[str, Any]) -> dict[str, Any]:
    """The result-relevant settings, with each model resolved to its identity."""
    from covseg import __version__

    models = models_identity(options.get("models"), tuple(options.get("model_paths") or ()))
    relevant = {k: v for k, v in sorted(options.items()) if k not in NOT_RESULT_OPTIONS}
    return {"covseg_version": __version__, "models": models, **relevant}


def write_done(folder: Path, study: Study, input_fp: str, settings_fp: str, seconds: float) -> dict[str, Any]:
    report_path = folder / REPORT
    report = json.loads(report_path.read_text(encoding="utf-8"))
    record = {
        "schema": DONE_SCHEMA, "key": study.key, "finished": _dt.datetime.now(_dt.UTC).isoformat(),
        "input": {"path": study.path, "kind": study.kind, "series_uid": study.series_uid, "fingerprint": input_fp},
        "settings_sha256": settings_fp, "report_sha256": sha256_file(report_path), "seconds": round(seconds, 3),
        "models": [{k: m.get(k) for k in ("name", "version", "sha256")} for m in report.get("models") or []],
    }
    write_json_atomic(folder / DONE, record)
    return record


def write_failed(folder: Path, study: Study, error: str, seconds: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / FAILED, {
        "schema": FAILED_SCHEMA, "key": study.key, "error": error, "seconds": round(seconds, 3),
        "finished": _dt.datetime.now(_dt.UTC).isoformat(), "input": {"path": study.path, "kind": study.kind}})


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def load_report(folder: Path) -> dict[str, Any] | None:
    return read_json(folder / REPORT)


def is_complete(folder: Path, input_fp: str, settings_fp: str) -> bool:
    """True when done.json matches the fingerprints and the outputs it vouches for are intact."""
    record = read_json(folder / DONE)
    if record is None or record.get("schema") != DONE_SCHEMA:
        return False
    if record.get("input", {}).get("fingerprint") != input_fp or record.get("settings_sha256") != settings_fp:
        return False
    report_path = folder / REPORT
    try:
        if sha256_file(report_path) != record.get("report_sha256"):
            return False
    except OSError:
        return False
    report = load_report(folder) or {}
    outputs = report.get("outputs") or {}
    return all((folder / name).is_file() for name in outputs.values() if isinstance(name, str))
