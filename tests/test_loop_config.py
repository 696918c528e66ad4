"""The configuration tree: defaults of paper 000 / nnU-Net, JSON and TOML round trips, and
validation errors that name the key and value at fault."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from covseg.errors import InputError
from covseg.training.config import Config, config_from_dict, load_config, save_config
from covseg.training.losses import deep_supervision_weights


def test_defaults_follow_the_paper() -> None:
    cfg = Config().validate()
    assert (cfg.optimiser.name, cfg.optimiser.lr, cfg.optimiser.momentum, cfg.optimiser.nesterov) == (
        "sgd", 0.01, 0.99, True)
    assert cfg.optimiser.weight_decay == 3e-5 and cfg.schedule.poly_exponent == 0.9
    assert cfg.schedule.loss == "dice_ce" and cfg.network.fusion_reduction == 16
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_json_and_toml_round_trip(tmp_path: Path) -> None:
    cfg = Config()
    cfg.network.features = (8, 16, 32)
    cfg.network.strides = (1, 2, 2)
    cfg.network.deep_supervision = 1
    cfg.strategy.name = "hybrid"
    path = save_config(cfg, tmp_path / "c.json")
    assert load_config(path) == cfg
    toml = tmp_path / "c.toml"
    toml.write_text('[network]\nfeatures = [8, 16, 32]\nstrides = [1, 2, 2]\ndeep_supervision = 1\n'
                    '[strategy]\nname = "hybrid"\n[schedule]\npatch_zyx = [32, 32, 32]\n')
    loaded = load_config(toml)
    assert loaded.network.features == (8, 16, 32) and loaded.schedule.patch_zyx == (32, 32, 32)
    assert isinstance(loaded.schedule.patch_zyx, tuple)
    assert config_from_dict(json.loads(cfg.to_json())) == cfg


@pytest.mark.parametrize(("data", "message"), [
    ({"network": {"widths": [1]}}, r"network: unknown key\(s\) widths"),
    ({"strategy": {"name": "magic"}}, r"strategy.name='magic'"),
    ({"network": {"features": [8, 16], "strides": [2, 2]}}, r"network.strides\[0\]=2"),
    ({"schedule": {"epochs": "ten"}}, r"schedule.epochs: expected int"),
    ({"network": {"out_channels": 3}}, r"data.classes has 2 names but network.out_channels=3"),
    ({"network": {"family": "multi_lesion"}}, r"network.heads=\(\)"),
    ({"schedule": {"patch_zyx": [32, 32]}}, r"schedule.patch_zyx: expected 3 values"),
])
def test_validation_names_the_key(data: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        config_from_dict(data)


def test_unreadable_files_are_input_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[network\n")
    with pytest.raises(InputError, match=r"bad.toml is not valid toml"):
        load_config(bad)
    with pytest.raises(InputError, match="cannot read configuration"):
        load_config(tmp_path / "missing.json")
