"""Transfer-learning strategies: objects chosen by name that say how a network is built from an
optional pre-trained checkpoint (DESIGN.md section 5).

Each strategy adapts the network configuration (e.g. hybrid encoder, truncation), loads the
pre-trained parts with every key and shape checked (checkpoint.load_matching names each
mismatch), freezes what it freezes, and returns parameter groups with learning rates. `prepare`
runs all of that and reports trainable and frozen parameter counts. On resume, `restore` rebuilds
the already-adapted network and freezes it without reading the pre-trained weights again.

Continual learning vs body fine-tuning (paper 000 sections 3.3 and 3.4.1 leave the line loose).
Our reading:
- `continual`: the pre-trained network *continues* training on the new task with the same
  schedule (lr 0.01, poly). Everything is loaded, output heads included, so the source
  network's label space must match (a mismatch is an error that points to body_finetune).
  With `keep_source_heads`, the network becomes a multi-lesion network holding the source
  decoders plus a new target decoder (initialised from the source body decoder), and the loop
  rehearses source data in `rehearsal_fraction` of the iterations, so forgetting on the source
  tasks can be measured on the kept heads.
- `body_finetune`: encoder and decoder body are loaded, the output heads are new (random),
  and everything is trained: a fresh task that starts from the source body.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from torch import nn

from covseg.errors import InputError
from covseg.training.checkpoint import LoadReport, WeightMismatchError, load_matching
from covseg.training.config import Config, NetworkConfig
from covseg.training.networks import build_network, count_parameters

State = dict[str, Any]  # a state dict: name -> tensor
Source = tuple[Config, State]  # a pre-trained network's configuration and weights
TARGET_HEAD = "target"


@dataclass
class Prepared:
    model: nn.Module
    network: NetworkConfig  # the configuration the model was built from (saved with checkpoints)
    param_groups: list[dict[str, Any]]
    trainable: int
    frozen: int
    report: LoadReport | None = None
    notes: list[str] = field(default_factory=list)


def source_encoder_prefix(source: Config) -> str:
    return "dedicated." if source.network.family == "hybrid" else "encoder."


def source_decoder_prefix(source: Config, head: str | None) -> str:
    net = source.network
    if net.family != "multi_lesion":
        return "decoder."
    name = head or net.default_head or net.heads[0]
    if name not in net.heads:
        raise InputError(f"strategy.source_head={name!r}: the pre-trained network has heads {net.heads}")
    return f"decoders.{name}."


def _freeze(modules: Iterable[nn.Module]) -> None:
    for module in modules:
        module.requires_grad_(False)


class Strategy:
    """Base behaviour: scratch training, everything trainable, no checkpoint."""

    name: ClassVar[str] = "scratch"
    needs_pretrained: ClassVar[bool] = False

    def __init__(self, config: Config) -> None:
        self.config = config
        self.settings = config.strategy

    # --- steps a subclass overrides ---------------------------------------------------------
    def adapt_network(self, source: Source | None) -> NetworkConfig:
        """The target network configuration (source architecture where weights are reused)."""
        net = self.config.network
        if source is None:
            return net
        src = source[0].network
        return replace(net, in_channels=src.in_channels, features=src.features, strides=src.strides,
                       kernel_size=src.kernel_size, convs_per_level=src.convs_per_level,
                       truncate_at=None, truncate_convs=None, family="unet", heads=(), default_head=None)

    def load(self, model: nn.Module, source: Source) -> LoadReport | None:
        return None

    def freeze(self, model: nn.Module, epoch: int = 0) -> None:
        """Set requires_grad for the given epoch (static strategies ignore the epoch)."""

    def loaded_prefixes(self) -> tuple[str, ...]:
        """Model key prefixes that hold pre-trained values (for their lr factor)."""
        return ()

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        lr = self.config.optimiser.lr
        loaded: list[nn.Parameter] = []
        new: list[nn.Parameter] = []
        for key, param in model.named_parameters():
            if param.requires_grad:
                (loaded if key.startswith(self.loaded_prefixes()) else new).append(param)
        groups = [{"name": "new", "params": new, "lr": lr}]
        if loaded:
            groups.append({"name": "pretrained", "params": loaded, "lr": lr * self.settings.pretrained_lr_factor})
        return [g for g in groups if g["params"]]

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Called by the loop before each epoch (layer-wise fine-tuning changes what trains)."""

    # --- orchestration ----------------------------------------------------------------------
    def prepare(self, source: Source | None = None) -> Prepared:
        if self.needs_pretrained and source is None:
            raise InputError(f"strategy {self.name!r} needs a pre-trained checkpoint (strategy.pretrained)")
        network = self.adapt_network(source)
        model = build_network(network)
        report = self.load(model, source) if source is not None else None
        return self._finish(model, network, report)

    def restore(self, network: NetworkConfig) -> Prepared:
        """Rebuild the adapted network for resuming (weights come from the checkpoint)."""
        return self._finish(build_network(network), network, None)

    def _finish(self, model: nn.Module, network: NetworkConfig, report: LoadReport | None) -> Prepared:
        self.freeze(model, epoch=0)
        groups = self.param_groups(model)
        trainable, frozen = count_parameters(model)
        return Prepared(model, network, groups, trainable, frozen, report)


