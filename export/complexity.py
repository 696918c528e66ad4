"""Size and cost of a network: parameters, multiply-accumulates per window, CPU latency.

The MAC count is hand-written with forward hooks rather than taken from thop/fvcore/ptflops:
the figure we publish is defined narrowly (convolutions, transposed convolutions and linear
layers, one multiply-accumulate per weight use; norms and activations are not counted), and a
hook of a dozen lines states that definition exactly, where the libraries each count a
different, version-dependent set of layers and would add an unmaintained dependency.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn

K = TypeVar("K")

_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def count_parameters(module: nn.Module) -> int:
    """All parameters (trainable or frozen): what the exported file has to carry."""
    return int(sum(p.numel() for p in module.parameters()))


def _layer_macs(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    batch = int(output.shape[0])
    if isinstance(layer, nn.Linear):
        return int(output.numel() // batch) * layer.in_features
    kernel = math.prod(layer.kernel_size)  # type: ignore[arg-type]
    groups = int(layer.groups)  # type: ignore[arg-type]
    if isinstance(layer, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d):
        # every input voxel is scattered through out_channels/groups kernels
        return int(inputs[0].numel() // batch) * (layer.out_channels // groups) * kernel
    in_channels = int(layer.in_channels)  # type: ignore[arg-type]
    return int(output.numel() // batch) * (in_channels // groups) * kernel


def count_macs(module: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass over one window of `input_shape` (C, z, y, x)."""
    total = 0

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += _layer_macs(layer, inputs, output)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, _COUNTED)]
    try:
        with torch.no_grad():
            module(torch.zeros((1, *input_shape), dtype=torch.float32))
    finally:
        for handle in handles:
            handle.remove()
    return total


def file_size(path: Path) -> int:
    return int(Path(path).stat().st_size)


def round_robin_medians(calls: Mapping[K, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[K, float]:
    """Median seconds of each call, timed round-robin (one call of each per round, after `warmup`
    rounds), so that a load that comes and goes on a shared machine hits every call alike."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[K, list[float]] = {key: [] for key in calls}
    for _ in range(repeats):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - start)
    return {key: float(statistics.median(values)) for key, values in times.items()}


def _median_seconds(call: Callable[[], object], repeats: int, warmup: int) -> float:
    return round_robin_medians({0: call}, repeats, warmup)[0]


def onnx_latency(onnx_path: Path, input_shape: Sequence[int], *, threads: int = 2, repeats: int = 5,
                 warmup: int = 1, seed: int = 0) -> float:
    """Median seconds of one window (batch 1) in ONNX Runtime on the CPU with `threads` threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    image = np.random.default_rng(seed).standard_normal((1, *input_shape)).astype(np.float32)
    return _median_seconds(lambda: session.run(None, {"image": image}), repeats, warmup)


def torch_latency(module: nn.Module, input_shape: Sequence[int], *, threads: int = 2, repeats: int = 5,
                  warmup: int = 1, seed: int = 0) -> float:
    """Median seconds of one window (batch 1) in eager PyTorch on the CPU with `threads` threads."""
    image = torch.from_numpy(np.random.default_rng(seed).standard_normal((1, *input_shape)).astype(np.float32))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return _median_seconds(lambda: module(image), repeats, warmup)
    finally:
        torch.set_num_threads(previous)
