"""The training loop: `fit(config, out_dir=...)` on CPU or CUDA (AMP), single process or DDP.

Per epoch: the strategy's epoch hook (layer-wise unfreezing), `iterations_per_epoch` batches of
sampled patches, a poly learning-rate step, validation Dice on the held-out cases (engine
sliding window), one JSON line in `log.jsonl` and a checkpoint in `checkpoints/last` (and
`checkpoints/best` when the validation Dice improves). Every source of randomness is re-seeded
from (seed, epoch) at the start of an epoch and RNG states are also saved, so resuming after
epoch k reproduces the uninterrupted run bit for bit on the same machine (CPU, deterministic
algorithms).
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from covseg.engine.package import AIR_HU, Normalization
from covseg.errors import InputError
from covseg.training import ddp
from covseg.training.checkpoint import load_checkpoint, restore_training, save_checkpoint
from covseg.training.config import Config
from covseg.training.data import Case, build_cases
from covseg.training.losses import make_loss
from covseg.training.sampling import PatchSampler, make_augmentation
from covseg.training.strategies import TARGET_HEAD, Prepared, Source, Strategy, get_strategy

Progress = Callable[[dict[str, Any]], None]


@dataclass
class FitResult:
    out_dir: Path
    checkpoint: Path
    config: Config  # the effective configuration (network as built by the strategy)
    model: nn.Module
    normalization: Normalization
    history: list[dict[str, Any]] = field(default_factory=list)
    trainable: int = 0
    frozen: int = 0
    device: str = "cpu"

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def seconds_per_epoch(self) -> list[float]:
        return [float(h["seconds"]) for h in self.history]

    @property
    def best_dice(self) -> float | None:
        values = [h["val_dice"] for h in self.history if h.get("val_dice") is not None]
        return max(values) if values else None


def make_optimizer(config: Config, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    opt = config.optimiser
    if opt.name == "adam":
        return torch.optim.AdamW(groups, lr=opt.lr, weight_decay=opt.weight_decay)
    return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov,
                           weight_decay=opt.weight_decay)


def make_scheduler(config: Config, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Poly decay per epoch: lr = lr0 * (1 - epoch / epochs) ** 0.9 (paper 000, nnU-Net).

    A closed form of the epoch (LambdaLR), not a chained update, so that resuming with more
    epochs (--epochs N --resume) continues on the new schedule instead of the saved one."""
    epochs, power = config.schedule.epochs, config.schedule.poly_exponent

    def poly(epoch: int) -> float:
        return max(0.0, 1.0 - epoch / epochs) ** power

    return torch.optim.lr_scheduler.LambdaLR(optimizer, poly)


