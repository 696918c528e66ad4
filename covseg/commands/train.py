"""`covseg train` (a configuration or recipe) and `covseg finetune` (a strategy on a dataset).

torch and MONAI are imported inside the commands only: `covseg --help` and inference-only
installs never need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

ORDER = 60


def _recipes_dir() -> Path:
    import covseg.training

    return Path(covseg.training.__file__).parent / "recipes"


def _load(config: Path | None, recipe: str | None) -> Any:
    from covseg.errors import InputError
    from covseg.training.config import load_config

    if (config is None) == (recipe is None):
        raise InputError("give exactly one of --config FILE or --recipe NAME")
    if recipe is not None:
        path = _recipes_dir() / f"{recipe}.toml"
        if not path.is_file():
            known = sorted(p.stem for p in _recipes_dir().glob("*.toml"))
            raise InputError(f"unknown recipe {recipe!r}; known: {', '.join(known)}")
        return load_config(path)
    assert config is not None
    return load_config(config)


def _printer() -> Any:
    from rich.console import Console

    console = Console(stderr=True)

    def show(record: dict[str, Any]) -> None:
        dice = "-" if record.get("val_dice") is None else f"{record['val_dice']:.4f}"
        console.print(f"epoch {record['epoch']}: loss {record['loss']:.4f}, val Dice {dice}, "
                      f"{record['seconds']:.1f} s, lr {record['lr'][0]:.2e}", highlight=False)

    return show


def _run(cfg: Any, out: Path, resume: bool) -> None:
    from covseg.errors import OutputError
    from covseg.training.loop import fit

    if not resume and (out / "checkpoints" / "last").exists():
        raise OutputError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    result = fit(cfg, out_dir=out, resume=resume, progress=_printer())
    typer.echo(f"trained {result.epochs} epochs ({result.config.strategy.name}; {result.trainable} trainable, "
               f"{result.frozen} frozen parameters); checkpoint {result.checkpoint}")


def train(
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints/, log.jsonl, config.json.")],
    config: Annotated[Path | None, typer.Option("--config", help="Configuration file (JSON or TOML).")] = None,
    recipe: Annotated[str | None, typer.Option("--recipe", help="A named recipe (covseg/training/recipes).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoints/last.")] = False,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Override schedule.epochs.")] = None,
) -> None:
    """Train a network as a configuration or recipe says (CPU or CUDA; torchrun for DDP)."""
    cfg = _load(config, recipe)
    if epochs is not None:
        cfg.schedule.epochs = epochs
    _run(cfg.validate(), out, resume)


def _source_config(source: Path) -> Any:
    from covseg.training.checkpoint import load_checkpoint

    folder = source / "checkpoint" if (source / "model.json").is_file() else source
    if (source / "model.json").is_file() and not (folder / "model.safetensors").is_file():
        from covseg.errors import InputError

        raise InputError(f"model package {source} carries no training checkpoint (checkpoint/); ONNX weights "
                         "cannot be fine-tuned: pass the checkpoint folder it was exported from")
    return load_checkpoint(folder).config, folder


def finetune(
    source: Annotated[Path, typer.Option("--from", help="Pre-trained checkpoint folder (or a model package "
                                                       "that carries one in checkpoint/).")],
    data: Annotated[Path, typer.Option("--data", help="Dataset folder (read by covseg.training.datasets).")],
    strategy: Annotated[str, typer.Option("--strategy", help="Transfer strategy, e.g. hybrid, body_finetune.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder.")],
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Override schedule.epochs.")] = None,
    classes: Annotated[str, typer.Option("--classes", help="Target classes, comma separated.")] =
        "background,infection",
    cutoff: Annotated[int | None, typer.Option("--cutoff", help="Levels kept (truncated, transfusion).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoints/last.")] = False,
) -> None:
    """Transfer a pre-trained network to a dataset with one of the strategies."""
    from dataclasses import replace

    from covseg.training.config import StrategyConfig

    base, folder = _source_config(source)
    names = tuple(n.strip() for n in classes.split(",") if n.strip())
    cfg = replace(base, strategy=StrategyConfig(name=strategy, pretrained=str(folder), cutoff=cutoff))
    cfg.data = replace(cfg.data, source="dataset", path=str(data), classes=names, splits=None, fold=None)
    cfg.network = replace(cfg.network, family="unet", heads=(), default_head=None, out_channels=len(names),
                          truncate_at=None, truncate_convs=None)
    if epochs is not None:
        cfg.schedule.epochs = epochs
    _run(cfg.validate(), out, resume)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("finetune")(finetune)
