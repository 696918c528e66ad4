"""covseg batch: many studies through the per-study `covseg.api.infer`, resumable and sharded.

Layout of a batch folder (DIR):

    DIR/studies/<key>/          what `covseg infer` writes for one study (atomic), plus
        done.json               the completion record: input, model and settings fingerprints
        failed.json             or the one-line error of the last failed attempt
    DIR/summary.csv             a row per study, rebuilt from the records (+ summary.parquet)
    DIR/longitudinal.csv        per-patient follow-up deltas
    DIR/summary.png             burden distribution and per-patient trajectories
    DIR/batch.json              the run's settings (models resolved to their sha256)

With --shard K/N the four tables and batch.json go to DIR/shard-K-of-N/ instead (shards may share
DIR); `covseg batch-merge` unions them.

The per-study task is injectable (any picklable callable with `covseg.api.infer`'s signature), so
the same loop runs in-process, in a process pool, or on Dask distributed.
"""

from __future__ import annotations

from covseg.engine.batch.discover import Study, discover
from covseg.engine.batch.keys import parse_shard, shard_of, study_key
from covseg.engine.batch.runner import BatchOptions, BatchResult, run_batch
from covseg.engine.batch.summary import merge_batches

__all__ = [
    "BatchOptions",
    "BatchResult",
    "Study",
    "discover",
    "merge_batches",
    "parse_shard",
    "run_batch",
    "shard_of",
    "study_key",
]
