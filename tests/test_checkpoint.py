"""Checkpoints: exact round trip of model, optimiser, scheduler and RNG states; safetensors and
JSON only (nothing is unpickled); atomic replacement; clear errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from covseg.errors import InputError  # noqa: E402
from covseg.training.checkpoint import (  # noqa: E402
    load_checkpoint,
    load_model,
    read_weights,
    restore_training,
    save_checkpoint,
)
from covseg.training.config import Config, NetworkConfig  # noqa: E402
from covseg.training.loop import make_optimizer, make_scheduler  # noqa: E402
from covseg.training.networks import build_network  # noqa: E402

SIDE_EFFECT: list[str] = []


def _config() -> Config:
    return Config(network=NetworkConfig(features=(4, 8, 16), strides=(1, 2, 2), deep_supervision=1)).validate()


def _trained(cfg: Config) -> tuple[Any, Any, Any]:
    torch.manual_seed(0)
    model = build_network(cfg)
    optimizer = make_optimizer(cfg, [{"params": list(model.parameters()), "lr": 0.01}])
    scheduler = make_scheduler(cfg, optimizer)
    for _ in range(2):
        optimizer.zero_grad()
        sum(o.pow(2).mean() for o in model.train()(torch.randn(1, 1, 16, 16, 16))).backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def test_round_trip_is_exact(tmp_path: Path) -> None:
    cfg = _config()
    model, optimizer, scheduler = _trained(cfg)
    torch.manual_seed(123)
    save_checkpoint(tmp_path / "last", model=model, config=cfg, epoch=2, optimizer=optimizer, scheduler=scheduler,
                    extra={"history": [{"epoch": 1}]})
    expected_draw = torch.rand(3)
    checkpoint = load_checkpoint(tmp_path / "last")
    assert checkpoint.epoch == 2 and checkpoint.state["history"] == [{"epoch": 1}]
    assert checkpoint.config == cfg
    fresh = build_network(checkpoint.config)
    fresh_opt = make_optimizer(cfg, [{"params": list(fresh.parameters()), "lr": 0.01}])
    fresh_sched = make_scheduler(cfg, fresh_opt)
    torch.manual_seed(999)
    restore_training(checkpoint, model=fresh, optimizer=fresh_opt, scheduler=fresh_sched)
    assert torch.equal(torch.rand(3), expected_draw)  # the torch RNG continues where it was saved
    a, b = model.state_dict(), fresh.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = optimizer.state_dict(), fresh_opt.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert all(torch.equal(sa["state"][i]["momentum_buffer"], sb["state"][i]["momentum_buffer"]) for i in sa["state"])
    assert scheduler.state_dict() == fresh_sched.state_dict()
    assert fresh_opt.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])


def test_files_are_safetensors_and_json_and_replacement_is_atomic(tmp_path: Path) -> None:
    cfg = _config()
    model, optimizer, scheduler = _trained(cfg)
    for epoch in (1, 2):
        save_checkpoint(tmp_path / "last", model=model, config=cfg, epoch=epoch, optimizer=optimizer,
                        scheduler=scheduler)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no temporary or old folders left
    state = json.loads((tmp_path / "last/state.json").read_text())
    assert state["format"] == "covseg.checkpoint/1" and state["epoch"] == 2
    for name in ("model.safetensors", "state.safetensors"):
        assert (tmp_path / "last" / name).read_bytes()[8:9] == b"{"  # safetensors: u64 length + JSON header
    model_eval, loaded_cfg = load_model(tmp_path / "last")
    assert not model_eval.training and loaded_cfg == cfg
    with torch.no_grad():
        assert tuple(model_eval(torch.zeros(1, 1, 16, 16, 16)).shape) == (1, 2, 16, 16, 16)


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (SIDE_EFFECT.append, ("ran",))


def test_torch_files_are_read_with_weights_only(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(2)}, plain)
    assert torch.equal(read_weights(plain)["w"], torch.ones(2))
    evil = tmp_path / "evil.pt"
    torch.save({"w": _Evil()}, evil)
    with pytest.raises(pickle.UnpicklingError):
        read_weights(evil)
    assert SIDE_EFFECT == []


def test_errors_name_the_folder_and_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"model\.safetensors missing"):
        (tmp_path / "config.json").write_text(_config().to_json())
        load_checkpoint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text('{"network": {"widths": [1]}}')
    with pytest.raises(InputError, match=r"unknown key\(s\) widths"):
        load_checkpoint(tmp_path)
