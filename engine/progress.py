"""Progress reporting: the engine calls `progress(stage, fraction)`; it never prints.

Stages of `covseg.infer`, in order: read, lung, infection, liver, postprocess, write (a model stage is
named after the package's task; a stage whose model is not run is simply skipped). `OverallProgress`
turns the stream into a non-decreasing overall fraction for the CLI's bar and JSON lines.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[str, float], None]

# Relative cost of each stage on a typical CPU run; only the order and rough proportions matter.
STAGE_WEIGHTS: dict[str, float] = {
    "read": 0.08, "lung": 0.22, "infection": 0.32, "liver": 0.18, "postprocess": 0.1, "write": 0.1,
}
STAGES: tuple[str, ...] = tuple(STAGE_WEIGHTS)
OTHER_MODEL_WEIGHT = 0.2  # a model stage of another task goes between liver and postprocess


def _clip(fraction: float) -> float:
    return min(max(float(fraction), 0.0), 1.0)


def notify(progress: ProgressCallback | None, stage: str, fraction: float) -> None:
    """Call the callback if there is one (fraction clipped to 0..1)."""
    if progress is not None:
        progress(stage, _clip(fraction))


def scaled(progress: ProgressCallback | None, stage: str, start: float, stop: float) -> Callable[[float], None]:
    """A fraction-only callback mapping 0..1 onto start..stop of `stage` (for sub-steps such as windows)."""

    def report(fraction: float) -> None:
        notify(progress, stage, start + (stop - start) * _clip(fraction))

    return report


class OverallProgress:
    """Maps (stage, fraction) to an overall fraction that never decreases and ends at exactly 1.0."""

    def __init__(self) -> None:
        self.overall = 0.0
        self._order = list(STAGES)
        self._weights = dict(STAGE_WEIGHTS)

    def _span(self, stage: str) -> tuple[float, float]:
        if stage not in self._weights:  # an unknown model task: insert it before postprocess
            self._order.insert(self._order.index("postprocess"), stage)
            self._weights[stage] = OTHER_MODEL_WEIGHT
        total = sum(self._weights.values())
        before = sum(self._weights[s] for s in self._order[: self._order.index(stage)])
        return before / total, self._weights[stage] / total

    def update(self, stage: str, fraction: float) -> float:
        """The overall fraction after this report."""
        if stage == "done":
            self.overall = 1.0
            return 1.0
        start, width = self._span(stage)
        self.overall = max(self.overall, min(start + width * _clip(fraction), 1.0))
        return self.overall
