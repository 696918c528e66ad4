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


def _refuse_overwrite(out: Path, resume: bool) -> None:
    from covseg.errors import OutputError

    if not resume and (out / "checkpoints" / "last").exists():
        raise OutputError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")


def _run(cfg: Any, out: Path, resume: bool) -> None:
    from covseg.training.loop import fit

    _refuse_overwrite(out, resume)
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


def finetune(
    source: Annotated[str, typer.Option("--from", help="A shipped model's name (lung, infection), a model "
                                                      "package folder, or a training checkpoint folder.")],
    data: Annotated[Path, typer.Option("--data", help="Dataset folder (read by covseg.training.datasets).")],
    strategy: Annotated[str, typer.Option("--strategy", help="Transfer strategy, e.g. hybrid, body_finetune.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints/, evaluation/, package/.")],
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Override schedule.epochs.")] = None,
    classes: Annotated[str, typer.Option("--classes", help="Target classes, comma separated.")] =
        "background,infection",
    cutoff: Annotated[int | None, typer.Option("--cutoff", help="Levels kept (truncated, transfusion).")] = None,
    validation_cases: Annotated[int | None, typer.Option(
        "--validation-cases", min=0, help="Cases held out for validation and the evaluation report "
                                          "(default: the source's setting).")] = None,
    export: Annotated[bool, typer.Option("--export/--no-export", help="Export OUT/package after training.")] = True,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoints/last.")] = False,
) -> None:
    """Fine-tune a shipped model or checkpoint on a site dataset; evaluate it on the held-out cases and
    export it as a model package."""
    from covseg.training.finetune import evaluate_held_out, export_finetuned, finetune_config, resolve_source
    from covseg.training.loop import fit

    names = tuple(n.strip() for n in classes.split(",") if n.strip())
    _refuse_overwrite(out, resume)
    origin = resolve_source(source, out)
    cfg = finetune_config(origin, data, strategy, names, cutoff=cutoff, epochs=epochs,
                          validation_cases=validation_cases)
    result = fit(cfg, out_dir=out, resume=resume, progress=_printer())
    typer.echo(f"trained {result.epochs} epochs from {origin.described} ({strategy}; {result.trainable} "
               f"trainable, {result.frozen} frozen parameters); checkpoint {result.checkpoint}")
    report = evaluate_held_out(result, out / "evaluation")
    typer.echo(f"evaluation on the held-out cases: {report}" if report else
               "no held-out case (--validation-cases 0): no evaluation report")
    if export:
        typer.echo(f"model package: {export_finetuned(result.checkpoint, out / 'package', origin)}")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("finetune")(finetune)
