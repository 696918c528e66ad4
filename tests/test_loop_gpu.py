"""CUDA training with AMP (skipped without a GPU): finite losses, checkpoints that resume, and
the CUDA predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from covseg.training.config import Config, NetworkConfig  # noqa: E402
from covseg.training.loop import fit  # noqa: E402
from covseg.training.predictor import TorchPredictor  # noqa: E402


@pytest.mark.gpu
def test_cuda_amp_fit_and_resume(tmp_path: Path) -> None:
    cfg = Config(network=NetworkConfig(features=(8, 16, 32), strides=(1, 2, 2), deep_supervision=1))
    cfg.data.source, cfg.data.shape_zyx, cfg.data.cases = "spheres", (32, 32, 32), 3
    cfg.schedule.epochs, cfg.schedule.iterations_per_epoch, cfg.schedule.patch_zyx = 2, 3, (32, 32, 32)
    cfg.run.device, cfg.run.amp = "cuda", True
    first = fit(cfg.validate(), out_dir=tmp_path)
    assert first.device.startswith("cuda") and all(np.isfinite(h["loss"]) for h in first.history)
    cfg.schedule.epochs = 3
    resumed = fit(cfg.validate(), out_dir=tmp_path, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    predictor = TorchPredictor(resumed.model, "cuda", amp=True)
    out = predictor(np.zeros((1, 1, 32, 32, 32), dtype=np.float32))
    assert predictor.provider == "torch-cuda" and out.dtype == np.float32 and out.shape == (1, 2, 32, 32, 32)