class Scratch(Strategy):
    name = "scratch"


class BodyFinetune(Strategy):
    name = "body_finetune"
    needs_pretrained = True

    def load(self, model: nn.Module, source: Source) -> LoadReport:
        src = source[0]
        return load_matching(model, source[1], [
            ("encoder.", source_encoder_prefix(src)),
            ("decoder.stages.", source_decoder_prefix(src, self.settings.source_head) + "stages."),
        ], allow_unused=True, what=str(self.settings.pretrained or "pre-trained weights"))

    def loaded_prefixes(self) -> tuple[str, ...]:
        return ("encoder.", "decoder.stages.")


class Continual(Strategy):
    name = "continual"
    needs_pretrained = True

    def adapt_network(self, source: Source | None) -> NetworkConfig:
        net = super().adapt_network(source)
        if source is None or not self.settings.keep_source_heads:
            return net
        src = source[0].network
        heads = src.heads if src.family == "multi_lesion" else ("source",)
        return replace(net, family="multi_lesion", heads=(*heads, TARGET_HEAD), default_head=TARGET_HEAD)

    def load(self, model: nn.Module, source: Source) -> LoadReport:
        src, what = source[0], str(self.settings.pretrained or "pre-trained weights")
        body = source_decoder_prefix(src, self.settings.source_head)
        if not self.settings.keep_source_heads:
            try:
                return load_matching(model, source[1], [("encoder.", source_encoder_prefix(src)),
                                                        ("decoder.", body)], what=what)
            except WeightMismatchError as error:
                raise WeightMismatchError(f"{error} (continual keeps the output heads, so the label spaces must "
                                          "match; use body_finetune for new classes)") from None
        names = src.network.heads if src.network.family == "multi_lesion" else ("source",)
        mapping = [("encoder.", source_encoder_prefix(src))]
        mapping += [(f"decoders.{n}.", source_decoder_prefix(src, n) if n != "source" else "decoder.") for n in names]
        report = load_matching(model, source[1], mapping, what=what)
        target = load_matching(model, source[1], [(f"decoders.{TARGET_HEAD}.", body)],
                               optional=(f"decoders.{TARGET_HEAD}.heads.",), allow_unused=True, what=what)
        report.loaded += target.loaded
        report.skipped += target.skipped
        return report

    def loaded_prefixes(self) -> tuple[str, ...]:
        return ("encoder.", "decoder.", "decoders.")


class LesionRepresentations(Strategy):
    """Paper 000 3.4.2: the pre-trained encoder is loaded and frozen; the decoder is trained."""

    name = "lesion_representations"
    needs_pretrained = True

    def load(self, model: nn.Module, source: Source) -> LoadReport:
        return load_matching(model, source[1], [("encoder.", source_encoder_prefix(source[0]))], allow_unused=True,
                             what=str(self.settings.pretrained or "pre-trained weights"))

    def freeze(self, model: nn.Module, epoch: int = 0) -> None:
        _freeze([model.get_submodule("encoder")])


class FrozenRandomEncoder(Strategy):
    """Seed 001: the encoder stays at its random initialisation; only the decoder trains."""

    name = "frozen_random_encoder"

    def freeze(self, model: nn.Module, epoch: int = 0) -> None:
        _freeze([model.get_submodule("encoder")])


