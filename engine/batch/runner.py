"""The batch loop: discover, plan (resume), run the per-study task on a backend, rebuild the tables.

The per-study task is injectable: any picklable callable with the signature of `covseg.api.infer`
(`task(path, out_dir, *, series_uid, overwrite, threads, **options) -> report dict`) that writes
out_dir atomically. `run_study` wraps it with the record protocol of `records`, and is what every
backend (in-process, process pool, Dask) executes, so they cannot disagree on what "done" means.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covseg.engine.batch import records
from covseg.engine.batch.atomic import write_json_atomic
from covseg.engine.batch.discover import Study, discover
from covseg.engine.batch.keys import shard_of
from covseg.engine.batch.outputs import write_outputs
from covseg.engine.batch.summary import UNFINISHED, Row, study_row
from covseg.errors import CovsegError, InputError, OutputError

Task = Callable[..., dict[str, Any]]
REBUILD_EVERY_S = 300.0  # long runs refresh summary.csv this often, so it shows progress


@dataclass(frozen=True)
class BatchOptions:
    out: Path
    workers: int = 1
    threads_per_worker: int | None = None
    resume: bool = False
    overwrite: bool = False
    shard: tuple[int, int] | None = None
    backend: str = "local"  # local | dask
    scheduler: str | None = None
    dask_processes: bool = True  # False: Dask workers as threads of this process (tests)
    task: Task | str | None = None  # None: covseg.api.infer; "module:function" is imported
    infer_options: dict[str, Any] = field(default_factory=dict)
    plot: bool = True

    @property
    def tables(self) -> Path:
        """Where the tables go: DIR, or DIR/shard-K-of-N for a shard, so that the shards of a job array
        can share one DIR (their study folders never overlap) without overwriting each other's tables."""
        if self.shard is None:
            return self.out
        return self.out / f"shard-{self.shard[0]}-of-{self.shard[1]}"


@dataclass(frozen=True)
class StudyJob:
    study: Study
    folder: str
    task: Task
    options: dict[str, Any]
    threads: int | None  # None: the task's default (all cores of the machine it runs on)
    input_fp: str
    settings_fp: str
    reuse_models: bool = False  # the task is covseg.api.infer: hand it this worker's cached predictors


@dataclass(frozen=True)
class Outcome:
    key: str
    status: str  # ok | failed
    error: str | None
    seconds: float


@dataclass(frozen=True)
class Progress:
    total: int  # studies to compute in this run
    done: int
    ok: int
    failed: int
    reused: int  # finished earlier, skipped by --resume
    last: Outcome | None


@dataclass
class BatchResult:
    out: Path
    rows: list[Row]
    computed: int
    reused: int
    threads_per_worker: int | None
    notes: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for row in self.rows if row.get("status") == status)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, CovsegError):
        return text
    return f"unexpected {type(error).__name__}: {text}"


def run_study(job: StudyJob) -> Outcome:
    """Run one study under the record protocol; failures become failed.json, never exceptions."""
    folder = Path(job.folder)
    (folder / records.DONE).unlink(missing_ok=True)  # no stale record may vouch for new outputs
    start = time.perf_counter()
    try:
        extra = {}
        if job.reuse_models:
            from covseg.engine.batch.sessions import predictors_for

            extra["predictors"] = predictors_for(job.options, job.threads)
        job.task(job.study.path, str(folder), series_uid=job.study.series_uid, overwrite=True,
                 threads=job.threads, **job.options, **extra)
        seconds = time.perf_counter() - start
        (folder / records.FAILED).unlink(missing_ok=True)
        records.write_done(folder, job.study, job.input_fp, job.settings_fp, seconds)
    except Exception as error:  # the batch goes on; the error is recorded with the study
        seconds = time.perf_counter() - start
        message = _one_line(error)
        records.write_failed(folder, job.study, message, seconds)
        return Outcome(job.study.key, "failed", message, seconds)
    return Outcome(job.study.key, "ok", None, seconds)


