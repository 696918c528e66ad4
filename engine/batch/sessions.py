"""Load each model once per worker process, not once per study.

`covseg.api.infer` accepts already created predictors keyed by package path; a batch worker keeps
them in this module-level cache for its lifetime (a process-pool worker, a Dask worker, or the
batch process itself), so ONNX Runtime sessions are built once however many studies the worker
runs. ONNX Runtime sessions may be run from several threads at once, which the threaded Dask mode
does.
"""

from __future__ import annotations

import threading
from typing import Any

_CACHE: dict[tuple[str, str, str, int | None], Any] = {}
_LOCK = threading.Lock()


def predictors_for(options: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """Predictors for the models `options` selects, keyed as infer expects (package path)."""
    from covseg.engine.registry import resolve_models
    from covseg.engine.runtime import create_predictor

    models = options.get("models")
    spec = ",".join(models) if isinstance(models, list | tuple) else models
    device = str(options.get("device") or "auto")
    found: dict[str, Any] = {}
    with _LOCK:
        for package in resolve_models(spec or None, list(options.get("model_paths") or ())):
            key = (str(package.path), package.sha256, device, threads)
            if key not in _CACHE:
                _CACHE[key] = create_predictor(package, device=device, threads=threads)
            found[str(package.path)] = _CACHE[key]
    return found
