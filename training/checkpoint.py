"""Checkpoints that resume exactly and load without unpickling, and weight loading that names
every mismatch.

A checkpoint is a folder:

    config.json          the full configuration tree (the network rebuilds from it alone)
    model.safetensors    the model's state dict
    state.safetensors    tensors of the training state: optimiser buffers ("optimizer.<i>.<name>"),
                         torch/CUDA RNG states ("rng.torch", "rng.cuda.<i>")
    state.json           everything else: format, epoch, optimiser param groups and scalar state,
                         scheduler state, python/numpy RNG states, history, normalisation

Weights are safetensors (no code runs on load); `torch.load(weights_only=True)` is used only
for a bare `.pt` state dict given as a pre-trained source. Writes go to a temporary sibling
folder renamed into place, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from covseg.errors import InputError
from covseg.training.config import Config, config_from_dict

FORMAT = "covseg.checkpoint/1"


class WeightMismatchError(InputError):
    """Pre-trained weights do not fit the network; the message lists every key at fault."""


@dataclass
class LoadReport:
    """What a (partial) load did, in the spirit of MONAI's copy_model_state."""

    loaded: list[str] = field(default_factory=list)  # model keys now holding checkpoint values
    skipped: list[str] = field(default_factory=list)  # model keys left at their initial values, with why
    unused: list[str] = field(default_factory=list)  # checkpoint keys not used (dropped layers)

    def summary(self) -> str:
        return f"loaded {len(self.loaded)}, skipped {len(self.skipped)}, unused {len(self.unused)} tensors"


def load_matching(model: nn.Module, source: Mapping[str, torch.Tensor], mapping: Sequence[tuple[str, str]], *,
                  optional: Sequence[str] = (), allow_unused: bool = False, what: str = "checkpoint") -> LoadReport:
    """Copy `source[src_prefix + k]` into `model[dst_prefix + k]` for each (dst_prefix, src_prefix).

    Every model key under a dst prefix must exist in the source with the same shape, and (unless
    allow_unused) every source key under a src prefix must be used; all violations are raised
    together in one WeightMismatchError. Keys under an `optional` dst prefix that are missing
    or differ in shape are skipped (left at their initialisation) and reported instead.
    """
    target = model.state_dict()
    report, problems, selected = LoadReport(), [], {}
    for dst_prefix, src_prefix in mapping:
        dst_keys = [k for k in target if k.startswith(dst_prefix)]
        src_keys = {k for k in source if k.startswith(src_prefix)}
        if not dst_keys:
            problems.append(f"model has no parameters under {dst_prefix!r}")
        for dst_key in dst_keys:
            src_key = src_prefix + dst_key[len(dst_prefix):]
            soft = any(dst_key.startswith(p) for p in optional)
            if src_key not in source:
                issue = f"{dst_key}: missing in {what} (expected {src_key} {tuple(target[dst_key].shape)})"
            elif tuple(source[src_key].shape) != tuple(target[dst_key].shape):
                issue = (f"{dst_key}: shape {tuple(target[dst_key].shape)} in the model but "
                         f"{tuple(source[src_key].shape)} for {src_key} in {what}")
            else:
                selected[dst_key] = source[src_key]
                src_keys.discard(src_key)
                continue
            src_keys.discard(src_key)
            (report.skipped if soft else problems).append(issue)
        unused = sorted(src_keys)
        report.unused += unused
        if unused and not allow_unused:
            problems += [f"{k}: in {what} but not used by the model" for k in unused]
    if problems:
        raise WeightMismatchError(f"{len(problems)} weight mismatch(es) loading {what}: " + "; ".join(problems))
    from monai.networks.utils import copy_model_state

    _, updated, _ = copy_model_state(model, selected, inplace=True)
    report.loaded = sorted(updated)
    return report


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a torch file with weights_only=True (never unpickles)."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise InputError(f"{path}: not a plain state dict of tensors")
    return loaded


@dataclass
class Checkpoint:
    folder: Path
    config: Config
    model_state: dict[str, torch.Tensor]
    state: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def epoch(self) -> int:
        return int(self.state.get("epoch", 0))


def load_checkpoint(folder: str | Path) -> Checkpoint:
    """Read a checkpoint folder; errors name the folder and the missing or bad file."""
    folder = Path(folder)
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise InputError(f"{folder}: not a covseg checkpoint ({name} missing)")
    try:
        config = config_from_dict(json.loads((folder / "config.json").read_text()))
    except json.JSONDecodeError as error:
        raise InputError(f"{folder / 'config.json'}: not valid JSON ({error})") from None
    state: dict[str, Any] = {}
    if (folder / "state.json").is_file():
        state = json.loads((folder / "state.json").read_text())
        if state.get("format") != FORMAT:
            raise InputError(f"{folder / 'state.json'}: format {state.get('format')!r}, expected {FORMAT}")
    tensors = load_file(str(folder / "state.safetensors")) if (folder / "state.safetensors").is_file() else {}
    return Checkpoint(folder, config, load_file(str(folder / "model.safetensors")), state, tensors)


def load_model(folder: str | Path) -> tuple[nn.Module, Config]:
    """The trained network in eval mode and its configuration (what the ONNX exporter needs)."""
    from covseg.training.networks import build_network

    checkpoint = load_checkpoint(folder)
    model = build_network(checkpoint.config)
    load_matching(model, checkpoint.model_state, [("", "")], what=str(checkpoint.folder))
    return model.eval(), checkpoint.config


def _optimizer_split(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    raw = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in raw["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return {"param_groups": raw["param_groups"], "scalars": scalars}, tensors


def _optimizer_join(meta: dict[str, Any], tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, entry in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    version, internal, gauss = random.getstate()
    numpy_state: Any = np.random.get_state(legacy=True)
    meta = {"python": [version, list(internal), gauss],
            "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]]}
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors |= {f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    return meta, tensors


def set_rng_state(meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
    cuda_keys = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    cuda = [tensors[k] for k in cuda_keys]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(folder: str | Path, *, model: nn.Module, config: Config, epoch: int,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write a checkpoint folder atomically (temporary sibling, then rename over the old one)."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(config.to_json() + "\n")
    rng_meta, tensors = rng_state()
    state: dict[str, Any] = {"format": FORMAT, "epoch": epoch, "rng": rng_meta, **(extra or {})}
    if optimizer is not None:
        state["optimizer"], opt_tensors = _optimizer_split(optimizer)
        tensors |= opt_tensors
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def restore_training(checkpoint: Checkpoint, *, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                     scheduler: Any = None) -> None:
    """Put model, optimiser, scheduler and RNGs back exactly as they were saved."""
    load_matching(model, checkpoint.model_state, [("", "")], what=str(checkpoint.folder))
    if optimizer is not None and "optimizer" in checkpoint.state:
        optimizer.load_state_dict(_optimizer_join(checkpoint.state["optimizer"], checkpoint.tensors))
    if scheduler is not None and "scheduler" in checkpoint.state:
        scheduler.load_state_dict(checkpoint.state["scheduler"])
    if "rng" in checkpoint.state:
        set_rng_state(checkpoint.state["rng"], checkpoint.tensors)