def resolve_task(task: Task | str | None) -> Task:
    if task is None:
        from covseg.api import infer

        return infer
    if isinstance(task, str):
        module, _, name = task.partition(":")
        try:
            found: Task = getattr(importlib.import_module(module), name)
            return found
        except (ImportError, AttributeError) as error:
            raise CovsegError(f"--task {task!r} cannot be imported ({error})") from error
    return task


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_for(workers: int, requested: int | None, notes: list[str]) -> int:
    """Threads per worker such that workers x threads <= cores (at least 1)."""
    cores = available_cores()
    fair = max(1, cores // max(1, workers))
    if requested is None:
        return fair
    if requested * workers > cores and requested > fair:
        notes.append(f"--threads-per-worker {requested} x {workers} workers exceeds {cores} cores; using {fair}")
        return fair
    return max(1, requested)


def _refuse_existing(folder: Path, studies: list[Study]) -> None:
    found = [s.key for s in studies if (folder / s.key / records.DONE).exists()
             or (folder / s.key / records.FAILED).exists()]
    if found:
        raise OutputError(f"{folder.parent} already holds results for {len(found)} of these studies "
                          f"(e.g. {found[0]}); use --resume to continue or --overwrite to recompute")


def plan(studies: list[Study], options: BatchOptions, task: Task, threads: int | None,
         settings: dict[str, Any]) -> tuple[list[StudyJob], int]:
    """Jobs for the studies to compute, and how many finished ones resume skips."""
    folder = options.out / "studies"
    if not (options.resume or options.overwrite):
        _refuse_existing(folder, studies)
    settings_fp = records.canonical_hash(settings)
    reuse = options.task is None
    jobs, reused = [], 0
    for study in studies:
        if study.skip_reason:
            continue
        input_fp = records.input_fingerprint(study)
        target = folder / study.key
        if options.resume and records.is_complete(target, input_fp, settings_fp):
            reused += 1
            continue
        jobs.append(StudyJob(study, str(target), task, dict(options.infer_options), threads, input_fp, settings_fp,
                             reuse))
    return jobs, reused


def _execute(jobs: list[StudyJob], options: BatchOptions, threads: int | None,
             on_outcome: Callable[[Outcome], None]) -> None:
    if options.backend == "dask":
        from covseg.engine.batch.dask_backend import run_dask

        run_dask(jobs, run_study, on_outcome, scheduler=options.scheduler, workers=options.workers,
                 processes=options.dask_processes)
    elif options.backend == "local":
        from covseg.engine.batch.local_backend import run_local

        run_local(jobs, run_study, on_outcome, workers=options.workers, threads=threads or 1)


def select(studies: Iterable[Study], shard: tuple[int, int] | None) -> list[Study]:
    if shard is None:
        return list(studies)
    index, count = shard
    return [s for s in studies if shard_of(s.key, count) == index]


def rebuild(studies: list[Study], options: BatchOptions, *, plot: bool, final: bool = True) -> list[Row]:
    """Rows from the records on disk, written as summary.csv/.parquet, longitudinal.csv and the plot.

    final=False (the periodic refresh of a running batch) leaves out studies without a record yet,
    rather than calling them unfinished while they may be running.
    """
    folder = options.out / "studies"
    keep = bool(options.infer_options.get("keep_identifiers"))
    anonymize = bool(options.infer_options.get("anonymize"))
    rows = [study_row(s, folder / s.key, keep_identifiers=keep, anonymize=anonymize) for s in studies]
    if not final:
        rows = [row for row in rows if row.get("error") != UNFINISHED]
    write_outputs(rows, options.tables, plot=plot, withhold=anonymize)
    return rows


def run_batch(inputs: list[str], options: BatchOptions,
              progress: Callable[[Progress], None] | None = None) -> BatchResult:
    """Run every study of the inputs (this shard) and rebuild the batch tables; see the package docs."""
    out = options.out
    if options.backend not in ("local", "dask"):
        raise UsageError(f"--backend {options.backend!r} is not one of: local, dask")
    found = discover(inputs, exclude=out)
    if not found:
        raise InputError(f"no study found in {', '.join(map(str, inputs))} (DICOM series, NIfTI, NRRD, MHA, zip)")
    studies = select(found, options.shard)
    notes: list[str] = []
    threads: int | None = threads_for(options.workers, options.threads_per_worker, notes)
    if options.backend == "dask" and options.scheduler:
        # Remote workers: this machine's core count says nothing about theirs. Start them with one
        # thread per study slot (dask worker --nthreads 1) and let each study use its machine's cores.
        threads = options.threads_per_worker
    settings = records.settings_fingerprint(options.infer_options)
    jobs, reused = plan(studies, options, resolve_task(options.task), threads, settings)
    (out / "studies").mkdir(parents=True, exist_ok=True)  # infer writes beside its folder: the parent must exist
    options.tables.mkdir(parents=True, exist_ok=True)
    write_json_atomic(options.tables / "batch.json", {"schema": "covseg.batch/1", "shard": options.shard,
                                           "studies": len(studies), "backend": options.backend,
                                           "settings": settings})
    state = {"done": 0, "ok": 0, "failed": 0, "rebuilt": time.monotonic()}

    def on_outcome(outcome: Outcome) -> None:
        state["done"] += 1
        state[outcome.status] += 1
        if progress is not None:
            progress(Progress(len(jobs), int(state["done"]), int(state["ok"]), int(state["failed"]), reused, outcome))
        if time.monotonic() - state["rebuilt"] > REBUILD_EVERY_S:
            rebuild(studies, options, plot=False, final=False)
            state["rebuilt"] = time.monotonic()

    if progress is not None:
        progress(Progress(len(jobs), 0, 0, 0, reused, None))
    try:
        _execute(jobs, options, threads, on_outcome)
    finally:  # also on Ctrl-C: the table shows everything finished so far
        rows = rebuild(studies, options, plot=options.plot)
    return BatchResult(options.tables, rows, len(jobs), reused, threads, notes)


class UsageError(CovsegError):
    """A malformed option value (exit code 2, like any usage error)."""

    exit_code = 2
    kind = "usage"
