"""ONNX export of every network family: parity, dynamic axes, the engine's loader as judge of
the written package, atomic failure, truncation, and the analytic MAC count.

The U-Net goes through the default (dynamo, torch.export-based) exporter; the other families use
the TorchScript fallback here only because one dynamo export costs 10-40 s on the shared 2-core
machine (benchmarks/truncated_models.py exports full and truncated models with dynamo)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from covseg.engine.package import load_package  # noqa: E402
from covseg.errors import ModelPackageError  # noqa: E402
from covseg.export.complexity import count_macs, count_parameters  # noqa: E402
from covseg.export.exporter import ExportOptions, divisor_of, export_network  # noqa: E402
from covseg.export.metadata import PackageSpec  # noqa: E402
from covseg.training.config import NetworkConfig  # noqa: E402
from covseg.training.networks import build_network  # noqa: E402
from tests.model_factory import set_in_model_json  # noqa: E402

FEATURES, STRIDES = (4, 8, 16, 32), (1, 2, 2, 2)
PATCH = (32, 32, 32)
NORMALIZATION = {"kind": "ct_clip_zscore", "clip_hu": [-1024.0, 600.0], "mean": -500.0, "std": 450.0}
CLASSES = {0: "background", 1: "lung_left", 2: "lung_right"}
FAMILIES: dict[str, dict[str, Any]] = {
    "unet": {"family": "unet"},
    "hybrid": {"family": "hybrid", "fusion_min_channels": 2},
    "multi_lesion": {"family": "multi_lesion", "heads": ("nodules", "effusions")},
    "truncated": {"family": "unet", "truncate_at": 2},
}
EXPORTER = {"unet": "dynamo", "hybrid": "torchscript", "multi_lesion": "torchscript", "truncated": "torchscript"}


def network(kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = NetworkConfig(features=FEATURES, strides=STRIDES, out_channels=3, deep_supervision=1, **FAMILIES[kind])
    net = build_network(config)
    with torch.no_grad():  # instance-norm affine weights start at 1/0: randomise them so they are exercised
        for name, param in net.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    return net.eval()


def spec(kind: str) -> PackageSpec:
    levels = 2 if kind == "truncated" else len(FEATURES)
    return PackageSpec(
        name=f"test-{kind}", version="0.0.1", task="lung", classes=dict(CLASSES), spacing_mm=(1.5, 1.5, 2.5),
        patch=PATCH, divisor=divisor_of(STRIDES[:levels]), normalization=dict(NORMALIZATION),
        network={"family": FAMILIES[kind]["family"], "levels": levels,
                 "truncated_at": 2 if kind == "truncated" else None},
        provenance={"strategy": "scratch", "training_data": [{"name": "covseg phantom", "licence": "Apache-2.0"}]},
    )


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, torch.nn.Module]]:
    root = tmp_path_factory.mktemp("packages")
    made = {}
    for kind in FAMILIES:
        net = network(kind)
        head = "effusions" if kind == "multi_lesion" else None
        options = ExportOptions(measure_latency=False, random_windows=1, exporter=EXPORTER[kind], tolerance=1e-4)
        result = export_network(net, spec(kind), root / kind, options, head=head)
        reference = (lambda x, n=net: n(x, head="effusions")) if head else net
        made[kind] = (result.packages["float32"], reference)
    return made


def _ort(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(FAMILIES))
def test_parity_of_every_family(packages: dict[str, tuple[Path, Any]], kind: str) -> None:
    folder, reference = packages[kind]
    meta = json.loads((folder / "model.json").read_text())
    assert meta["onnx"]["exporter"] == EXPORTER[kind]
    assert meta["parity"]["max_abs_logit_diff"] < 1e-4
    assert meta["parity"]["label_agreement_decisive"] == 1.0
    # Random weights leave near-ties (top-2 logits within 1e-4) that may flip: at most a few voxels.
    assert meta["parity"]["label_agreement"] >= 1.0 - 3 / np.prod(PATCH)
    # independent re-check on an input the exporter never saw
    image = np.random.default_rng(123).standard_normal((1, 1, *PATCH)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(image)).numpy()
    got = _ort(folder).run(None, {"image": image})[0]
    assert got.shape == (1, 3, *PATCH)
    assert np.abs(got - expected).max() < 1e-4
    top2 = np.sort(expected, axis=1)[:, -2:]
    decisive = top2[:, 1] - top2[:, 0] > 1e-4
    assert (got.argmax(1) == expected.argmax(1))[decisive].all()


@pytest.mark.slow
def test_multi_head_exports_only_the_chosen_head(packages: dict[str, tuple[Path, Any]]) -> None:
    folder, _ = packages["multi_lesion"]
    net = network("multi_lesion")
    full = count_parameters(net)
    one_decoder = sum(p.numel() for p in net.decoders["effusions"].parameters())
    meta = json.loads((folder / "model.json").read_text())
    assert meta["network"]["parameters"] == full - one_decoder
    # the other head gives different logits: the exported graph really is the chosen one
    image = torch.from_numpy(np.random.default_rng(5).standard_normal((1, 1, *PATCH)).astype(np.float32))
    with torch.no_grad():
        other = net(image, head="nodules").numpy()
    got = _ort(folder).run(None, {"image": image.numpy()})[0]
    assert np.abs(got - other).max() > 1e-3


@pytest.mark.slow
def test_hybrid_graph_holds_both_encoders_and_fusion(packages: dict[str, tuple[Path, Any]]) -> None:
    folder, _ = packages["hybrid"]
    meta = json.loads((folder / "model.json").read_text())
    assert meta["network"]["parameters"] == count_parameters(network("hybrid"))
    model = onnx.load(str(folder / "model.onnx"))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("Softmax") == len(FEATURES)  # one Selective Fusion unit per level
    assert ops.count("Conv") == 2 * 2 * len(FEATURES) + 2 * (len(FEATURES) - 1) + 1


@pytest.mark.slow
def test_round_trip_through_the_engine_loader(packages: dict[str, tuple[Path, Any]]) -> None:
    folder, _ = packages["unet"]
    package = load_package(folder)
    expected = spec("unet")
    assert package.spacing_mm == expected.spacing_mm
    assert package.classes == CLASSES
    assert package.patch == PATCH and package.divisor == (8, 8, 8)
    assert package.normalization.to_json() == NORMALIZATION
    assert package.network.parameters == count_parameters(network("unet"))
    assert package.opset >= 17
    stored = {p.key: p.value for p in onnx.load(str(folder / "model.onnx")).metadata_props}["covseg.model"]
    on_disk = json.loads((folder / "model.json").read_text())
    del on_disk["onnx"]["sha256"]
    assert json.loads(stored) == on_disk
    card = (folder / "MODEL_CARD.md").read_text()
    assert "not a medical device" in card and "research use only" in card


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(1, 1, 32, 32, 32), (3, 1, 16, 40, 48)])
def test_dynamic_batch_and_spatial_axes(packages: dict[str, tuple[Path, Any]], shape: tuple[int, ...]) -> None:
    folder, reference = packages["unet"]
    image = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    got = _ort(folder).run(None, {"image": image})[0]
    with torch.no_grad():
        expected = reference(torch.from_numpy(image)).numpy()
    assert got.shape == (shape[0], 3, *shape[2:])
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.slow
def test_truncated_model_has_fewer_levels_and_parameters(packages: dict[str, tuple[Path, Any]]) -> None:
    full = json.loads((packages["unet"][0] / "model.json").read_text())["network"]
    cut = json.loads((packages["truncated"][0] / "model.json").read_text())["network"]
    assert cut["truncated_at"] == 2 and cut["levels"] == 2 < full["levels"]
    assert cut["parameters"] < full["parameters"] / 4
    assert cut["macs_per_window"] < full["macs_per_window"]
    convs = [sum(n.op_type == "Conv" for n in onnx.load(str(packages[k][0] / "model.onnx")).graph.node)
             for k in ("unet", "truncated")]
    assert convs[1] < convs[0]
    assert load_package(packages["truncated"][0]).divisor == (2, 2, 2)


def _break(folder: Path, tmp: Path, name: str, change: Any) -> Path:
    broken = tmp / name
    shutil.copytree(folder, broken)
    change(broken)
    return broken


@pytest.mark.slow
def test_loader_refuses_broken_copies_with_clear_errors(packages: dict[str, tuple[Path, Any]], tmp_path: Path) -> None:
    folder, _ = packages["unet"]

    def flip_byte(path: Path) -> None:
        data = bytearray((path / "model.onnx").read_bytes())
        data[-10] ^= 0xFF
        (path / "model.onnx").write_bytes(bytes(data))

    def edit(key: str, value: Any) -> Any:
        return lambda path: set_in_model_json(path, key, value)

    cases = {"hash": (flip_byte, "sha256"), "missing": (edit("input.spacing_mm", None), "input.spacing_mm"),
             "channels": (edit("input.channels", 2), "channels"),
             "patch": (edit("input.patch", [30, 32, 32]), "divisor")}
    for name, (change, needle) in cases.items():
        with pytest.raises(ModelPackageError) as error:
            load_package(_break(folder, tmp_path, name, change))
        message = str(error.value)
        assert needle in message and "\n" not in message, message


def test_failure_above_tolerance_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    options = ExportOptions(tolerance=1e-12, exporter="torchscript", measure_latency=False, random_windows=1,
                            fp16=True)
    with pytest.raises(ModelPackageError, match="parity failed"):
        export_network(network("unet"), spec("unet"), out, options)
    assert list(tmp_path.iterdir()) == []


def test_existing_package_is_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    from covseg.errors import OutputError

    with pytest.raises(OutputError, match="exists"):
        export_network(network("unet"), spec("unet"), out, ExportOptions(exporter="torchscript"))
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"] and (out / "keep.txt").exists()


def test_mac_count_matches_the_analytic_formula() -> None:
    conv = torch.nn.Conv3d(2, 4, kernel_size=3, padding=1)
    assert count_macs(conv, (2, 8, 8, 8)) == 4 * 8**3 * 2 * 27
    strided = torch.nn.Conv3d(2, 4, kernel_size=3, stride=2, padding=1)
    assert count_macs(strided, (2, 8, 8, 8)) == 4 * 4**3 * 2 * 27
    up = torch.nn.ConvTranspose3d(4, 2, kernel_size=2, stride=2)
    assert count_macs(up, (4, 4, 4, 4)) == 4 * 4**3 * 2 * 8
    grouped = torch.nn.Conv3d(4, 4, kernel_size=1, groups=2)
    assert count_macs(grouped, (4, 4, 4, 4)) == 4 * 4**3 * 2


def test_licence_follows_the_training_data() -> None:
    from covseg.export.metadata import build_metadata

    open_spec = spec("unet")
    assert build_metadata(open_spec)["licence"] == "research use only"
    open_spec.provenance = {"training_data": [{"name": "a", "licence": "CC BY 4.0"},
                                              {"name": "b", "licence": "CC BY-NC-SA 4.0"}]}
    assert build_metadata(open_spec)["licence"] == "research use only, non-commercial"


def test_parity_data_file_is_a_parity_input(tmp_path: Path) -> None:
    import SimpleITK as sitk

    hu = np.full((20, 40, 36), -1000.0, dtype=np.float32)  # smaller than the window along z: padded with air
    hu[:, 8:32, 6:30] = 40.0
    hu[4:16, 12:28, 8:16] = -850.0
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(hu), str(path))
    options = ExportOptions(exporter="torchscript", measure_latency=False, random_windows=1, parity_data=path)
    result = export_network(network("unet"), spec("unet"), tmp_path / "pkg", options)
    parity = result.metadata["float32"]["parity"]
    assert parity["inputs"] == "nifti + random"
    assert [c["input"] for c in parity["cases"]] == ["random-0", "nifti:ct.nii.gz"]
    from covseg.errors import InputError

    path.with_suffix(".txt").write_text("not an image")
    with pytest.raises(InputError, match="not a readable image"):
        export_network(network("unet"), spec("unet"), tmp_path / "bad",
                       replace_options(options, parity_data=path.with_suffix(".txt")))
    assert not (tmp_path / "bad").exists()


def replace_options(options: ExportOptions, **changes: Any) -> ExportOptions:
    from dataclasses import replace

    return replace(options, **changes)


def test_package_states_the_axes_its_training_mirrored() -> None:
    from dataclasses import replace

    from covseg.export.checkpoint import _mirror_axes
    from covseg.export.metadata import build_metadata
    from covseg.training.config import AugmentationConfig

    assert "mirror_axes" not in build_metadata(spec("hybrid"))["input"]  # not stated: the engine mirrors all
    assert build_metadata(replace(spec("hybrid"), mirror_axes=(2, 0)))["input"]["mirror_axes"] == [0, 2]
    assert _mirror_axes(AugmentationConfig()) == (0, 1, 2)  # the default augmentation mirrors every axis
    assert _mirror_axes(AugmentationConfig(flip_axes=())) == ()
    assert _mirror_axes(AugmentationConfig(flip_axes=(0, 1, 2), enabled=False)) == ()
    assert _mirror_axes(AugmentationConfig(flip_axes=(0,), flip_prob=0.5)) == (0,)
