"""ONNX Runtime predictors: provider choice (pure, no GPU needed), threads, batches, verification."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from covseg.engine.package import load_package
from covseg.engine.runtime import (
    CPU,
    CUDA,
    TENSORRT,
    create_predictor,
    physical_cores,
    select_providers,
    verify_package,
)
from covseg.errors import ModelPackageError, RuntimeUnavailableError
from tests.model_factory import analytic_labels, make_package

CPU_ONLY = ["AzureExecutionProvider", CPU]
GPU = [TENSORRT, CUDA, CPU]


@pytest.mark.parametrize(("device", "available", "expected"), [
    ("cpu", GPU, [CPU]),
    ("auto", CPU_ONLY, [CPU]),
    ("auto", [CUDA, CPU], [CUDA, CPU]),
    ("auto", GPU, [TENSORRT, CUDA, CPU]),
    ("cuda", GPU, [CUDA, CPU]),
    ("tensorrt", GPU, [TENSORRT, CUDA, CPU]),
    ("tensorrt", [TENSORRT, CPU], [TENSORRT, CPU]),
])
def test_provider_chains(device: str, available: list[str], expected: list[str]) -> None:
    assert select_providers(device, available) == expected


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_gpu_requested_but_absent_is_refused(device: str) -> None:
    with pytest.raises(RuntimeUnavailableError) as caught:
        select_providers(device, CPU_ONLY)
    message = str(caught.value)
    assert f"'{device}'" in message and "covseg[gpu]" in message and "--device cpu" in message
    assert "\n" not in message


def test_unknown_device() -> None:
    with pytest.raises(RuntimeUnavailableError, match="unknown device 'gpu0'"):
        select_providers("gpu0", GPU)


def test_auto_runs_on_cpu_here(tmp_path: Path) -> None:
    import onnxruntime

    predictor = create_predictor(load_package(make_package(tmp_path, "lung")))
    expected = CUDA if CUDA in onnxruntime.get_available_providers() else CPU
    assert predictor.provider in (expected, TENSORRT)
    assert predictor.session.get_session_options().intra_op_num_threads == physical_cores()


def test_cuda_absent_raises_before_loading(tmp_path: Path) -> None:
    import onnxruntime

    if CUDA in onnxruntime.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeUnavailableError, match="'cuda' requested"):
        create_predictor(load_package(make_package(tmp_path, "lung")), device="cuda")


def test_missing_onnxruntime_names_the_extras(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = load_package(make_package(tmp_path, "lung"))
    real_import = builtins.__import__

    def no_ort(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "onnxruntime":
            raise ImportError("no onnxruntime")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    with pytest.raises(RuntimeUnavailableError, match=r"covseg\[cpu\].*covseg\[gpu\]"):
        create_predictor(package, device="cpu")


@pytest.mark.parametrize("kind", ["lung", "infection", "liver"])
def test_analytic_predictors_compute_their_bands(tmp_path: Path, kind: str) -> None:
    package = load_package(make_package(tmp_path, kind))
    predictor = create_predictor(package, device="cpu", threads=1)
    hu = np.linspace(-1100.0, 700.0, 3 * 8 * 9 * 10, dtype=np.float32).reshape(3, 1, 8, 9, 10)
    logits = predictor(package.normalization.apply(hu))
    assert logits.dtype == np.float32 and logits.shape == (3, package.num_classes, 8, 9, 10)
    labels = logits.argmax(axis=1)
    truth = analytic_labels(hu[:, 0], kind)
    assert np.mean(labels == truth) > 0.998  # only values within float rounding of a band edge may differ
    assert truth.max() > 0


def test_random_network_and_fixed_batch(tmp_path: Path) -> None:
    package = load_package(make_package(tmp_path, "random"))
    predictor = create_predictor(package, device="cpu", threads=1)
    batch = np.random.default_rng(0).normal(size=(3, 1, 8, 12, 16)).astype(np.float32)
    out = predictor(batch)
    assert out.shape == (3, 3, 8, 12, 16)
    one_by_one = np.concatenate([predictor(batch[i:i + 1]) for i in range(3)])
    np.testing.assert_allclose(out, one_by_one, atol=1e-5)
    predictor._fixed_batch = 1  # as for a graph exported with batch size 1
    np.testing.assert_allclose(predictor(batch), out, atol=1e-5)


def test_verify_package_runs_a_zero_patch(tmp_path: Path) -> None:
    result = verify_package(make_package(tmp_path, "random", patch=(8, 16, 16)))
    assert result.output_shape == (1, 3, 8, 16, 16) and result.provider == CPU
    assert [name for name, _ in result.checks] == ["schema", "sha256", "metadata", "graph", "inference"]


def test_verify_catches_divisor_mismatch(tmp_path: Path) -> None:
    # The random net halves twice: a patch that is no multiple of 4 cannot come back at its size.
    folder = make_package(tmp_path, "random", patch=(6, 16, 16), divisor=(2, 4, 4))
    with pytest.raises(ModelPackageError, match=r"expected \(1, 3, 6, 16, 16\)"):
        verify_package(folder)


def test_model_changed_after_loading_is_refused(tmp_path: Path) -> None:
    package = load_package(make_package(tmp_path, "lung"))
    (package.onnx_path).write_bytes(package.onnx_path.read_bytes() + b"\0")
    with pytest.raises(ModelPackageError, match="changed since it was verified"):
        create_predictor(package, device="cpu")


def test_external_data_model_runs(tmp_path: Path) -> None:
    package = load_package(make_package(tmp_path, "random", external_data="weights/w.bin"))
    out = create_predictor(package, device="cpu", threads=1)(np.zeros((1, 1, 8, 8, 8), np.float32))
    assert out.shape == (1, 3, 8, 8, 8)
