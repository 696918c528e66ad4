"""report.json (schema covseg.report/1, DESIGN.md section 4) and the patient pseudonym.

Privacy: the report never holds a patient identifier unless the caller keeps them. `patient` is a
salted SHA-256 of PatientID ("anon-" + 16 hex digits), stable across runs so that follow-ups of a
patient line up; the salt is COVSEG_PSEUDONYM_SALT when set (a site secret), else covseg's own.
With anonymize, the input path and study date are withheld too (both can identify a patient).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covseg import __version__
from covseg.engine.geometry import Geometry
from covseg.engine.quantify import Quantities, qc_flags
from covseg.engine.volume import StudyInfo

SCHEMA = "covseg.report/1"
DEFAULT_SALT = "covseg-pseudonym-v1"
SALT_VARIABLE = "COVSEG_PSEUDONYM_SALT"
WITHHELD = "withheld (--anonymize)"
STAGE_SECONDS = ("read", "preprocess", "inference", "postprocess", "write", "total")


@dataclass(frozen=True)
class ModelRun:
    """One model of the cascade as the report lists it."""

    name: str
    version: str
    task: str
    sha256: str
    provider: str
    seconds: float
    skipped: str | None = None  # why the model did not run (e.g. "no lungs found")
    threshold: float | None = None  # operating point of a two-class model; None: argmax

    def as_report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "version": self.version, "task": self.task,
                               "sha256": self.sha256, "provider": self.provider, "seconds": round(self.seconds, 3)}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.skipped is not None:
            out["skipped"] = self.skipped
        return out


@dataclass(frozen=True)
class RunSettings:
    device: str
    threads: int | None
    overlap: float
    tta: bool


def pseudonym(patient_id: str | None) -> str | None:
    """A stable pseudonymous id for a PatientID (None when there is none)."""
    if not patient_id:
        return None
    salt = os.environ.get(SALT_VARIABLE, DEFAULT_SALT)
    return "anon-" + hashlib.sha256(f"{salt}\x00{patient_id}".encode()).hexdigest()[:16]


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MB (getrusage; psutil where it is absent)."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0), 1)
    except ImportError:  # Windows
        import psutil

        info = psutil.Process().memory_info()
        return round(getattr(info, "peak_wset", info.rss) / (1024.0 * 1024.0), 1)


def _input_block(path: Path, info: StudyInfo, geometry: Geometry, *, anonymize: bool, keep_identifiers: bool,
                 reasons: dict[str, str]) -> dict[str, Any]:
    patient = info.patient_id if keep_identifiers and not anonymize else pseudonym(info.patient_id)
    if patient is None:
        reasons["input.patient"] = "the input has no patient identifier"
    study_date = None if anonymize else info.study_date
    if anonymize:
        reasons["input.path"] = reasons["input.study_date"] = WITHHELD
    elif study_date is None:
        reasons["input.study_date"] = "the input has no study date"
    return {
        "path": None if anonymize else str(path), "format": info.format,
        "study_instance_uid": info.study_instance_uid, "series_instance_uid": info.series_instance_uid,
        "patient": patient, "study_date": study_date, "modality": info.modality,
        "slices": int(geometry.size[2]), "warnings": list(info.warnings),
    }


def build_report(*, path: Path, info: StudyInfo, geometry: Geometry, models: list[ModelRun], settings: RunSettings,
                 seconds: dict[str, float], quantities: Quantities, outputs: dict[str, str | None],
                 reasons: dict[str, str], anonymize: bool = False, keep_identifiers: bool = False,
                 peak_mb: float | None = None) -> dict[str, Any]:
    """The report dict, every key of DESIGN.md section 4 present (unmeasurable values None + reason)."""
    all_reasons: dict[str, str] = {}
    input_block = _input_block(path, info, geometry, anonymize=anonymize, keep_identifiers=keep_identifiers,
                               reasons=all_reasons)
    all_reasons.update(quantities.reasons)
    all_reasons.update(reasons)
    return {
        "schema": SCHEMA, "covseg_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "input": input_block,
        "geometry": geometry.as_report(),
        "models": [m.as_report() for m in models],
        "runtime": {"device": settings.device, "threads": settings.threads, "overlap": settings.overlap,
                    "tta": settings.tta,
                    "seconds": {k: round(float(seconds.get(k, 0.0)), 3) for k in STAGE_SECONDS},
                    "peak_memory_mb": peak_memory_mb() if peak_mb is None else peak_mb},
        "structures": quantities.structures,
        "infection": quantities.infection,
        "reasons": dict(sorted(all_reasons.items())),
        "qc": {"flags": qc_flags(quantities)},
        "outputs": outputs,
        "disclaimer": "research software, not a medical device",
    }


def write_report(report: dict[str, Any], path: Path) -> Path:
    """Write the report as UTF-8 JSON (indented, NaN refused: a NaN is a bug, never a measurement)."""
    Path(path).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return Path(path)
