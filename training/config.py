"""One typed, validated configuration tree for training (DESIGN.md section 5).

The tree is plain dataclasses so it can be saved as JSON beside every checkpoint and rebuilt
exactly (the ONNX exporter rebuilds networks from it). Files may be JSON or TOML (tomllib);
unknown keys are refused with their dotted path so that a typo never silently falls back to a
default. Defaults follow paper 000 and nnU-Net: Dice + cross-entropy with deep-supervision
weights halving per level (normalised to sum 1), SGD with Nesterov momentum 0.99, lr 0.01,
poly decay (1 - epoch/max)^0.9, weight decay 3e-5.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from covseg.errors import InputError

NETWORK_FAMILIES = ("unet", "multi_lesion", "hybrid")


@dataclass
class DataConfig:
    """Where the cases come from and the grid/intensities they are brought to."""

    source: str = "phantom"  # phantom | spheres | dataset
    path: str | None = None  # dataset folder (source = dataset), read by covseg.training.datasets
    splits: str | None = None  # split file (covseg.training.splits); trains on fold `fold`'s train ids
    fold: int | None = None
    cases: int = 4  # synthetic cases to generate (phantom / spheres)
    validation_cases: int = 1
    shape_zyx: tuple[int, int, int] = (48, 48, 48)  # synthetic case shape
    seed: int = 0
    spacing_zyx_mm: tuple[float, float, float] | None = None  # target spacing; None keeps the input grid
    phantom_spacing_zyx_mm: tuple[float, float, float] = (6.0, 6.0, 6.0)  # grid synthetic cases are made on
    lesions: tuple[str, ...] = ("covid",)  # phantom lesion kinds of the target task
    normalization: str = "ct_clip_zscore"  # ct_clip_zscore | percentile_zscore | window
    clip_hu: tuple[float, float] = (-1024.0, 600.0)
    classes: tuple[str, ...] = ("background", "infection")  # label names or groups (see data.CLASS_GROUPS)
    source_datasets: tuple[str, ...] = ()  # multi-lesion pre-training: one head per name


@dataclass
class NetworkConfig:
    """The network family and its shape; `build_network` reads only this."""

    family: str = "unet"  # unet | multi_lesion | hybrid
    in_channels: int = 1
    out_channels: int = 2
    features: tuple[int, ...] = (32, 64, 128, 256, 320)
    strides: tuple[int, ...] = (1, 2, 2, 2, 2)  # per level; level 0 keeps full resolution
    kernel_size: int = 3
    convs_per_level: int = 2
    deep_supervision: int = 2  # extra low-resolution outputs in training mode (0 = off)
    heads: tuple[str, ...] = ()  # multi_lesion: one decoder per source dataset name
    default_head: str | None = None
    fusion_reduction: int = 16  # hybrid: reduction ratio r of Selective Fusion (paper 000)
    fusion_min_channels: int = 8  # hybrid: floor of C/r
    truncate_at: int | None = None  # keep encoder levels < truncate_at (seed 003)
    truncate_convs: int | None = None  # fine cutoff: convolutions kept in the last kept level
    decoder_width: float = 1.0  # decoder widths = encoder widths x this (0.5: TransFusion-style slim decoder)

    @property
    def levels(self) -> int:
        return len(self.features) if self.truncate_at is None else self.truncate_at

    @property
    def decoder_features(self) -> tuple[int, ...]:
        """Decoder width per kept level; the deepest is the bottleneck, an encoder level, so it keeps its width."""
        kept = self.features[:self.levels]
        return (*(max(1, round(f * self.decoder_width)) for f in kept[:-1]), kept[-1])


@dataclass
class StrategyConfig:
    """How the network is built from an optional pre-trained checkpoint (see strategies.py)."""

    name: str = "scratch"
    pretrained: str | None = None  # checkpoint folder
    source_head: str | None = None  # which multi-lesion decoder is the body (default: the first)
    keep_source_heads: bool = False  # continual: keep source decoders and rehearse source data
    rehearsal_fraction: float = 0.25
    cutoff: int | None = None  # truncated / transfusion: level cutoff k
    cutoff_convs: int | None = None  # truncated: fine cutoff (convolutions in level k-1)
    lwft_every_epochs: int = 1  # lwft: unfreeze one more unit every n epochs
    lwft_start_units: int = 1
    lwft_lower_lr_factor: float = 0.1  # lwft: lr of units below the top one
    pretrained_lr_factor: float = 1.0  # lr multiplier of loaded (pre-trained) trainable parameters


@dataclass
class OptimiserConfig:
    name: str = "sgd"  # sgd | adam
    lr: float = 0.01
    momentum: float = 0.99
    nesterov: bool = True
    weight_decay: float = 3e-5
    grad_clip: float | None = 12.0


@dataclass
class ScheduleConfig:
    epochs: int = 10
    iterations_per_epoch: int = 10
    batch_size: int = 2
    patch_zyx: tuple[int, int, int] = (32, 32, 32)
    foreground_fraction: float = 1.0 / 3.0  # nnU-Net: a third of the patches centred on foreground
    poly_exponent: float = 0.9
    loss: str = "dice_ce"  # dice_ce | ce
    validate_every: int = 1


@dataclass
class AugmentationConfig:
    enabled: bool = True
    flip_prob: float = 0.5
    # Array axes (z, y, x) that may be mirrored. Mirroring x swaps the patient's left and right, so
    # models of lateral anatomy (left/right lung, liver) must not flip x: their recipes set [] or [0].
    flip_axes: tuple[int, ...] = (0, 1, 2)
    rotate_prob: float = 0.2
    rotate_range_rad: float = 0.52
    scale_prob: float = 0.2
    scale_range: float = 0.15
    elastic_prob: float = 0.0
    noise_prob: float = 0.15
    noise_std: float = 0.1
    gamma_prob: float = 0.15
    gamma_range: tuple[float, float] = (0.7, 1.5)
    contrast_prob: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    # Reconstruction-kernel variety: in-plane Gaussian blur (a softer kernel) and unsharp masking (a sharper
    # one), sigmas in voxels of the training grid. Off by default, so earlier recipes train as they did.
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    sharpen_prob: float = 0.0
    sharpen_alpha: tuple[float, float] = (0.5, 2.0)


@dataclass
class EvaluationConfig:
    overlap: float = 0.5
    nsd_tolerance_mm: float = 3.0
    classes: tuple[str, ...] = ()  # classes to score; empty = all foreground classes


@dataclass
class RunConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # on CUDA only
    deterministic: bool = False
    num_threads: int | None = None
    name: str = "run"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    optimiser: OptimiserConfig = field(default_factory=OptimiserConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def validate(self) -> Config:
        validate(self)
        return self


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Turn a JSON/TOML value into the annotated type (tuples from lists, nested dataclasses)."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise InputError(f"configuration {where}: expected a table, got {value!r}")
        return _from_dict(hint, value, where)  # type: ignore[arg-type]
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(value, options[0], where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise InputError(f"configuration {where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if item is None and len(args) != len(value):
            raise InputError(f"configuration {where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, item or args[i], f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and not isinstance(value, hint):
        raise InputError(f"configuration {where}: expected {hint.__name__}, got {value!r}")
    if hint is int and isinstance(value, bool):
        raise InputError(f"configuration {where}: expected int, got {value!r}")
    return value


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"configuration {where or 'root'}: unknown key(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a Config from a plain dict (missing keys take their defaults)."""
    return validate(_from_dict(Config, data, ""))


