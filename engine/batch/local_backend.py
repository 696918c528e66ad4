"""Run study jobs on this machine: in-process for one worker, else a spawn process pool.

Spawn, not fork: a forked child would inherit ONNX Runtime thread pools and locks of the parent
in whatever state they were, which deadlocks; spawned workers start clean. Each worker limits
the BLAS/OpenMP thread pools to its share of the cores before anything heavy is imported.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def limit_threads(threads: int) -> None:
    """Worker initializer: cap the native thread pools at this worker's share of the cores."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)


def _lost(job: Any, error: BaseException) -> Any:
    """A study whose worker died (killed, out of memory, crashed in native code): record it as failed."""
    from covseg.engine.batch import records
    from covseg.engine.batch.runner import Outcome

    message = f"worker process died while running this study ({type(error).__name__}); rerun with --resume"
    records.write_failed(Path(job.folder), job.study, message, 0.0)
    return Outcome(job.study.key, "failed", message, 0.0)


def _pool(workers: int, threads: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=limit_threads, initargs=(threads,))


def _drain(queue: list[Any], run: Callable[[Any], Any], on_outcome: Callable[[Any], None], workers: int,
           threads: int) -> list[Any]:
    """Run queued jobs with at most `workers` in flight; when a worker dies, return the jobs in flight
    (the suspects) and leave the never-submitted ones in `queue`. Empty list: all done."""
    pool = _pool(workers, threads)
    flight: dict[Future[Any], Any] = {}
    try:
        while queue or flight:
            while queue and len(flight) < workers:
                job = queue.pop(0)
                flight[pool.submit(run, job)] = job
            done, _ = wait(flight, return_when=FIRST_COMPLETED)
            broken = False
            for future in done:
                job = flight.pop(future)
                try:
                    on_outcome(future.result())
                except BrokenProcessPool:
                    flight[future] = job
                    broken = True
            if broken:
                suspects = []
                for future, job in flight.items():  # finished before the break: keep their results
                    if future.done() and future.exception() is None:
                        on_outcome(future.result())
                    else:
                        suspects.append(job)
                return suspects
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return []


def run_local(jobs: Sequence[Any], run: Callable[[Any], Any], on_outcome: Callable[[Any], None], *,
              workers: int, threads: int) -> None:
    """Run `run(job)` for every job; `on_outcome` sees each result as it finishes.

    A worker that dies takes down the whole pool (concurrent.futures' BrokenProcessPool). The jobs that
    were in flight are then retried one by one in a pool of their own: one that kills its worker even
    alone is recorded as failed; the others, and every job not yet started, run normally.
    """
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            on_outcome(run(job))
        return
    queue = list(jobs)
    while queue:
        for suspect in _drain(queue, run, on_outcome, min(workers, len(queue)), threads):
            if _drain([suspect], run, on_outcome, 1, threads):
                on_outcome(_lost(suspect, BrokenProcessPool("the worker process died")))
