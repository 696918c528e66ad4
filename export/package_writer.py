"""Write a model package folder atomically: model.onnx, model.json, MODEL_CARD.md.

Everything is written into a hidden staging folder beside the destination, checked with the
engine's own `load_package` (the reader is the judge of what the writer wrote), and only then
renamed into place. Any failure (export, parity, checks) removes the staging folder, so a failed
export leaves nothing behind and never touches an existing package.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx

from covseg.errors import OutputError
from covseg.export.metadata import METADATA_KEY, PackageSpec, build_metadata, onnx_metadata_json
from covseg.export.model_card import render_model_card
from covseg.export.onnx_export import save_onnx


@contextlib.contextmanager
def staged_folder(out: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes `out`, on failure it disappears."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a package is meant to be shared and read
    try:
        yield staging
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            out.rename(old / out.name)
            staging.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def embed_metadata(model: onnx.ModelProto, metadata: dict[str, Any]) -> onnx.ModelProto:
    """Replace metadata_props["covseg.model"] with model.json minus its own hash."""
    keep = [(p.key, p.value) for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {**dict(keep), METADATA_KEY: onnx_metadata_json(metadata)})
    return model


def write_package_files(folder: Path, model: onnx.ModelProto, spec: PackageSpec) -> dict[str, Any]:
    """Fill `folder` with a complete package and verify it with the engine's loader; return model.json."""
    return write_package_metadata(folder, model, build_metadata(spec))


def write_package_metadata(folder: Path, model: onnx.ModelProto, metadata: dict[str, Any]) -> dict[str, Any]:
    """`write_package_files` from a finished model.json dict (its sha256 is filled in here)."""
    folder = Path(folder)
    save_onnx(embed_metadata(model, metadata), folder / "model.onnx")
    metadata["onnx"]["sha256"] = sha256_of(folder / "model.onnx")
    (folder / "model.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    (folder / "MODEL_CARD.md").write_text(render_model_card(metadata), encoding="utf-8")
    from covseg.engine.package import load_package

    load_package(folder)  # raises ModelPackageError naming what the loader refuses
    return metadata
