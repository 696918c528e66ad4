"""Write every table and figure of a batch folder from its rows (used by run and by merge)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from covseg.engine.batch.atomic import clean_stale, write_text_atomic
from covseg.engine.batch.longitudinal import COLUMNS, longitudinal_rows
from covseg.engine.batch.summary import WITHHELD, Row, write_csv, write_parquet

OUTPUT_NAMES = ("summary.csv", "summary.parquet", "longitudinal.csv", "summary.png")


def write_longitudinal(table: list[Row], target: Path) -> None:
    def write(handle: Any) -> None:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for entry in table:
            writer.writerow({k: "" if entry.get(k) is None else entry[k] for k in COLUMNS})

    write_text_atomic(target, write)


def write_outputs(rows: list[Row], out: Path, *, plot: bool = True, withhold: bool = False) -> None:
    """summary.csv (+ .parquet with pyarrow), longitudinal.csv and summary.png, each atomically.

    withhold (--anonymize): paths, file names and dates are left out of every table; follow-ups are
    still ordered by the real dates and keep their intervals in days.
    """
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_NAMES:
        clean_stale(out, name)
    table = longitudinal_rows(rows)
    if withhold:
        rows = [{**row, **dict.fromkeys(WITHHELD)} for row in rows]
        table = [{**entry, "study_date": None} for entry in table]
    write_csv(rows, out / "summary.csv")
    write_parquet(rows, out / "summary.parquet")
    write_longitudinal(table, out / "longitudinal.csv")
    if plot:
        from covseg.engine.batch.plots import write_plot

        write_plot(rows, table, out / "summary.png")
