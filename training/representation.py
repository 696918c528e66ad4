"""Representation similarity (SVCCA, PWCCA) between network layers, and feature-reuse tables.

SVCCA (Raghu et al. 2017; seed 003) and PWCCA (Morcos et al. 2018; seed 001's RSIM) are written
here with numpy because no maintained library provides them: Google's `svcca` repository is an
unpackaged research snippet, and neither MONAI nor scikit-learn offers either measure
(scikit-learn's iterative CCA is another algorithm and far too slow for thousands of samples).

Activations are (samples, features) matrices; for a convolutional layer each sampled voxel
position of each input is a sample and each channel a feature (seed 001, section II-C).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn


def _orthonormal_basis(x: np.ndarray, epsilon: float) -> np.ndarray:
    """Orthonormal basis of the centred columns' span, dropping directions below `epsilon` (relative)."""
    centred = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        raise ValueError("activations are constant: correlation is undefined")
    return u[:, s > epsilon * s[0]]


def _check(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"need (samples, features) matrices with equal sample counts, got {x.shape} and {y.shape}")
    return x, y


def cca(x: np.ndarray, y: np.ndarray, *, epsilon: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Canonical correlations (descending) and the canonical variates of `x` (samples, k), unit norm.

    The correlations are the singular values of Qx^T Qy for orthonormal bases Qx, Qy of the centred
    activations, which avoids inverting (possibly singular) covariance matrices.
    """
    x, y = _check(x, y)
    qx, qy = _orthonormal_basis(x, epsilon), _orthonormal_basis(y, epsilon)
    p, rho, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    k = rho.size
    return np.clip(rho, 0.0, 1.0), qx @ p[:, :k]


def svcca(x: np.ndarray, y: np.ndarray, *, keep_variance: float = 0.99, epsilon: float = 1e-10) -> float:
    """Mean canonical correlation after reducing each side to the principal components that keep
    `keep_variance` of its variance (the SV step removes noise directions)."""
    x, y = _check(x, y)
    return float(np.mean(cca(_reduce(x, keep_variance), _reduce(y, keep_variance), epsilon=epsilon)[0]))


def _reduce(x: np.ndarray, keep_variance: float) -> np.ndarray:
    centred = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    variance = s**2
    if variance.sum() == 0:
        raise ValueError("activations are constant: correlation is undefined")
    keep = int(np.searchsorted(np.cumsum(variance) / variance.sum(), keep_variance) + 1)
    keep = min(keep, s.size)
    return u[:, :keep] * s[:keep]


def pwcca(x: np.ndarray, y: np.ndarray, *, epsilon: float = 1e-10) -> float:
    """Projection-weighted mean canonical correlation: each correlation weighted by how much of
    `x`'s features its canonical variate accounts for (sum over features of |<h_i, x_j>|).
    Asymmetric: weights come from `x` (the reference, for example the pre-trained network)."""
    x, y = _check(x, y)
    rho, variates = cca(x, y, epsilon=epsilon)
    centred = x - x.mean(axis=0, keepdims=True)
    weights = np.abs(variates.T @ centred).sum(axis=1)
    return float(np.sum(weights * rho) / np.sum(weights))


METHODS = {"svcca": svcca, "pwcca": pwcca}
# CCA on n samples of d features finds spurious correlation when n is not much larger than d (n <= d
# gives all-ones); tables flag layers sampled more thinly than this.
MIN_SAMPLES_PER_CHANNEL = 10


def sample_positions(shape: Sequence[int], count: int, seed: int) -> np.ndarray:
    """Flat indices of `count` (batch, voxel) positions of an (N, C, *spatial) feature map."""
    total = int(shape[0]) * int(np.prod(shape[2:]))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=min(count, total), replace=False))


def as_samples(feature: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(N, C, *spatial) -> (positions, C) at the chosen (batch, voxel) positions."""
    channels_last = np.moveaxis(np.asarray(feature), 1, -1).reshape(-1, feature.shape[1])
    return channels_last[positions]


def tracked_layers(model: nn.Module, *, include_decoder: bool = True) -> list[tuple[str, nn.Module]]:
    """Encoder levels (and decoder stages) of a covseg network, shallowest first.

    The encoder is `model.encoder` (U-Net, multi-lesion) or, for the hybrid network, the adapted
    encoder (the one that holds pre-trained weights) followed by the dedicated one.
    """
    layers: list[tuple[str, nn.Module]] = []
    for attr in ("encoder", "adapted", "dedicated"):
        encoder = getattr(model, attr, None)
        if encoder is not None and hasattr(encoder, "levels"):
            layers += [(f"{attr}.level{i}", level) for i, level in enumerate(encoder.levels)]
    decoder = getattr(model, "decoder", None)
    if include_decoder and decoder is not None and hasattr(decoder, "stages"):
        stages = list(decoder.stages)  # deepest first; name by the level they output
        layers += [(f"decoder.level{len(stages) - 1 - i}", stage) for i, stage in enumerate(stages)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no encoder levels to compare")
    return layers


def record_activations(model: nn.Module, inputs: torch.Tensor, layers: Sequence[tuple[str, nn.Module]]
                       ) -> dict[str, np.ndarray]:
    """Outputs of `layers` for `inputs`, captured with forward hooks in eval mode."""
    import torch

    captured: dict[str, np.ndarray] = {}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def store(_module: nn.Module, _args: object, output: torch.Tensor) -> None:
            captured[name] = output.detach().float().cpu().numpy()
        return store

    handles = [module.register_forward_hook(hook(name)) for name, module in layers]
    try:
        model.eval()
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return captured


@dataclass(frozen=True)
class LayerSimilarity:
    layer: str
    svcca: float
    pwcca: float
    channels: int
    samples: int


def _as_model(source: nn.Module | str | Path) -> nn.Module:
    if isinstance(source, str | Path):
        from covseg.training.checkpoint import load_model

        return load_model(source)[0]
    return source


def layer_similarity(checkpoint_a: nn.Module | str | Path, checkpoint_b: nn.Module | str | Path,
                     inputs: torch.Tensor | np.ndarray, *, max_samples: int = 4096, seed: int = 0,
                     include_decoder: bool = True) -> list[LayerSimilarity]:
    """SVCCA and PWCCA of each tracked layer of A against the same layer of B, on `inputs` (N, C, z, y, x).

    Layers are matched by name (for the hybrid network's adapted encoder against a plain encoder,
    by level index). PWCCA weights come from A. `samples` < ~10 x channels makes CCA optimistic:
    the table reports both so that a reader can judge.
    """
    import torch

    model_a, model_b = _as_model(checkpoint_a), _as_model(checkpoint_b)
    batch = torch.as_tensor(np.asarray(inputs, dtype=np.float32)) if isinstance(inputs, np.ndarray) else inputs
    layers_a, layers_b = tracked_layers(model_a, include_decoder=include_decoder), tracked_layers(
        model_b, include_decoder=include_decoder)
    pairs = _match_layers([n for n, _ in layers_a], [n for n, _ in layers_b])
    acts_a = record_activations(model_a, batch, layers_a)
    acts_b = record_activations(model_b, batch, layers_b)
    results = []
    for index, (name_a, name_b) in enumerate(pairs):
        fa, fb = acts_a[name_a], acts_b[name_b]
        if fa.shape[0] != fb.shape[0] or fa.shape[2:] != fb.shape[2:]:
            raise ValueError(f"layer {name_a} {fa.shape} and {name_b} {fb.shape} have different grids")
        positions = sample_positions(fa.shape, max_samples, seed + index)
        xa, xb = as_samples(fa, positions), as_samples(fb, positions)
        results.append(LayerSimilarity(name_a, svcca(xa, xb), pwcca(xa, xb), int(fa.shape[1]), int(positions.size)))
    return results


def _match_layers(names_a: Sequence[str], names_b: Sequence[str]) -> list[tuple[str, str]]:
    """Same name where B has it; otherwise an encoder level of A against the same level of B's first
    encoder (the hybrid network's adapted encoder against a plain one)."""
    pairs = []
    for name in names_a:
        if name in names_b:
            pairs.append((name, name))
            continue
        prefix, _, level = name.partition(".")
        if prefix == "decoder":
            continue
        match = next((f"{p}.{level}" for p in ("encoder", "adapted", "dedicated") if f"{p}.{level}" in names_b), None)
        if match is not None:
            pairs.append((name, match))
    if not pairs:
        raise ValueError(f"no layers in common between {list(names_a)} and {list(names_b)}")
    return pairs


def feature_reuse_rows(transfer: Sequence[LayerSimilarity], scratch: Sequence[LayerSimilarity] | None = None,
                       *, method: str = "pwcca") -> list[dict[str, object]]:
    """Per layer: similarity before vs after fine-tuning, the same for a scratch-trained network
    (random initialisation vs converged) when given, and feature reuse = their difference (seed 001,
    after Raghu et al. 2019)."""
    by_layer = {s.layer: s for s in scratch or ()}
    rows: list[dict[str, object]] = []
    for item in transfer:
        value = getattr(item, method)
        row: dict[str, object] = {"layer": item.layer, "channels": item.channels, "samples": item.samples,
                                  f"{method}_pretrained_vs_finetuned": value}
        base = by_layer.get(item.layer)
        row[f"{method}_init_vs_scratch"] = None if base is None else getattr(base, method)
        row["feature_reuse"] = None if base is None else value - getattr(base, method)
        row["note"] = (f"only {item.samples} samples for {item.channels} channels: similarity biased towards 1"
                       if item.samples < MIN_SAMPLES_PER_CHANNEL * item.channels else "")
        rows.append(row)
    return rows


def write_similarity_tables(rows: Sequence[dict[str, object]], out_dir: Path, *, title: str) -> tuple[Path, Path]:
    from covseg.training.evaluation import markdown_table, write_csv

    out_dir.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0]) if rows else ["layer"]
    csv_path = write_csv(rows, out_dir / "similarity.csv", columns)
    md_path = out_dir / "similarity.md"
    md_path.write_text(f"# {title}\n\n" + markdown_table(rows, columns), encoding="utf-8")
    return csv_path, md_path


