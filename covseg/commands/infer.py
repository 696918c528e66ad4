"""`covseg infer`: one study to labels, DICOM SEG, report.json and preview.png (atomically).

Progress goes to stderr as a rich bar on a terminal, or to stdout as JSON lines with `--progress json`
(one object a line, flushed: {"stage", "fraction", "overall"}; the last is {"stage": "done", ...,
"report": path}), which the 3D Slicer module reads. Errors are one line on stderr (covseg.cli.run).
Imports only typer and the standard library at module level: the engine loads inside the command.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

ORDER = 10
PROGRESS_MODES = ("bar", "json", "none")
DEVICES = ("auto", "cpu", "cuda", "tensorrt")
FORMATS = ("nifti", "nrrd")
SEG_TYPES = ("binary", "labelmap")


def _json_lines() -> tuple[Callable[[str, float], None], Callable[[str], None]]:
    from covseg.engine.progress import OverallProgress

    tracker = OverallProgress()

    def emit(record: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()

    def update(stage: str, fraction: float) -> None:
        overall = tracker.update(stage, fraction)
        emit({"stage": stage, "fraction": round(fraction, 4), "overall": round(overall, 4)})

    def done(report: str) -> None:
        tracker.update("done", 1.0)
        emit({"stage": "done", "fraction": 1.0, "overall": 1.0, "report": report})

    return update, done


@contextmanager
def _bar() -> Iterator[Callable[[str, float], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from covseg.engine.progress import OverallProgress

    tracker = OverallProgress()
    with Progress(TextColumn("{task.description:<12}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("start", total=1.0)

        def update(stage: str, fraction: float) -> None:
            bar.update(task, completed=tracker.update(stage, fraction), description=stage)

        yield update


def _summary(report: dict[str, Any], out: Path) -> str:
    """A few plain lines for the terminal: lung volumes, infection burden, where the outputs are."""
    def ml(value: Any) -> str:
        return "n/a" if value is None else f"{value:.1f} mL"

    structures, infection = report["structures"], report["infection"]
    percent = infection.get("percent_of_lungs")
    lines = [f"left lung {ml(structures['lung_left']['volume_ml'])}, right lung "
             f"{ml(structures['lung_right']['volume_ml'])}, liver {ml(structures['liver']['volume_ml'])}",
             f"infection {ml(infection['volume_ml'])}" + ("" if percent is None else f" ({percent:.1f}% of lungs)")
             + (f", {infection['lesion_count']} lesions" if infection.get("lesion_count") is not None else ""),
             f"outputs in {out}"]
    return "\n".join(lines)


def _choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}", param_hint=option)
    return value


def checked_infection_threshold(value: float | None) -> float | None:
    """--infection-threshold as given, or a usage error (exit 2) outside (0, 1); infer and batch."""
    from covseg.engine.decision import check_threshold

    if value is not None:
        try:
            check_threshold(value)
        except ValueError:
            raise typer.BadParameter(f"{value} is not strictly between 0 and 1",
                                     param_hint="--infection-threshold") from None
    return value


def infer(
    path: Annotated[Path, typer.Argument(help="DICOM folder, file or zip, or a NIfTI/NRRD/MHA file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (must not exist unless --overwrite).")],
    models: Annotated[str | None, typer.Option("--models", help="Shipped models by name or task, "
                                               "comma-separated (default: lung,infection,liver).")] = None,
    model: Annotated[list[Path] | None, typer.Option("--model", help="A model package folder (repeatable).")] = None,
    series_uid: Annotated[str | None, typer.Option("--series-uid", help="Which series of a multi-series "
                                                   "folder.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or tensorrt.")] = "auto",
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads (default: physical cores).")] = None,
    overlap: Annotated[float, typer.Option(min=0.0, max=0.95, help="Sliding-window overlap.")] = 0.5,
    tta: Annotated[bool, typer.Option("--tta", help="Mirroring test-time augmentation (8x slower).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Read inputs that fail checks (non-CT, ...).")] = False,
    anonymize: Annotated[bool, typer.Option("--anonymize", help="Strip patient identifiers from every "
                                            "output.")] = False,
    keep_identifiers: Annotated[bool, typer.Option("--keep-identifiers", help="Put the PatientID in the "
                                                   "report instead of a pseudonym.")] = False,
    label_format: Annotated[str, typer.Option("--format", help="Label map format: nifti or nrrd.")] = "nifti",
    consolidation_threshold: Annotated[float, typer.Option(
        "--consolidation-threshold", help="HU at and above which infection is consolidation.")] = -300.0,
    min_lesion_ml: Annotated[float, typer.Option("--min-lesion-ml", min=0.0, help="Smallest infection "
                                                 "component counted as a lesion (26-connected).")] = 0.1,
    infection_threshold: Annotated[float | None, typer.Option(
        "--infection-threshold", help="Infection probability above which a voxel is infection (0-1, exclusive; "
        "default: the model's validated operating point). Lower finds more, higher calls less.")] = None,
    seg_type: Annotated[str, typer.Option("--seg-type", help="DICOM SEG type: binary (widest support) or "
                                          "labelmap (smaller).")] = "binary",
    max_memory: Annotated[float | None, typer.Option("--max-memory", min=1, help="Refuse runs estimated above "
                                                     "this many MB.")] = None,
    progress: Annotated[str | None, typer.Option(help="bar, json or none (default: bar on a terminal).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary.")] = False,
) -> None:
    """Segment lungs, COVID-19 infection (ground glass, consolidation) and liver, and quantify the burden."""
    from contextlib import nullcontext

    from covseg.engine.pipeline import infer as run_infer

    _choice(device, DEVICES, "--device")
    _choice(label_format, FORMATS, "--format")
    _choice(seg_type, SEG_TYPES, "--seg-type")
    checked_infection_threshold(infection_threshold)
    mode = _choice(progress, PROGRESS_MODES, "--progress") if progress else ("bar" if sys.stderr.isatty() else "none")
    if quiet and mode == "bar":
        mode = "none"
    done: Callable[[str], None] | None = None
    context: Any = nullcontext(None)
    if mode == "json":
        callback, done = _json_lines()
        context = nullcontext(callback)
    elif mode == "bar":
        context = _bar()
    with context as callback:
        report = run_infer(path, out, models=models, model_paths=tuple(model or ()), series_uid=series_uid,
                           force=force, device=device, threads=threads, overlap=overlap, tta=tta,
                           overwrite=overwrite, anonymize=anonymize, keep_identifiers=keep_identifiers,
                           label_format=label_format, max_memory_mb=max_memory, progress=callback,
                           consolidation_threshold_hu=consolidation_threshold, min_lesion_ml=min_lesion_ml,
                           seg_type=seg_type.upper(), infection_threshold=infection_threshold)
    report_path = str(Path(out).absolute() / "report.json")
    if done is not None:
        done(report_path)
    elif not quiet:
        typer.echo(_summary(report, Path(out)))


def register(app: typer.Typer) -> None:
    app.command("infer")(infer)
