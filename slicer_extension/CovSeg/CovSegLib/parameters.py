"""The module's typed parameters: what the user picks before Apply."""

from __future__ import annotations

from dataclasses import dataclass, field

DEVICES = ("cpu", "cuda", "auto")


@dataclass
class CovSegParameters:
    """Models by registry name or task (lung, infection, liver, or a truncated variant's name),
    extra model package folders, the device, the sliding-window options and the infection model's
    operating point."""

    models: tuple[str, ...] = ("lung", "infection", "liver")
    model_paths: tuple[str, ...] = field(default_factory=tuple)
    device: str = "cpu"
    overlap: float = 0.5
    tta: bool = False
    threads: int | None = None
    infection_threshold: float | None = None  # None: the infection model's own operating point

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be >= 0 and < 1, got {self.overlap}")
        if self.infection_threshold is not None and not 0.0 < self.infection_threshold < 1.0:
            raise ValueError(f"infection threshold must lie strictly between 0 and 1, got {self.infection_threshold}")
        if not self.models and not self.model_paths:
            raise ValueError("choose at least one model")