def follow_schedule(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Set the restored optimiser's learning rates from the schedule's closed form at its epoch.

    The saved optimiser holds the rate of the saved schedule: after `--epochs N --resume` past a
    finished run that rate is 0, and the first resumed epoch would not train at all."""
    epoch = scheduler.last_epoch
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base * factor(epoch)


def seed_everything(seed: int, epoch: int, rank: int) -> None:
    derived = int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])
    random.seed(derived)
    np.random.seed(derived)
    torch.manual_seed(derived)


def load_source(config: Config) -> Source | None:
    """The pre-trained network named by strategy.pretrained: a checkpoint folder, or a model
    package folder that carries its training checkpoint in `checkpoint/`."""
    path = config.strategy.pretrained
    if path is None:
        return None
    folder = Path(path)
    if (folder / "model.json").is_file() and not (folder / "model.safetensors").is_file():
        if not (folder / "checkpoint" / "model.safetensors").is_file():
            raise InputError(f"model package {folder} carries no training checkpoint (checkpoint/); ONNX weights "
                             "cannot be fine-tuned: pass the checkpoint folder it was exported from")
        folder = folder / "checkpoint"
    checkpoint = load_checkpoint(folder)
    return checkpoint.config, checkpoint.model_state


@contextlib.contextmanager
def _runtime(config: Config, ctx: ddp.DistContext) -> Iterator[None]:
    """Threads and determinism for this fit, restored afterwards (they are process-global)."""
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    try:
        _setup_runtime(config, ctx)
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])
        torch.backends.cudnn.benchmark = saved[2]


def _setup_runtime(config: Config, ctx: ddp.DistContext) -> None:
    if config.run.num_threads:
        torch.set_num_threads(config.run.num_threads)
    if config.run.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True


@dataclass
class Task:
    """The data of one output head (None: the plain network's only head)."""

    head: str | None
    sampler: PatchSampler
    validation: list[Case]


class Session:
    """Everything one fit needs; built fresh or restored from `checkpoints/last`."""

    def __init__(self, config: Config, out_dir: Path, resume: bool, ctx: ddp.DistContext) -> None:
        self.ctx, self.out_dir = ctx, out_dir
        self.last = out_dir / "checkpoints" / "last"
        checkpoint = load_checkpoint(self.last) if resume and (self.last / "model.safetensors").is_file() else None
        self.strategy: Strategy = get_strategy(config)
        seed_everything(config.run.seed, 2**31, 0)  # network initialisation: the same on every rank
        if checkpoint is not None:
            # A checkpoint recovered from a model package (package_weights.py) carries no strategy: it
            # resumes under the recipe's, which freezes what that strategy freezes.
            recovered = "recovered_from_package" in checkpoint.state
            if checkpoint.config.strategy.name != config.strategy.name and not recovered:
                raise InputError(f"{self.last}: was trained with strategy {checkpoint.config.strategy.name!r}, "
                                 f"not {config.strategy.name!r}; use another --out or no --resume")
            prepared: Prepared = self.strategy.restore(checkpoint.config.network)
        else:
            prepared = self.strategy.prepare(load_source(config))
        self.prepared = prepared
        self.config = replace(config, network=prepared.network)
        self.model = prepared.model.to(ctx.device)
        self.optimizer = make_optimizer(self.config, prepared.param_groups)
        self.scheduler = make_scheduler(self.config, self.optimizer)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self._amp)
        self.loss = make_loss(self.config)
        self.start_epoch, self.history = 0, []
        self.epoch_lr: list[float] = []
        if checkpoint is not None:
            restore_training(checkpoint, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler)
            if "scheduler" not in checkpoint.state:  # recovered from a package: the schedule at its epoch
                self.scheduler.last_epoch = checkpoint.epoch
            follow_schedule(self.optimizer, self.scheduler)
            self.start_epoch, self.history = checkpoint.epoch, list(checkpoint.state.get("history", []))
            if "scaler" in checkpoint.state:
                self.scaler.load_state_dict(checkpoint.state["scaler"])
        self.tasks, self.normalization = self._tasks()
        self._trainable = self._trainable_names()
        self.net = ddp.wrap(self.model, ctx, find_unused=self._multi_head)

    @property
    def _amp(self) -> bool:
        return self.config.run.amp and self.ctx.device.type == "cuda"

    @property
    def _multi_head(self) -> bool:
        return self.config.network.family == "multi_lesion"

    def _trainable_names(self) -> frozenset[str]:
        return frozenset(k for k, p in self.model.named_parameters() if p.requires_grad)

    def _tasks(self) -> tuple[list[Task], Normalization]:
        cfg, sch = self.config, self.config.schedule
        augmentation = make_augmentation(cfg.augmentation)
        heads: list[str | None] = list(cfg.network.heads) if self._multi_head else [None]
        train, val, normalization = build_cases(cfg, head=None)
        if cfg.data.spacing_zyx_mm is None:  # the median grid build_cases chose: the model's input spacing
            z, y, x = train[0].spacing_zyx
            cfg.data = replace(cfg.data, spacing_zyx_mm=(float(z), float(y), float(x)))
        tasks = []
        for head in heads:
            if head in (None, TARGET_HEAD):
                train_h, val_h = train, val
            elif cfg.data.source == "dataset":
                continue  # source heads have no data in a dataset run: kept as they are, not trained
            else:
                train_h, val_h, _ = build_cases(cfg, head=head, normalization=normalization)
            sampler = PatchSampler(train_h, sch.patch_zyx, sch.batch_size, sch.foreground_fraction, augmentation,
                                   cfg.run.seed, self.ctx.rank, self.ctx.world)
            tasks.append(Task(head, sampler, val_h))
        return tasks, normalization

    def head_schedule(self, epoch: int) -> list[int]:
        """Which task each iteration trains (the same on every rank)."""
        n, iterations = len(self.tasks), self.config.schedule.iterations_per_epoch
        if n == 1:
            return [0] * iterations
        names = [t.head for t in self.tasks]
        if self.config.strategy.name == "continual" and TARGET_HEAD in names:
            rng = np.random.default_rng([self.config.run.seed, epoch, 7])
            target = names.index(TARGET_HEAD)
            sources = [i for i in range(n) if i != target]
            return [int(rng.choice(sources)) if rng.random() < self.config.strategy.rehearsal_fraction else target
                    for _ in range(iterations)]
        return [i % n for i in range(iterations)]

    # --- one epoch -----------------------------------------------------------------------------
    def _forward_loss(self, x: torch.Tensor, y: torch.Tensor, head: str | None) -> torch.Tensor:
        kwargs = {} if head is None else {"head": head}
        with torch.autocast(self.ctx.device.type, enabled=self._amp):
            outputs = self.net(x, **kwargs)
        return self.loss(outputs, y)

    def _step(self, x: torch.Tensor, y: torch.Tensor, head: str | None) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._forward_loss(x, y, head)
        self.scaler.scale(loss).backward()
        if self.config.optimiser.grad_clip:
            self.scaler.unscale_(self.optimizer)
            params = [p for p in self.model.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.config.optimiser.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def train_epoch(self, epoch: int) -> float:
        self.strategy.on_epoch_start(self.model, epoch)
        if self.ctx.distributed and self._trainable_names() != self._trainable:
            self._trainable = self._trainable_names()
            self.net = ddp.wrap(self.model, self.ctx, find_unused=self._multi_head)  # DDP syncs only what trains
        seed_everything(self.config.run.seed, epoch, self.ctx.rank)
        self.epoch_lr = [float(g["lr"]) for g in self.optimizer.param_groups]
        schedule = self.head_schedule(epoch)
        batches = {i: task.sampler.batches(epoch, schedule.count(i)) for i, task in enumerate(self.tasks)}
        self.net.train()
        losses = []
        for index in schedule:
            image, target = next(batches[index])
            x = torch.from_numpy(image).to(self.ctx.device)
            y = torch.from_numpy(target).to(self.ctx.device)
            losses.append(self._step(x, y, self.tasks[index].head))
        self.scheduler.step()
        return ddp.mean_across(float(np.mean(losses)), self.ctx)

    def validate(self) -> dict[str, float | None]:
        """Mean Dice over foreground classes of each head's validation cases (argmax)."""
        from covseg.training.metrics import overlap_scores
        from covseg.training.predictor import predict_array

        scores: dict[str, float | None] = {}
        pad = self.normalization.value_of(AIR_HU)
        for task in self.tasks:
            dice = []
            for case in task.validation:
                probabilities = predict_array(self.model, case.image, self.config, device=str(self.ctx.device),
                                              head=task.head, pad_value=pad)
                labels = probabilities.argmax(axis=0)
                for k in range(1, probabilities.shape[0]):
                    value = overlap_scores(labels == k, case.target == k)["dsc"]
                    if value is not None:
                        dice.append(value)
            scores[task.head or "default"] = float(np.mean(dice)) if dice else None
        return scores

    def save(self, epoch: int, best: bool) -> None:
        extra = {"history": self.history, "normalization": self.normalization.to_json(),
                 "trainable": self.prepared.trainable, "frozen": self.prepared.frozen,
                 "load_report": None if self.prepared.report is None else vars(self.prepared.report)}
        if self._amp:
            extra["scaler"] = self.scaler.state_dict()
        save_checkpoint(self.last, model=self.model, config=self.config, epoch=epoch, optimizer=self.optimizer,
                        scheduler=self.scheduler, extra=extra)
        if best:
            save_checkpoint(self.last.with_name("best"), model=self.model, config=self.config, epoch=epoch,
                            extra=extra)


def _record(session: Session, epoch: int, loss: float, seconds: float, scores: dict[str, float | None]
            ) -> dict[str, Any]:
    values = [v for v in scores.values() if v is not None]
    return {"epoch": epoch + 1, "loss": loss, "val_dice": float(np.mean(values)) if values else None,
            "val_dice_by_head": scores, "lr": session.epoch_lr,
            "seconds": seconds, "trainable": sum(p.numel() for p in session.model.parameters() if p.requires_grad)}


def _write_log(out_dir: Path, history: list[dict[str, Any]]) -> None:
    """log.jsonl always holds exactly the recorded epochs (rewritten, so a resume leaves no duplicates)."""
    path = out_dir / "log.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
    tmp.replace(path)


def fit(config: Config, *, out_dir: str | Path, resume: bool = True, progress: Progress | None = None) -> FitResult:
    """Train as `config` says into `out_dir` (checkpoints/, log.jsonl, config.json); with
    resume, continue from `out_dir/checkpoints/last` when it exists. `progress` receives each
    epoch's record (rank 0 only)."""
    config.validate()
    out_dir = Path(out_dir)
    ctx = ddp.init_from_env(config.run.device)
    with _runtime(config, ctx):
        return _fit(config, out_dir, ctx, resume, progress)


def _fit(config: Config, out_dir: Path, ctx: ddp.DistContext, resume: bool, progress: Progress | None) -> FitResult:
    if ctx.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    ddp.barrier(ctx)
    session = Session(config, out_dir, resume, ctx)
    if ctx.main:
        (out_dir / "config.json").write_text(session.config.to_json() + "\n")
    best = max([h["val_dice"] for h in session.history if h.get("val_dice") is not None], default=-1.0)
    for epoch in range(session.start_epoch, session.config.schedule.epochs):
        start = time.perf_counter()
        loss = session.train_epoch(epoch)
        seconds = time.perf_counter() - start
        validate = (epoch + 1) % session.config.schedule.validate_every == 0 or epoch + 1 == config.schedule.epochs
        scores = session.validate() if validate else {}
        record = _record(session, epoch, loss, seconds, scores)
        session.history.append(record)
        improved = record["val_dice"] is not None and record["val_dice"] > best
        best = max(best, record["val_dice"] or -1.0)
        if ctx.main:
            session.save(epoch + 1, improved)
            _write_log(out_dir, session.history)
            if progress is not None:
                progress(record)
        ddp.barrier(ctx)
    return FitResult(out_dir, session.last, session.config, session.model, session.normalization, session.history,
                     session.prepared.trainable, session.prepared.frozen, str(ctx.device))