def _normalizer(checkpoint: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """The HU -> input mapping saved with a checkpoint by the loop; per-input z-score if absent."""
    from covseg.engine.package import Normalization
    from covseg.training.checkpoint import load_checkpoint

    saved = load_checkpoint(checkpoint).state.get("normalization")
    if isinstance(saved, dict) and saved.get("kind") == "ct_window":
        low, high = saved["window_hu"]
        return Normalization("ct_window", float(low), float(high)).apply
    if isinstance(saved, dict) and "clip_hu" in saved:
        low, high = saved["clip_hu"]
        return Normalization(str(saved["kind"]), float(low), float(high), float(saved["mean"]),
                             float(saved["std"])).apply
    return lambda hu: ((hu - hu.mean()) / (hu.std() + 1e-6)).astype(np.float32)


def _images(source: Path, max_cases: int) -> list[np.ndarray]:
    """HU arrays of up to `max_cases` images of a dataset folder, or of the one study at `source`."""
    from covseg.engine.reading import read_study
    from covseg.errors import InputError
    from covseg.training.datasets import detect_layout, load_dataset

    if source.is_dir():
        try:
            detect_layout(source)
        except InputError:
            return [read_study(source).array]  # not a dataset: a DICOM folder
        return [c.load_image().array for c in load_dataset(source).cases[:max_cases]]
    return [read_study(source).array]


def analysis_inputs(data: str | Path, checkpoint: str | Path, *, patches: int = 8, max_cases: int = 4,
                    seed: int = 0) -> np.ndarray:
    """(N, 1, z, y, x) normalised patches of the training patch size, at seeded random positions of
    up to `max_cases` images of a dataset (or of one study). Both networks see the same inputs;
    images are used on their own grid (no resampling), which is enough to compare representations."""
    from covseg.training.checkpoint import load_checkpoint

    patch = tuple(int(v) for v in load_checkpoint(checkpoint).config.schedule.patch_zyx)
    volumes = _images(Path(data), max_cases)
    normalize = _normalizer(checkpoint)
    rng = np.random.default_rng(seed)
    out = []
    for index in range(patches):
        hu = volumes[index % len(volumes)]
        padded = np.pad(hu, [(0, max(0, p - s)) for p, s in zip(patch, hu.shape, strict=True)],
                        constant_values=-1024.0)
        corner = [int(rng.integers(0, s - p + 1)) for p, s in zip(patch, padded.shape, strict=True)]
        crop = padded[tuple(slice(c, c + p) for c, p in zip(corner, patch, strict=True))]
        out.append(normalize(crop)[None])
    return np.stack(out).astype(np.float32)


def analyze(checkpoint_a: str | Path, checkpoint_b: str | Path, data: str | Path, out_dir: str | Path, *,
            random_init: str | Path | None = None, scratch: str | Path | None = None, patches: int = 8,
            max_samples: int = 4096, seed: int = 0, method: str = "pwcca") -> list[dict[str, object]]:
    """`covseg analyze`: per-layer similarity of A (pre-trained) and B (fine-tuned) and, given a
    random initialisation and the scratch-trained network from it, the feature reuse per layer."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    inputs = analysis_inputs(data, checkpoint_a, patches=patches, seed=seed)
    transfer = layer_similarity(checkpoint_a, checkpoint_b, inputs, max_samples=max_samples, seed=seed)
    baseline = None
    if random_init is not None and scratch is not None:
        baseline = layer_similarity(random_init, scratch, inputs, max_samples=max_samples, seed=seed)
    rows = feature_reuse_rows(transfer, baseline, method=method)
    for row, item in zip(rows, transfer, strict=True):
        row["svcca_a_vs_b"], row["pwcca_a_vs_b"] = item.svcca, item.pwcca
    write_similarity_tables(rows, Path(out_dir), title=f"Layer similarity of {Path(checkpoint_a).name} and "
                            f"{Path(checkpoint_b).name} ({method.upper()} feature reuse)")
    return rows
