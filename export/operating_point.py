"""Set the operating point of an exported two-class package, without touching its weights.

Why a separate step: the threshold is chosen after training, by running the exported package
through `covseg infer` on validation cases at several thresholds, so it is known only once a
package exists. Re-exporting from the checkpoint would need the training run; here the package's
own ONNX graph is kept, model.json gains `output.threshold`, a new version and the metrics measured
at that threshold, and the copy inside the ONNX metadata and the sha256 follow (the engine refuses
a package whose two copies disagree).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from covseg.engine.decision import check_threshold
from covseg.engine.package import load_package
from covseg.errors import ModelPackageError
from covseg.export.package_writer import staged_folder, write_package_metadata


def set_operating_point(package: Path, out: Path, threshold: float, *, version: str, chosen_on: str,
                        metrics: Sequence[Mapping[str, Any]] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write the package at `package` to `out` (may be the same folder with overwrite) running at
    `threshold`; return its model.json. `chosen_on` says in words which data chose the threshold."""
    source = load_package(package)
    if source.num_classes != 2:
        raise ModelPackageError(f"{source.path}: {source.num_classes} classes; an operating point is only for "
                                "two-class models")
    check_threshold(threshold, "threshold")
    weights_of = f"{source.name} {source.version} (sha256 {source.sha256[:12]})"

    def edit(metadata: dict[str, Any]) -> None:
        metadata["version"] = version
        metadata["output"]["threshold"] = float(threshold)
        metadata["provenance"]["operating_point"] = {"threshold": float(threshold), "chosen_on": chosen_on,
                                                     "weights_of": weights_of}
        if metrics is not None:
            metadata["metrics"] = [dict(m) for m in metrics]

    return rewrite_metadata(package, out, edit, overwrite=overwrite)


def rewrite_metadata(package: Path, out: Path, edit: Callable[[dict[str, Any]], None], *,
                     overwrite: bool = False) -> dict[str, Any]:
    """The package at `package` written to `out` with its model.json changed by `edit` (the ONNX graph
    and weights as they are; the metadata copy inside the ONNX file and the sha256 follow)."""
    source = load_package(package)  # hash and metadata verified before anything is copied
    metadata: dict[str, Any] = json.loads(json.dumps(source.metadata))
    edit(metadata)
    model = onnx.load(str(source.onnx_path))  # whole graph in memory: `out` may replace `package`
    with staged_folder(Path(out), overwrite=overwrite) as folder:
        written = write_package_metadata(folder, model, metadata)
    return written
