"""Operating points of two-class models: foreground where its probability exceeds a threshold.

The engine turns probabilities into labels by argmax after resampling them to the input grid, and
for two classes argmax is a threshold of 0.5. A model package may state another operating point
(model.json `output.threshold`, chosen on validation data), and a user may override the infection
model's with `--infection-threshold` (a more or less sensitive reading of the same network).

Why the probabilities are shifted rather than thresholded into a mask here: the resampling to the
input grid is linear, a constant shift commutes with it, so argmax of the shifted pair on the input
grid is exactly "interpolated foreground probability > threshold" with no second code path.
"""

from __future__ import annotations

import numpy as np

from covseg.engine.package import ModelPackage
from covseg.engine.postprocess import groups_of

ARGMAX_THRESHOLD = 0.5


def check_threshold(value: float, what: str = "--infection-threshold") -> float:
    """The value itself when it is a usable operating point, ValueError naming `what` otherwise."""
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{what} must lie strictly between 0 and 1, got {value}")
    return float(value)


def decision_threshold(package: ModelPackage, infection_threshold: float | None) -> float | None:
    """The operating point a model runs at: the user's infection threshold for a two-class infection
    model, else the package's own; None for argmax (models with more classes, or none stated)."""
    if package.num_classes != 2:
        return None
    if infection_threshold is not None and "infection" in groups_of(package.classes):
        return infection_threshold  # checked on entry (segment, infer)
    return package.threshold


def apply_threshold(probabilities: np.ndarray, threshold: float | None) -> np.ndarray:
    """Shift (2, z, y, x) softmax probabilities in place so that argmax picks class 1 exactly where
    p1 > threshold: p1 - s > p0 + s with p0 = 1 - p1 and s = threshold - 0.5."""
    if threshold is None or threshold == ARGMAX_THRESHOLD:
        return probabilities
    if probabilities.shape[0] != 2:
        raise ValueError(f"a decision threshold needs two classes, got {probabilities.shape[0]}")
    shift = np.float32(threshold - ARGMAX_THRESHOLD)
    probabilities[0] += shift
    probabilities[1] -= shift
    return probabilities
