"""`covseg batch` (many studies, resumable, sharded, local or Dask) and `covseg batch-merge`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

ORDER = 20


def _split(values: list[str] | None) -> list[str] | None:
    names = [n.strip() for v in values or [] for n in v.split(",") if n.strip()]
    return names or None


def _plain_progress(console: Any) -> tuple[Any, Any]:
    """One line per finished study with counts and ETA, for logs (job arrays, CI) where bars do not render."""
    import contextlib
    import time

    start = time.monotonic()

    def update(event: Any) -> None:
        if event.last is None:
            console.print(f"covseg batch: {event.total} studies to compute, {event.reused} already done")
            return
        elapsed = time.monotonic() - start
        eta = int(elapsed / event.done * (event.total - event.done))
        error = f": {event.last.error}" if event.last.error else ""
        console.print(f"[{event.done}/{event.total}] {event.last.key} {event.last.status} "
                      f"{event.last.seconds:.1f} s{error} ({event.ok} ok, {event.failed} failed, "
                      f"ETA {eta // 3600}:{eta % 3600 // 60:02d}:{eta % 60:02d})", markup=False, highlight=False,
                      soft_wrap=True)

    return contextlib.nullcontext(), update


def _progress_callback(console: Any) -> tuple[Any, Any]:
    if not console.is_terminal:
        return _plain_progress(console)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)
    state: dict[str, Any] = {}

    def update(event: Any) -> None:
        text = f"studies: {event.ok} ok, {event.failed} failed" + (f", {event.reused} reused" if event.reused else "")
        if "task" not in state:
            state["task"] = bar.add_task(text, total=event.total)
        bar.update(state["task"], completed=event.done, description=text)

    return bar, update


def batch(
    inputs: Annotated[list[str], typer.Argument(help="Folders (searched recursively; each DICOM series and each "
                                                "NIfTI/NRRD/MHA file is a study), CSV lists (column path, "
                                                "optional patient_id, study_date) or glob patterns.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Batch folder (studies/<key>/, summary.csv, ...).")],
    workers: Annotated[int, typer.Option(min=1, help="Studies run in parallel (processes).")] = 1,
    threads_per_worker: Annotated[int | None, typer.Option(min=1, help="Threads per worker; default and cap: "
                                                           "cores / workers.")] = None,
    resume: Annotated[bool, typer.Option(help="Skip studies whose completion record and outputs are "
                                         "intact; recompute the rest.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Recompute every study even if finished.")] = False,
    shard: Annotated[str | None, typer.Option(help="Run only shard K of N (K/N, 1-based), by key hash.")] = None,
    backend: Annotated[str, typer.Option(help="local (process pool) or dask.")] = "local",
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address; default: a LocalCluster.")] = None,
    models: Annotated[list[str] | None, typer.Option("--models", help="Registry model names (repeat or "
                                                     "comma-separate).")] = None,
    model: Annotated[list[Path] | None, typer.Option("--model", help="Model package folder (repeatable).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or tensorrt.")] = "auto",
    overlap: Annotated[float, typer.Option(min=0.0, max=0.95, help="Sliding-window overlap.")] = 0.5,
    tta: Annotated[bool, typer.Option(help="Mirroring test-time augmentation.")] = False,
    infection_threshold: Annotated[float | None, typer.Option(
        help="Infection probability above which a voxel is infection (0-1, exclusive; default: the "
        "model's validated operating point).")] = None,
    anonymize: Annotated[bool, typer.Option(help="Strip patient identifiers from every output.")] = False,
    keep_identifiers: Annotated[bool, typer.Option(help="Keep patient ids in the tables (default: "
                                                   "pseudonyms).")] = False,
    label_format: Annotated[str, typer.Option(help="nifti or nrrd.")] = "nifti",
    max_memory_mb: Annotated[int | None, typer.Option(help="Memory guard per study.")] = None,
    task: Annotated[str | None, typer.Option(hidden=True, help="module:function replacing covseg.api.infer.")] = None,
) -> None:
    """Segment and quantify many studies; resumable (--resume), shardable (--shard K/N), local or Dask."""
    from rich.console import Console

    from covseg.commands.infer import checked_infection_threshold
    from covseg.engine.batch import BatchOptions, parse_shard, run_batch
    from covseg.errors import BatchIncompleteError

    checked_infection_threshold(infection_threshold)
    options = BatchOptions(
        out=out, workers=workers, threads_per_worker=threads_per_worker, resume=resume, overwrite=overwrite,
        shard=parse_shard(shard) if shard else None, backend=backend, scheduler=scheduler, task=task,
        infer_options={"models": _split(models), "model_paths": tuple(str(p) for p in model or ()),
                       "device": device, "overlap": overlap, "tta": tta, "anonymize": anonymize,
                       "keep_identifiers": keep_identifiers, "label_format": label_format,
                       "max_memory_mb": max_memory_mb,
                       # only when set: batches started before this option keep their fingerprint
                       **({"infection_threshold": infection_threshold} if infection_threshold is not None else {})})
    console = Console(stderr=True)
    bar, update = _progress_callback(console)
    with bar:
        result = run_batch(inputs, options, progress=update)
    for note in result.notes:
        console.print(f"note: {note}")
    ok, failed, skipped = result.count("ok"), result.count("failed"), result.count("skipped")
    typer.echo(f"{len(result.rows)} studies: {ok} ok, {failed} failed, {skipped} skipped "
               f"({result.computed} computed, {result.reused} reused) -> {result.out / 'summary.csv'}")
    if failed:
        raise BatchIncompleteError(f"{failed} of {len(result.rows)} studies failed; "
                                   f"errors in {result.out / 'summary.csv'}")


def batch_merge(
    folders: Annotated[list[Path], typer.Argument(help="Batch folders of shards (their shard-K-of-N tables are "
                                                  "found inside), or summary.csv files.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the merged tables and plot.")],
) -> None:
    """Merge the summary tables of shards (--shard K/N runs) into one batch table."""
    from covseg.engine.batch import merge_batches

    rows = merge_batches(folders, out)
    typer.echo(f"merged {len(folders)} tables: {len(rows)} studies -> {out / 'summary.csv'}")


def register(app: typer.Typer) -> None:
    app.command("batch")(batch)
    app.command("batch-merge")(batch_merge)
