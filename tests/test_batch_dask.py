"""The Dask backend runs the same per-study task and gives the same table as the local loop."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_batch_support import calls_per_key, fake_env, make_studies

from covseg.engine.batch import BatchOptions, run_batch

pytest.importorskip("distributed")
TASK = "test_batch_support:fake_task"


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in fake_env(tmp_path / "calls").items():
        monkeypatch.setenv(name, value)
    make_studies(tmp_path / "in", 6, broken=(4,))
    run_batch([str(tmp_path / "in")], BatchOptions(out=tmp_path / "local", task=TASK, plot=False))
    dask = run_batch([str(tmp_path / "in")], BatchOptions(out=tmp_path / "dask", task=TASK, backend="dask",
                                                          workers=2, dask_processes=False, plot=False))
    assert (dask.count("ok"), dask.count("failed")) == (5, 1)
    assert (tmp_path / "dask" / "summary.csv").read_text() == (tmp_path / "local" / "summary.csv").read_text()
    assert set(calls_per_key(tmp_path / "calls").values()) == {2}
    resumed = run_batch([str(tmp_path / "in")], BatchOptions(out=tmp_path / "dask", task=TASK, backend="dask",
                                                             resume=True, workers=2, dask_processes=False, plot=False))
    assert (resumed.computed, resumed.reused) == (1, 5)  # only the failed study is retried


@pytest.mark.slow
def test_dask_scheduler_address_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import LocalCluster

    for name, value in fake_env(tmp_path / "calls").items():
        monkeypatch.setenv(name, value)
    make_studies(tmp_path / "in", 3)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        result = run_batch([str(tmp_path / "in")], BatchOptions(out=tmp_path / "out", task=TASK, backend="dask",
                                                                scheduler=cluster.scheduler_address, plot=False))
        assert result.count("ok") == 3
        prefixes = list(cluster.scheduler.task_prefixes)
        assert any(p.startswith("covseg-study") for p in prefixes), prefixes  # the studies ran here