class Hybrid(Strategy):
    """Paper 000 3.5: adapted encoder = pre-trained encoder, frozen; dedicated encoder random and
    trained; Selective Fusion units and the decoder random and trained."""

    name = "hybrid"
    needs_pretrained = True

    def adapt_network(self, source: Source | None) -> NetworkConfig:
        return replace(super().adapt_network(source), family="hybrid")

    def load(self, model: nn.Module, source: Source) -> LoadReport:
        return load_matching(model, source[1], [("adapted.", source_encoder_prefix(source[0]))], allow_unused=True,
                             what=str(self.settings.pretrained or "pre-trained weights"))

    def freeze(self, model: nn.Module, epoch: int = 0) -> None:
        _freeze([model.get_submodule("adapted")])


def _cutoff(settings: Any, levels: int, name: str) -> int:
    k = settings.cutoff
    if k is None or not 2 <= k <= levels:
        raise InputError(f"strategy {name!r} needs strategy.cutoff in 2..{levels} (levels kept), got {k}")
    return int(k)


def _encoder_levels(source: Source, k: int) -> list[tuple[str, str]]:
    prefix = source_encoder_prefix(source[0])
    return [(f"encoder.levels.{i}.", f"{prefix}levels.{i}.") for i in range(k)]


class Truncated(Strategy):
    """Seed 003 TruncatedTL: keep the pre-trained encoder levels below the cutoff k (optionally
    only `cutoff_convs` convolutions of level k-1), drop the deeper ones, shorten the decoder to
    match (random, trained); everything trains. `search_cutoff` is the coarse-then-fine search."""

    name = "truncated"
    needs_pretrained = True

    def adapt_network(self, source: Source | None) -> NetworkConfig:
        net = super().adapt_network(source)
        k = _cutoff(self.settings, len(net.features), self.name)
        return replace(net, truncate_at=k, truncate_convs=self.settings.cutoff_convs,
                       deep_supervision=min(net.deep_supervision, k - 2))

    def load(self, model: nn.Module, source: Source) -> LoadReport:
        k = _cutoff(self.settings, len(source[0].network.features), self.name)
        report = load_matching(model, source[1], _encoder_levels(source, k), allow_unused=True,
                               what=str(self.settings.pretrained or "pre-trained weights"))
        dropped = [f"{source_encoder_prefix(source[0])}levels.{i}." for i in range(k, len(source[0].network.features))]
        report.unused += sorted(key for key in source[1] if key.startswith(tuple(dropped)))
        return report

    def loaded_prefixes(self) -> tuple[str, ...]:
        return ("encoder.",)


