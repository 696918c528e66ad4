"""covseg: COVID-19 infection, lung and liver segmentation and lesion-burden quantification in chest CT.

Research software, not a medical device. The public API is `covseg.infer` and `covseg.segment`;
both are imported lazily so that `import covseg` stays cheap and never needs torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "infer", "segment"]


def __getattr__(name: str) -> Any:
    # Lazy: the API pulls in SimpleITK, onnxruntime and friends only when used.
    if name in ("infer", "segment"):
        from covseg import api

        return getattr(api, name)
    raise AttributeError(f"module 'covseg' has no attribute {name!r}")
