"""Distributed data parallel under torchrun: gloo on CPU, nccl on CUDA.

`init_from_env` reads the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT); without them (WORLD_SIZE unset or 1) everything is a no-op single process. Patch
sharding is the sampler's (sampling.PatchSampler takes rank and world).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # noqa: RUF009 - immutable value

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_from_env(preference: str = "auto") -> DistContext:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = pick_device(preference, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistContext(rank, world, local_rank, device)


def wrap(model: nn.Module, ctx: DistContext, *, find_unused: bool = False) -> nn.Module:
    """DDP around the model when distributed (only parameters that require grad are synchronised,
    so wrap again after changing which do)."""
    if not ctx.distributed:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def mean_across(value: float, ctx: DistContext) -> float:
    if not ctx.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / ctx.world


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def _spawned(rank: int, world: int, port: int, config_json: str, out_dir: str, weights_dir: str) -> None:
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    from covseg.training.config import config_from_dict
    from covseg.training.loop import fit

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    result = fit(config_from_dict(json.loads(config_json)), out_dir=out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, str(Path(weights_dir) / f"rank{rank}.safetensors"))
    shutdown(init_from_env(result.config.run.device))


def spawn_local(config: Any, out_dir: str | os.PathLike[str], weights_dir: str | os.PathLike[str],
                world: int = 2) -> None:
    """Run `fit` in `world` local processes (what torchrun does, without it: tests, one machine).
    Each rank writes its final weights to weights_dir/rank<r>.safetensors."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_spawned, args=(world, port, config.to_json(), str(out_dir), str(weights_dir)), nprocs=world, join=True)
