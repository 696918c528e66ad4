"""`covseg evaluate` (label maps against ground truth), `covseg experiment` (strategies x pre-trained
models x folds, paper 000's tables) and `covseg analyze` (SVCCA/PWCCA layer similarity and feature
reuse of two checkpoints)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ORDER = 50


def _require(path: Path | None) -> None:
    """Missing inputs are input errors (exit 3) naming the path."""
    from covseg.errors import InputError

    if path is not None and not path.exists():
        raise InputError(f"{path}: no such file or folder")


def experiment(
    config: Annotated[Path, typer.Argument(help="Experiment file (TOML or JSON): data, folds, strategies, "
                                                "pretrained checkpoints and the base training configuration.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder; rerun with the same folder to resume.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the tables written.")] = False,
) -> None:
    """Train and evaluate every (strategy, pre-trained model, fold); write Tables 1-3 of paper 000.

    Finished runs (runs/<strategy>__<model>__fold<k>/result.json) are skipped on a rerun; an
    unfinished one resumes from its last checkpoint.
    """
    from covseg.training.experiment import run_experiment

    _require(config)

    def say(message: str) -> None:
        if not quiet:
            typer.echo(message)

    rows = run_experiment(config, out, progress=say)
    typer.echo(f"{len(rows)} case rows; tables in {out}: table1.md, table2.md, table3.md, summary.md")


def analyze(
    checkpoint_a: Annotated[Path, typer.Argument(help="Checkpoint A: the pre-trained network (reference).")],
    checkpoint_b: Annotated[Path, typer.Argument(help="Checkpoint B: the network fine-tuned from A.")],
    data: Annotated[Path, typer.Option("--data", help="Dataset folder or one study whose patches feed both networks.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for similarity.csv and similarity.md.")],
    random_init: Annotated[Path | None, typer.Option(
        "--random-init", help="Random initialisation of a scratch run (with --scratch: feature reuse).")] = None,
    scratch: Annotated[Path | None, typer.Option(
        "--scratch", help="The scratch run's trained checkpoint.")] = None,
    method: Annotated[str, typer.Option("--method", help="pwcca (seed 001) or svcca (seed 003).")] = "pwcca",
    patches: Annotated[int, typer.Option("--patches", min=1, help="Input patches (training patch size).")] = 8,
    samples: Annotated[int, typer.Option("--samples", min=10, help="Voxel positions sampled per layer.")] = 4096,
    seed: Annotated[int, typer.Option("--seed", help="Seed of patch and sample positions.")] = 0,
) -> None:
    """Per-layer SVCCA/PWCCA similarity of two checkpoints, and feature reuse against a scratch run."""
    from covseg.errors import InputError
    from covseg.training.evaluation import format_value
    from covseg.training.representation import METHODS
    from covseg.training.representation import analyze as run_analysis

    for path in (checkpoint_a, checkpoint_b, data, random_init, scratch):
        _require(path)
    if method not in METHODS:
        raise InputError(f"--method {method!r}: choose one of {', '.join(sorted(METHODS))}")
    if (random_init is None) != (scratch is None):
        raise InputError("--random-init and --scratch go together (both or neither)")
    rows = run_analysis(checkpoint_a, checkpoint_b, data, out, random_init=random_init, scratch=scratch,
                        patches=patches, max_samples=samples, seed=seed, method=method)
    for row in rows:
        typer.echo(f"{row['layer']}: {method} {format_value(row[f'{method}_pretrained_vs_finetuned'])}"
                   f", feature reuse {format_value(row['feature_reuse'])}")
    typer.echo(f"tables in {out}: similarity.csv, similarity.md")


def evaluate(
    predictions: Annotated[Path, typer.Argument(help="Folder of predicted label maps (NIfTI, NRRD, MHA).")],
    truth: Annotated[Path, typer.Argument(help="Folder of ground-truth label maps with the same file names.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for cases.csv/.md and summary.csv/.md.")],
    structure: Annotated[list[str] | None, typer.Option(
        "--structure", help="NAME=LABEL[,LABEL...] (covseg label names or values); repeat for more. "
        "Default: every covseg label and the infection and lungs groups present in the data.")] = None,
    nsd_tolerance: Annotated[float, typer.Option("--nsd-tolerance", min=0.0, help="NSD tolerance in mm.")] = 3.0,
) -> None:
    """Score predicted label maps against ground truth: DSC, NSD, HD95, ASSD, sensitivity, F1, accuracy."""
    from covseg.training.evaluation import evaluate_folder, mean_std

    for path in (predictions, truth):
        _require(path)
    tables = evaluate_folder(predictions, truth, labels=_structures(structure), nsd_tolerance_mm=nsd_tolerance,
                             out_dir=out)
    for row in tables.summary:
        typer.echo(f"{row['structure']}: DSC {mean_std(row, 'dsc')}, NSD {mean_std(row, 'nsd')}, "
                   f"HD95 {mean_std(row, 'hd95_mm', 1)} mm ({row['cases']} cases)")
    typer.echo(f"tables in {out}: cases.csv, cases.md, summary.csv, summary.md")


def _structures(options: list[str] | None) -> dict[str, tuple[int, ...]] | None:
    from covseg.errors import InputError
    from covseg.labels import label_value

    if not options:
        return None
    structures: dict[str, tuple[int, ...]] = {}
    for option in options:
        name, _, values = option.partition("=")
        try:
            structures[name.strip()] = tuple(int(v) if v.strip().isdigit() else label_value(v.strip())
                                             for v in values.split(",") if v.strip())
        except KeyError as error:
            raise InputError(f"--structure {option!r}: {error.args[0]}") from None
        if not name.strip() or not structures[name.strip()]:
            raise InputError(f"--structure {option!r}: expected NAME=LABEL[,LABEL...]")
    return structures


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("experiment")(experiment)
    app.command("analyze")(analyze)
