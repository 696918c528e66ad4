"""Run study jobs on this machine: in-process for one worker, else a spawn process pool.

Spawn, not fork: a forked child would inherit ONNX Runtime thread pools and locks of the parent
in whatever state they were, which deadlocks; spawned workers start clean. Each worker limits
the BLAS/OpenMP thread pools to its share of the cores before anything heavy is imported.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
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


def run_local(jobs: Sequence[Any], run: Callable[[Any], Any], on_outcome: Callable[[Any], None], *,
              workers: int, threads: int) -> None:
    """Run `run(job)` for every job; `on_outcome` sees each result as it finishes."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            on_outcome(run(job))
        return
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                               initializer=limit_threads, initargs=(threads,))
    try:
        futures: dict[Future[Any], Any] = {pool.submit(run, job): job for job in jobs}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except BrokenProcessPool as error:
                outcome = _lost(futures[future], error)
            on_outcome(outcome)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
