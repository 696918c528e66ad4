"""summary.png: how much lung is infected across the batch, and per-patient trajectories.

matplotlib (the `batch` extra) with the Agg backend, through its object API so no global pyplot
state is touched; the PNG is written atomically like every other batch output.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from covseg.engine.batch.atomic import atomic_path

Row = dict[str, Any]


def _figure(trajectories: bool) -> tuple[Any, list[Any]]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        from covseg.errors import RuntimeUnavailableError

        raise RuntimeUnavailableError("matplotlib is not installed; install the batch extra: "
                                      "pip install 'covseg[batch]'") from error
    figure = Figure(figsize=(11 if trajectories else 6, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2 if trajectories else 1, squeeze=False)[0]
    return figure, list(axes)


def _histogram(axis: Any, percents: list[float], failed: int) -> None:
    if percents:
        axis.hist(percents, bins=min(20, max(5, len(percents) // 3)), color="#c0392b", edgecolor="white")
    else:
        axis.text(0.5, 0.5, "no completed study", ha="center", va="center", transform=axis.transAxes)
    axis.set_xlabel("infection, % of lung volume")
    axis.set_ylabel("studies")
    axis.set_title(f"{len(percents)} studies" + (f" ({failed} failed)" if failed else ""))


def _trajectories(axis: Any, longitudinal: list[Row]) -> None:
    series: dict[str, list[Row]] = defaultdict(list)
    for row in longitudinal:
        series[str(row["patient_id"])].append(row)
    for patient, rows in sorted(series.items()):
        points = [(r["days_since_first"], r["infection_percent_of_lungs"])
                  for r in rows if r["infection_percent_of_lungs"] is not None]
        if len(points) > 1:
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=patient)
    axis.set_xlabel("days since the patient's first study")
    axis.set_ylabel("infection, % of lung volume")
    axis.set_title("follow-ups per patient")
    if len(series) <= 12:
        axis.legend(fontsize=7)


def write_plot(rows: list[Row], longitudinal: list[Row], target: Path) -> None:
    percents = [float(r["infection.percent_of_lungs"]) for r in rows
                if r.get("status") == "ok" and isinstance(r.get("infection.percent_of_lungs"), int | float)]
    failed = sum(1 for r in rows if r.get("status") == "failed")
    counts: dict[str, int] = defaultdict(int)
    for row in longitudinal:
        counts[str(row["patient_id"])] += 1
    follow_ups = any(count > 1 for count in counts.values())
    figure, axes = _figure(follow_ups)
    _histogram(axes[0], percents, failed)
    if follow_ups:
        _trajectories(axes[1], longitudinal)
    figure.tight_layout()
    with atomic_path(target) as temp:
        figure.savefig(temp, format="png")
