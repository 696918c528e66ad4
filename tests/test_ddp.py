"""Two-process DDP on gloo (CPU): both ranks end with identical weights, and training moved them."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from safetensors.torch import load_file  # noqa: E402

from covseg.training.config import Config, NetworkConfig  # noqa: E402
from covseg.training.ddp import spawn_local  # noqa: E402


@pytest.mark.slow
def test_two_ranks_on_gloo_end_with_identical_weights(tmp_path: Path) -> None:
    cfg = Config(network=NetworkConfig(features=(4, 8, 16), strides=(1, 2, 2), deep_supervision=1))
    cfg.data.source, cfg.data.shape_zyx, cfg.data.cases = "spheres", (24, 24, 24), 3
    cfg.schedule.epochs, cfg.schedule.iterations_per_epoch, cfg.schedule.batch_size = 2, 2, 1
    cfg.schedule.patch_zyx = (16, 16, 16)
    cfg.run.device = "cpu"
    spawn_local(cfg.validate(), tmp_path / "run", tmp_path, world=2)
    rank0, rank1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    saved = load_file(str(tmp_path / "run/checkpoints/last/model.safetensors"))
    assert all(torch.equal(saved[k], rank0[k]) for k in saved)
    lines = (tmp_path / "run/log.jsonl").read_text().splitlines()
    assert len(lines) == 2  # only rank 0 logs
