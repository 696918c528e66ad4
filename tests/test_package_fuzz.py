"""Fuzzing the model-package loader: mutated model.json values and ONNX bytes never escape as bugs.

`load_package` must answer every mutation with a ModelPackageError (or load a package that still
verifies). The ONNX mutations keep model.json's sha256 in step with the bytes, so they reach the
loader's ONNX scan rather than stopping at the hash check. CI runs a fixed (derandomized) set of
COVSEG_FUZZ_EXAMPLES examples (default 40 per test); set it higher for a longer randomized run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_factory import make_package

from covseg.engine.package import load_package
from covseg.errors import CovsegError

EXAMPLES = int(os.environ.get("COVSEG_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="COVSEG_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture], database=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
KEYS = ["schema", "name", "version", "task", "classes", "input", "input.channels", "input.spacing_mm",
        "input.patch", "input.divisor", "input.crop", "input.normalization", "input.normalization.kind",
        "input.normalization.clip_hu", "input.normalization.std", "output", "output.kind", "network",
        "onnx", "onnx.file", "onnx.opset", "parity", "provenance", "metrics", "licence", "classes.1"]


@pytest.fixture(scope="module")
def pristine() -> Any:
    folder = Path(tempfile.mkdtemp(prefix="covseg-fuzz-pkg-"))
    yield make_package(folder, "lung")
    shutil.rmtree(folder, ignore_errors=True)


def _copy(package: Path) -> Path:
    target = Path(tempfile.mkdtemp(prefix="covseg-fuzz-")) / package.name
    shutil.copytree(package, target)
    return target


def _set(data: dict[str, Any], dotted: str, value: Any, delete: bool) -> None:
    *parents, last = dotted.split(".")
    node: Any = data
    for key in parents:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return
        node = node[key]
    if delete:
        node.pop(last, None)
    else:
        node[last] = value


def _load_expecting_only_covseg_errors(folder: Path) -> None:
    try:
        package = load_package(folder)
    except CovsegError as error:
        assert "\n" not in str(error)
    else:
        assert package.classes and package.patch and all(p > 0 for p in package.patch)
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)


@FUZZ
@given(key=st.sampled_from(KEYS), value=json_values, delete=st.booleans())
def test_mutated_metadata_gives_only_package_errors(pristine: Path, key: str, value: Any, delete: bool) -> None:
    folder = _copy(pristine)
    data = json.loads((folder / "model.json").read_text())
    _set(data, key, value, delete)
    (folder / "model.json").write_text(json.dumps(data))
    _load_expecting_only_covseg_errors(folder)


@FUZZ
@given(position=st.floats(0.0, 1.0), length=st.integers(1, 64), payload=st.binary(min_size=0, max_size=64),
       truncate=st.booleans())
def test_mutated_onnx_bytes_give_only_package_errors(pristine: Path, position: float, length: int, payload: bytes,
                                                     truncate: bool) -> None:
    folder = _copy(pristine)
    onnx_path = folder / "model.onnx"
    content = onnx_path.read_bytes()
    start = int(position * (len(content) - 1))
    mutated = content[:start] if truncate else content[:start] + payload + content[start + length:]
    onnx_path.write_bytes(mutated)
    data = json.loads((folder / "model.json").read_text())
    data["onnx"]["sha256"] = hashlib.sha256(mutated).hexdigest()
    (folder / "model.json").write_text(json.dumps(data))
    _load_expecting_only_covseg_errors(folder)