class TransFusion(Strategy):
    """Seed 003's TransFusion baseline (Raghu et al. 2019): below the cutoff k the pre-trained
    layers are reused and fine-tuned; from level k up the network is slimmed (channels halved)
    and trained from scratch. Forward order puts the whole decoder after the encoder, so the
    decoder is re-initialised too; its stages at levels >= k are the halved ones."""

    name = "transfusion"
    needs_pretrained = True

    def adapt_network(self, source: Source | None) -> NetworkConfig:
        net = super().adapt_network(source)
        k = _cutoff(self.settings, len(net.features), self.name)
        return replace(net, features=tuple(f if i < k else max(1, f // 2) for i, f in enumerate(net.features)))

    def load(self, model: nn.Module, source: Source) -> LoadReport:
        k = _cutoff(self.settings, len(source[0].network.features), self.name)
        return load_matching(model, source[1], _encoder_levels(source, k), allow_unused=True,
                             what=str(self.settings.pretrained or "pre-trained weights"))

    def loaded_prefixes(self) -> tuple[str, ...]:
        k = self.settings.cutoff or 0
        return tuple(f"encoder.levels.{i}." for i in range(k))


def layer_units(model: nn.Module) -> list[str]:
    """U-Net units in forward order (input to output): encoder levels, decoder stages, heads."""
    levels = len(list(model.get_submodule("encoder.levels").children()))
    stages = len(list(model.get_submodule("decoder.stages").children()))
    units = [f"encoder.levels.{i}." for i in range(levels)]
    units += [f"decoder.stages.{i}." for i in range(stages)]
    return [*units, "decoder.heads."]


class LayerwiseFinetune(Strategy):
    """Seed 003's LWFT baseline (Tajbakhsh et al. 2016): start from the pre-trained network,
    fine-tune only the top units (nearest the output) and unfreeze one more unit every
    `lwft_every_epochs` epochs, walking back through the decoder and then the encoder from deep
    to shallow. The top unit (output heads) trains at lr, the others at lr * lwft_lower_lr_factor.
    Output heads are loaded when their shapes fit (same label space) and re-initialised otherwise."""

    name = "lwft"
    needs_pretrained = True

    def load(self, model: nn.Module, source: Source) -> LoadReport:
        src = source[0]
        return load_matching(model, source[1], [
            ("encoder.", source_encoder_prefix(src)),
            ("decoder.", source_decoder_prefix(src, self.settings.source_head)),
        ], optional=("decoder.heads.",), allow_unused=True, what=str(self.settings.pretrained or "pre-trained weights"))

    def trainable_units(self, model: nn.Module, epoch: int) -> list[str]:
        units = layer_units(model)
        count = self.settings.lwft_start_units + epoch // max(1, self.settings.lwft_every_epochs)
        return units[max(0, len(units) - count):]

    def freeze(self, model: nn.Module, epoch: int = 0) -> None:
        trainable = tuple(self.trainable_units(model, epoch))
        for key, param in model.named_parameters():
            param.requires_grad_(key.startswith(trainable))

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        self.freeze(model, epoch)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Every parameter is in a group from the start (frozen ones get no gradient, so the
        optimiser skips them) so that unfreezing needs no new optimiser."""
        lr = self.config.optimiser.lr
        top = [p for k, p in model.named_parameters() if k.startswith("decoder.heads.")]
        lower = [p for k, p in model.named_parameters() if not k.startswith("decoder.heads.")]
        return [{"name": "top", "params": top, "lr": lr},
                {"name": "lower", "params": lower, "lr": lr * self.settings.lwft_lower_lr_factor}]


STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (
    Scratch, Continual, BodyFinetune, LesionRepresentations, Hybrid, FrozenRandomEncoder, Truncated,
    LayerwiseFinetune, TransFusion)}


def get_strategy(config: Config) -> Strategy:
    try:
        return STRATEGIES[config.strategy.name](config)
    except KeyError:
        raise InputError(f"unknown strategy {config.strategy.name!r}; choose one of "
                         f"{', '.join(sorted(STRATEGIES))}") from None


def search_cutoff(evaluate: Callable[[int, int | None], float], levels: int, convs_per_level: int,
                  *, minimum: int = 2) -> tuple[tuple[int, int | None], list[tuple[int, int | None, float]]]:
    """Seed 003's hierarchical cutoff search: coarse over level (block) boundaries, then fine over
    the convolutions next to the best boundary. `evaluate(k, convs)` trains/validates one cutoff
    (k = levels kept, convs = convolutions kept in level k-1, None = all) and returns a score
    (higher is better). Returns the best cutoff and every (k, convs, score) tried."""
    history: list[tuple[int, int | None, float]] = []
    for k in range(minimum, levels + 1):
        history.append((k, None, evaluate(k, None)))
    best_k = max(history, key=lambda h: h[2])[0]
    neighbours: Sequence[tuple[int, int]] = [(best_k, c) for c in range(1, convs_per_level)]
    if best_k < levels:
        neighbours = [*neighbours, *[(best_k + 1, c) for c in range(1, convs_per_level)]]
    for k, convs in neighbours:
        history.append((k, convs, evaluate(k, convs)))
    best = max(history, key=lambda h: (h[2], -h[0], -(h[1] or math.inf)))
    return (best[0], best[1]), history


def fit_cutoff_evaluator(config: Config, out_dir: Any) -> Callable[[int, int | None], float]:
    """`evaluate` for search_cutoff: fine-tune the truncated network at (k, convs) with the loop
    into out_dir/cutoff-<k>-<convs> and score it by its best validation Dice."""
    from pathlib import Path

    from covseg.training.loop import fit

    def evaluate(k: int, convs: int | None) -> float:
        settings = replace(config.strategy, name="truncated", cutoff=k, cutoff_convs=convs)
        result = fit(replace(config, strategy=settings), out_dir=Path(out_dir) / f"cutoff-{k}-{convs or 'all'}")
        return result.best_dice if result.best_dice is not None else 0.0

    return evaluate
