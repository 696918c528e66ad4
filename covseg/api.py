"""The public API: `covseg.infer` (a study to outputs and a report) and `covseg.segment` (a Volume to labels).

    import covseg
    report = covseg.infer("study/", "out/", models="lung,infection", device="cpu")

Both are the engine's own functions (covseg.engine.pipeline); the CLI and the batch runner call the
same ones, so numbers agree everywhere.
"""

from __future__ import annotations

from covseg.engine.pipeline import InferOptions, Segmentation, infer, segment

__all__ = ["InferOptions", "Segmentation", "infer", "segment"]
