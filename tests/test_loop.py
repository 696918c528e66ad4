"""The training loop: the loss falls on a tiny synthetic case, resume after k epochs reproduces
the uninterrupted run bit for bit, logs and checkpoints are written, the predictor contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from covseg.training.config import Config, NetworkConfig  # noqa: E402
from covseg.training.loop import fit  # noqa: E402
from covseg.training.predictor import TorchPredictor  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(epochs: int = 3, **run: Any) -> Config:
    cfg = Config(network=NetworkConfig(features=(4, 8, 16), strides=(1, 2, 2), deep_supervision=1))
    cfg.data.source, cfg.data.shape_zyx, cfg.data.cases = "spheres", (24, 24, 24), 3
    cfg.schedule.epochs, cfg.schedule.iterations_per_epoch, cfg.schedule.batch_size = epochs, 3, 2
    cfg.schedule.patch_zyx = (16, 16, 16)
    cfg.run.deterministic = True
    for key, value in run.items():
        setattr(cfg.run, key, value)
    return cfg.validate()


class InterruptedRunError(Exception):
    pass


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path: Path) -> None:
    whole = fit(tiny_config(), out_dir=tmp_path / "whole")

    def stop_after_two(record: dict[str, Any]) -> None:
        if record["epoch"] == 2:
            raise InterruptedRunError

    with pytest.raises(InterruptedRunError):
        fit(tiny_config(), out_dir=tmp_path / "split", progress=stop_after_two)
    assert json.loads((tmp_path / "split/checkpoints/last/state.json").read_text())["epoch"] == 2
    resumed = fit(tiny_config(), out_dir=tmp_path / "split", resume=True)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in whole.history] == [h["loss"] for h in resumed.history]
    assert [h["val_dice"] for h in whole.history] == [h["val_dice"] for h in resumed.history]
    lines = (tmp_path / "split/log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


@pytest.mark.slow
def test_resuming_a_finished_run_with_more_epochs_trains_on_the_new_schedule(tmp_path: Path) -> None:
    """The finished run's optimiser is at lr 0; the first extra epoch must use the new poly rate."""
    first = fit(tiny_config(epochs=2), out_dir=tmp_path)
    extended = fit(tiny_config(epochs=4), out_dir=tmp_path, resume=True)
    lr0 = first.config.optimiser.lr
    power = first.config.schedule.poly_exponent
    assert extended.history[2]["lr"][0] == pytest.approx(lr0 * (1 - 2 / 4) ** power)
    assert extended.history[3]["lr"][0] == pytest.approx(lr0 * (1 - 3 / 4) ** power)
    before, after = first.model.state_dict(), extended.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_a_few_epochs_lower_the_loss_and_write_checkpoints(tmp_path: Path) -> None:
    cfg = tiny_config(epochs=4)
    cfg.augmentation.enabled = False
    result = fit(cfg, out_dir=tmp_path)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert all(h["seconds"] > 0 and h["val_dice"] is not None for h in result.history)
    assert result.history[0]["lr"] == [pytest.approx(0.01)]
    assert result.history[1]["lr"] == [pytest.approx(0.01 * (1 - 1 / 4) ** 0.9)]
    last = tmp_path / "checkpoints" / "last"
    assert sorted(p.name for p in last.iterdir()) == ["config.json", "model.safetensors", "state.json",
                                                       "state.safetensors"]
    state = json.loads((last / "state.json").read_text())
    assert state["epoch"] == 4 and state["normalization"]["kind"] == "ct_clip_zscore"
    assert (tmp_path / "config.json").is_file() and len(result.seconds_per_epoch) == 4
    _check_predict_case(result)


def _check_predict_case(result: Any) -> None:
    """predict_case returns covseg labels on the input grid, here through resampling (8 -> 10 mm) and back."""
    from dataclasses import replace

    from covseg.labels import INFECTION_LABELS
    from covseg.training.data import spheres_case
    from covseg.training.predictor import predict_case

    image, _ = spheres_case((20, 22, 24), 99, (8.0, 8.0, 8.0))
    config = replace(result.config, data=replace(result.config.data, spacing_zyx_mm=(10.0, 10.0, 10.0)))
    labels = predict_case(result, config, image)
    assert labels.geometry == image.geometry and labels.array.dtype == np.uint8
    assert set(np.unique(labels.array)) <= {0, *(int(v) for v in INFECTION_LABELS)}


def test_torch_predictor_contract() -> None:
    from covseg.training.networks import build_network

    model = build_network(NetworkConfig(features=(4, 8, 16), strides=(1, 2, 2), deep_supervision=1)).train()
    predictor = TorchPredictor(model)
    batch = np.random.default_rng(0).normal(size=(2, 1, 16, 16, 16)).astype(np.float32)
    out = predictor(batch)
    assert predictor.provider == "torch-cpu" and out.dtype == np.float32 and out.shape == (2, 2, 16, 16, 16)
    assert not model.training  # eval mode: plain logits, no deep supervision
    with torch.no_grad():
        assert np.allclose(out, model(torch.from_numpy(batch)).numpy())


def test_predictor_runs_under_the_engine_sliding_window() -> None:
    from covseg.engine.sliding_window import sliding_window
    from covseg.training.networks import build_network

    predictor = TorchPredictor(build_network(NetworkConfig(features=(4, 8, 16), strides=(1, 2, 2))))
    image = np.zeros((1, 20, 24, 18), dtype=np.float32)
    probabilities = sliding_window(image, predictor, patch=(16, 16, 16), overlap=0.5, batch_size=2)
    assert probabilities.shape == (2, 20, 24, 18)
    assert np.allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)


@pytest.mark.slow
def test_multi_lesion_pretraining_then_continual_with_rehearsal(tmp_path: Path) -> None:
    pre = tiny_config(epochs=1)
    pre.network.family, pre.network.heads = "multi_lesion", ("nodule", "effusion")
    pre.schedule.iterations_per_epoch = 2
    pre.augmentation.enabled = False
    first = fit(pre.validate(), out_dir=tmp_path / "pre")
    assert set(first.history[0]["val_dice_by_head"]) == {"nodule", "effusion"}
    cont = tiny_config(epochs=1)
    cont.strategy.name, cont.strategy.pretrained = "continual", str(tmp_path / "pre/checkpoints/last")
    cont.strategy.keep_source_heads, cont.strategy.rehearsal_fraction = True, 0.5
    cont.schedule.iterations_per_epoch = 6
    cont.augmentation.enabled = False
    result = fit(cont.validate(), out_dir=tmp_path / "cont")
    assert tuple(result.model.decoders) == ("nodule", "effusion", "target")
    assert set(result.history[0]["val_dice_by_head"]) == {"nodule", "effusion", "target"}
    before = first.model.state_dict()
    after = result.model.state_dict()
    moved = {name for name in ("nodule", "effusion")
             if not torch.equal(before[f"decoders.{name}.heads.0.conv.conv.weight"],
                                after[f"decoders.{name}.heads.0.conv.conv.weight"])}
    assert moved  # rehearsal trained at least one source head
