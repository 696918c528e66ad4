"""Write every table and figure of a batch folder from its rows (used by run and by merge)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from covseg.engine.batch.atomic import clean_stale, write_text_atomic
from covseg.engine.batch.longitudinal import COLUMNS, longitudinal_rows
from covseg.engine.batch.summary import Row, write_csv, write_parquet

OUTPUT_NAMES = ("summary.csv", "summary.parquet", "longitudinal.csv", "summary.png")


def write_longitudinal(rows: list[Row], target: Path) -> list[Row]:
    table = longitudinal_rows(rows)

    def write(handle: Any) -> None:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for entry in table:
            writer.writerow({k: "" if entry.get(k) is None else entry[k] for k in COLUMNS})

    write_text_atomic(target, write)
    return table


def write_outputs(rows: list[Row], out: Path, *, plot: bool = True) -> None:
    """summary.csv (+ .parquet with pyarrow), longitudinal.csv and summary.png, each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_NAMES:
        clean_stale(out, name)
    write_csv(rows, out / "summary.csv")
    write_parquet(rows, out / "summary.parquet")
    table = write_longitudinal(rows, out / "longitudinal.csv")
    if plot:
        from covseg.engine.batch.plots import write_plot

        write_plot(rows, table, out / "summary.png")
