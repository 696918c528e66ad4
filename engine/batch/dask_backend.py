"""Run study jobs on Dask distributed: a scheduler address, or a LocalCluster on this machine.

Why Dask rather than Ray (both allowed by the design): Dask distributed is pure Python, already a
dependency of the `batch` extra, and speaks the concurrent.futures idiom the local backend uses
(`client.map` + `as_completed`), so the same `run_study` runs unchanged. Its deployment packages
start the same cluster on SLURM/PBS (dask-jobqueue) or Kubernetes (dask-kubernetes). Ray would add
a C++ runtime and object store that a one-task-per-study workload does not need.

Every worker must see the inputs and the batch folder at the same paths (a shared file system):
the records are written by the workers, exactly as in the local backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from covseg.errors import RuntimeUnavailableError


def _distributed() -> Any:
    try:
        return importlib.import_module("distributed")
    except ImportError as error:
        raise RuntimeUnavailableError("dask distributed is not installed; install the batch extra: "
                                      "pip install 'covseg[batch]'") from error


def _client(scheduler: str | None, workers: int, processes: bool) -> tuple[Any, Any]:
    distributed = _distributed()
    if scheduler:
        try:
            return distributed.Client(scheduler, timeout="20s"), None
        except OSError as error:
            raise RuntimeUnavailableError(f"cannot reach the Dask scheduler at {scheduler} ({error})") from error
    # One study per worker at a time (threads_per_worker=1); the study itself uses its thread share.
    cluster = distributed.LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=processes,
                                       dashboard_address=None)
    return distributed.Client(cluster), cluster


def run_dask(jobs: Sequence[Any], run: Callable[[Any], Any], on_outcome: Callable[[Any], None], *,
             scheduler: str | None, workers: int, processes: bool = True) -> None:
    """Submit `run(job)` for every job to Dask and report outcomes as they complete."""
    if not jobs:
        return
    distributed = _distributed()
    client, cluster = _client(scheduler, workers, processes)
    try:
        keys = [f"covseg-study-{job.study.key}" for job in jobs]
        futures = client.map(run, list(jobs), key=keys, pure=False, retries=0)
        by_key = dict(zip(keys, jobs, strict=True))
        for future in distributed.as_completed(futures):
            try:
                outcome = future.result()
            except Exception as error:  # KilledWorker, lost worker: the study is recorded as failed
                from covseg.engine.batch.local_backend import _lost

                outcome = _lost(by_key[future.key], error)
            on_outcome(outcome)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
