"""The module's typed parameters: what the user picks before Apply."""

from __future__ import annotations

from dataclasses import dataclass, field

DEVICES = ("cpu", "cuda", "auto")


@dataclass
class CovSegParameters:
    """Models by registry name or task (lung, infection, liver, or a truncated variant's name),
    extra model package folders, the device and the sliding-window options."""

    models: tuple[str, ...] = ("lung", "infection", "liver")
    model_paths: tuple[str, ...] = field(default_factory=tuple)
    device: str = "cpu"
    overlap: float = 0.5
    tta: bool = False
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be >= 0 and < 1, got {self.overlap}")
        if not self.models and not self.model_paths:
            raise ValueError("choose at least one model")
