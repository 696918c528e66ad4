"""Model package loading: every refusal is a one-line ModelPackageError naming the folder and the fault."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from covseg.engine.package import (
    SCHEMA,
    Normalization,
    load_package,
    metadata_without_hash,
)
from covseg.engine.runtime import scan_onnx
from covseg.errors import ModelPackageError
from tests.model_factory import KINDS, make_package


def _refused(folder: Path, *fragments: str) -> str:
    with pytest.raises(ModelPackageError) as caught:
        load_package(folder)
    message = str(caught.value)
    assert "\n" not in message
    assert str(folder) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("kind", KINDS)
def test_factory_packages_load_with_typed_fields(tmp_path: Path, kind: str) -> None:
    folder = make_package(tmp_path, kind, spacing_mm=(1.5, 1.5, 2.5), patch=(8, 16, 24), crop="body")
    package = load_package(folder)
    assert package.name == f"{kind}-test" and package.path == folder
    assert package.spacing_mm == (1.5, 1.5, 2.5) and package.spacing_zyx == (2.5, 1.5, 1.5)
    assert package.patch == (8, 16, 24) and package.divisor == (4, 4, 4) and package.crop == "body"
    assert package.classes[0] == "background" and package.num_classes == len(package.classes)
    assert package.normalization == Normalization("ct_clip_zscore", -1024.0, 600.0, -500.0, 450.0)
    assert package.onnx_path == folder / "model.onnx" and len(package.sha256) == 64
    assert package.opset == 17 and package.metadata["schema"] == SCHEMA
    assert load_package(folder / "model.json") == package  # the model.json path works too


def test_normalizations() -> None:
    zscore = Normalization("ct_clip_zscore", -1000.0, 400.0, -500.0, 250.0)
    hu = np.array([-2000.0, -1000.0, -500.0, 0.0, 1000.0], dtype=np.float32)
    np.testing.assert_allclose(zscore.apply(hu), [-2.0, -2.0, 0.0, 2.0, 3.6])
    window = Normalization("ct_window", -1000.0, 200.0)
    np.testing.assert_allclose(window.apply(hu), [0.0, 0.0, 0.5 / 1.2, 1.0 / 1.2, 1.0], rtol=1e-6)
    assert window.apply(hu).dtype == np.float32 and window.value_of(-1024.0) == 0.0


def test_ct_window_normalization_loads(tmp_path: Path) -> None:
    folder = make_package(tmp_path, "liver", normalization=Normalization("ct_window", -100.0, 200.0))
    assert load_package(folder).normalization == Normalization("ct_window", -100.0, 200.0)


def test_wrong_hash_is_refused(tmp_path: Path) -> None:
    folder = make_package(tmp_path, "lung")
    with (folder / "model.onnx").open("ab") as stream:
        stream.write(b"\0")
    _refused(folder, "sha256", "model.onnx")


def _drop(key: str) -> Any:
    def edit(metadata: dict[str, Any]) -> None:
        *parents, last = key.split(".")
        node = metadata
        for part in parents:
            node = node[part]
        del node[last]
    return edit


@pytest.mark.parametrize("key", ["schema", "name", "task", "classes", "input.patch", "input.spacing_mm",
                                 "input.normalization", "input.normalization.kind", "onnx.sha256",
                                 "provenance", "metrics", "licence", "network.family"])
def test_missing_key_is_named(tmp_path: Path, key: str) -> None:
    _refused(make_package(tmp_path, "lung", edit=_drop(key)), f"'{key}'", "missing")


def _set(key: str, value: Any) -> Any:
    def edit(metadata: dict[str, Any]) -> None:
        *parents, last = key.split(".")
        node = metadata
        for part in parents:
            node = node[part]
        node[last] = value
    return edit


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("schema", "covseg.model/2", "unsupported major"),
    ("schema", "other/1", "must be"),
    ("classes", {"0": "background", "1": "lung"}, "not a label"),
    ("classes", {"0": "background", "2": "lung_left"}, "indices"),
    ("classes", {"0": "lung_left", "1": "background"}, "background at 0"),
    ("input.patch", [16, 32], "list of 3"),
    ("input.patch", [16, 32.5, 32], "3 positive integers"),
    ("input.patch", [18, 32, 32], "multiple of input.divisor"),
    ("input.spacing_mm", [1.0, -1.0, 1.0], "positive"),
    ("input.crop", "lungs", "known"),
    ("input.normalization.kind", "minmax", "known"),
    ("input.normalization.clip_hu", [600, -1024], "low < high"),
    ("input.normalization.std", 0, "positive"),
    ("output.kind", "probabilities", "logits"),
    ("onnx.file", "../model.onnx", "inside the package folder"),
])
def test_invalid_values_are_named(tmp_path: Path, key: str, value: Any, fragment: str) -> None:
    # Edited after the ONNX metadata was embedded: the schema check must fire before the
    # "metadata disagrees" one so the message names the real fault.
    _refused(make_package(tmp_path, "lung", edit=_set(key, value)), f"'{key}", fragment)


def test_metadata_must_agree_with_onnx_copy(tmp_path: Path) -> None:
    folder = make_package(tmp_path, "lung", edit=_set("licence", "something else"))
    _refused(folder, "metadata_props", "disagrees")
    _refused(make_package(tmp_path / "b", "lung", metadata_props=False), "metadata_props", "covseg.model")


def test_metadata_copy_excludes_only_the_hash(tmp_path: Path) -> None:
    folder = make_package(tmp_path, "liver")
    stored = scan_onnx((folder / "model.onnx").read_bytes()).metadata["covseg.model"]
    on_disk = json.loads((folder / "model.json").read_text())
    assert json.loads(stored) == metadata_without_hash(on_disk)
    assert "sha256" not in json.loads(stored)["onnx"] and on_disk["onnx"]["sha256"]


@pytest.mark.parametrize(("names", "fragment"), [(("input", "logits"), "inputs are ['input']"),
                                                  (("image", "out"), "outputs are ['out']")])
def test_onnx_names_must_match(tmp_path: Path, names: tuple[str, str], fragment: str) -> None:
    folder = make_package(tmp_path, "lung", input_name=names[0], output_name=names[1])
    _refused(folder, fragment)


def test_onnx_channels_must_match(tmp_path: Path) -> None:
    # The analytic lung model has 3 output channels; a model.json saying 2 classes is refused.
    folder = make_package(tmp_path, "lung", classes={0: "background", 1: "lung_left"})
    _refused(folder, "output 'logits' has 3 channels", "says 2")


def test_external_data_inside_folder_is_accepted(tmp_path: Path) -> None:
    folder = make_package(tmp_path, "random", external_data="weights/all.bin")
    assert load_package(folder).name == "random-test"
    assert scan_onnx((folder / "model.onnx").read_bytes()).external_locations


@pytest.mark.parametrize("location", ["../outside.bin", "sub/../../outside.bin"])
def test_external_data_outside_folder_is_refused(tmp_path: Path, location: str) -> None:
    folder = make_package(tmp_path / "pkgs", "random", external_data=location)
    _refused(folder, "external data location", "outside the package folder")


def test_missing_external_data_is_refused(tmp_path: Path) -> None:
    folder = make_package(tmp_path, "random", external_data="weights.bin")
    (folder / "weights.bin").unlink()
    _refused(folder, "external data file", "missing")


def test_not_a_package(tmp_path: Path) -> None:
    with pytest.raises(ModelPackageError, match="not a folder"):
        load_package(tmp_path / "nowhere")
    with pytest.raises(ModelPackageError, match=r"model\.json is missing"):
        load_package(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelPackageError, match="not readable JSON"):
        load_package(tmp_path)


def test_garbage_onnx_is_refused(tmp_path: Path) -> None:
    folder = make_package(tmp_path, "lung")
    (folder / "model.onnx").write_bytes(b"\xff" * 64)
    metadata = json.loads((folder / "model.json").read_text())
    import hashlib

    metadata["onnx"]["sha256"] = hashlib.sha256(b"\xff" * 64).hexdigest()
    (folder / "model.json").write_text(json.dumps(metadata))
    _refused(folder, "is not an ONNX model")


@pytest.mark.parametrize("kind", KINDS)
def test_scanner_agrees_with_onnx_library(tmp_path: Path, kind: str) -> None:
    folder = make_package(tmp_path, kind, external_data="w.bin" if kind == "random" else None)
    summary = scan_onnx((folder / "model.onnx").read_bytes())
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    inputs = {i.name: tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                            for d in i.type.tensor_type.shape.dim)
              for i in model.graph.input if i.name not in initializers}
    outputs = {o.name: tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                             for d in o.type.tensor_type.shape.dim) for o in model.graph.output}
    assert summary.inputs == inputs and summary.outputs == outputs
    assert summary.metadata == {p.key: p.value for p in model.metadata_props}
    assert summary.opset == 17
    expected = [e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"]
    assert summary.external_locations == expected