def load_config(path: str | Path) -> Config:
    """Read a JSON or TOML configuration file (by suffix) and validate it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise InputError(f"cannot read configuration {path}: {error.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"configuration {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {error}") from None
    try:
        return config_from_dict(data)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None


def save_config(config: Config, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(config.to_json() + "\n")
    return path


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(f"configuration {message}")


def validate(config: Config) -> Config:
    """Check cross-field rules; each failure names the key and the value at fault."""
    from covseg.training.strategies import STRATEGIES

    net, sch, st = config.network, config.schedule, config.strategy
    _check(net.family in NETWORK_FAMILIES, f"network.family={net.family!r}: choose one of {NETWORK_FAMILIES}")
    _check(len(net.features) == len(net.strides) and len(net.features) >= 2,
           f"network.features/strides: need equal lengths >= 2, got {net.features} and {net.strides}")
    _check(net.strides[0] == 1, f"network.strides[0]={net.strides[0]}: level 0 keeps full resolution (1)")
    _check(net.out_channels >= 2, f"network.out_channels={net.out_channels}: need >= 2 (background + one)")
    _check(net.convs_per_level >= 1, f"network.convs_per_level={net.convs_per_level}: need >= 1")
    _check(0 <= net.deep_supervision < net.levels - 1 or net.deep_supervision == 0,
           f"network.deep_supervision={net.deep_supervision}: need < levels - 1 = {net.levels - 1}")
    if net.truncate_at is not None:
        _check(2 <= net.truncate_at <= len(net.features),
               f"network.truncate_at={net.truncate_at}: need 2..{len(net.features)}")
    _check(0.0 < net.decoder_width <= 1.0, f"network.decoder_width={net.decoder_width}: need 0 < width <= 1")
    if net.truncate_convs is not None:
        _check(1 <= net.truncate_convs <= net.convs_per_level,
               f"network.truncate_convs={net.truncate_convs}: need 1..{net.convs_per_level}")
    if net.family == "multi_lesion":
        _check(len(net.heads) >= 1 and len(set(net.heads)) == len(net.heads),
               f"network.heads={net.heads}: multi_lesion needs one or more distinct names")
        _check(net.default_head is None or net.default_head in net.heads,
               f"network.default_head={net.default_head!r}: not one of {net.heads}")
    _check(st.name in STRATEGIES, f"strategy.name={st.name!r}: choose one of {', '.join(sorted(STRATEGIES))}")
    _check(len(config.data.classes) == net.out_channels,
           f"data.classes has {len(config.data.classes)} names but network.out_channels={net.out_channels}")
    _check(sch.epochs >= 1 and sch.iterations_per_epoch >= 1 and sch.batch_size >= 1,
           f"schedule: epochs/iterations_per_epoch/batch_size must be >= 1, got "
           f"{sch.epochs}/{sch.iterations_per_epoch}/{sch.batch_size}")
    _check(0.0 <= sch.foreground_fraction <= 1.0, f"schedule.foreground_fraction={sch.foreground_fraction}")
    _check(sch.loss in ("dice_ce", "ce"), f"schedule.loss={sch.loss!r}: choose dice_ce or ce")
    _check(config.optimiser.name in ("sgd", "adam"), f"optimiser.name={config.optimiser.name!r}")
    _check(config.data.source in ("phantom", "spheres", "dataset"), f"data.source={config.data.source!r}")
    _check(config.data.normalization in ("ct_clip_zscore", "percentile_zscore", "window"),
           f"data.normalization={config.data.normalization!r}")
    _check(config.run.device in ("auto", "cpu", "cuda"), f"run.device={config.run.device!r}")
    _check(all(axis in (0, 1, 2) for axis in config.augmentation.flip_axes),
           f"augmentation.flip_axes={config.augmentation.flip_axes}: array axes 0 (z), 1 (y), 2 (x)")
    return config
