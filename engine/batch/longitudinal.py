"""Per-patient follow-up: studies of one patient ordered by date, with the change in burden.

Only `ok` studies with both a patient id and a study date enter (an undated study cannot be put
in order). Deltas are to the previous study of the same patient: infection volume in ml, percent
of lungs in percentage points, and the relative volume change in percent (empty when the
previous volume was 0, where a ratio has no meaning).
"""

from __future__ import annotations

import datetime as _dt
from collections import defaultdict
from typing import Any

Row = dict[str, Any]
VOLUME = "infection.volume_ml"
PERCENT = "infection.percent_of_lungs"
COLUMNS = ["patient_id", "follow_up", "key", "study_date", "days_since_first", "days_since_previous",
           "infection_volume_ml",
           "infection_percent_of_lungs", "delta_volume_ml", "delta_percent_points", "relative_volume_change_percent"]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _diff(now: float | None, before: float | None) -> float | None:
    return None if now is None or before is None else now - before


def _days(now: str, before: str) -> int:
    return (_dt.date.fromisoformat(now) - _dt.date.fromisoformat(before)).days


def longitudinal_rows(rows: list[Row]) -> list[Row]:
    """The longitudinal table (see the module docstring), ordered by patient, date and key."""
    by_patient: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row.get("status") == "ok" and row.get("patient_id") and row.get("study_date"):
            by_patient[str(row["patient_id"])].append(row)
    table: list[Row] = []
    for patient in sorted(by_patient):
        studies = sorted(by_patient[patient], key=lambda r: (str(r["study_date"]), str(r["key"])))
        previous: Row | None = None
        for index, row in enumerate(studies):
            volume, percent = _number(row.get(VOLUME)), _number(row.get(PERCENT))
            entry: Row = {"patient_id": patient, "follow_up": index, "key": row["key"],
                          "study_date": row["study_date"],
                          "days_since_first": _days(str(row["study_date"]), str(studies[0]["study_date"])),
                          "infection_volume_ml": volume,
                          "infection_percent_of_lungs": percent}
            if previous is not None:
                before_volume = _number(previous.get(VOLUME))
                delta = _diff(volume, before_volume)
                entry.update(
                    days_since_previous=_days(str(row["study_date"]), str(previous["study_date"])),
                    delta_volume_ml=delta,
                    delta_percent_points=_diff(percent, _number(previous.get(PERCENT))),
                    relative_volume_change_percent=(100.0 * delta / before_volume
                                                    if delta is not None and before_volume else None))
            table.append(entry)
            previous = row
    return table
