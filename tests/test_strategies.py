"""Every strategy: what it loads, what one optimiser step changes and what stays bit-identical,
the trainable/frozen counts, and weight loading that names every mismatched key and shape."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from covseg.training.checkpoint import WeightMismatchError  # noqa: E402
from covseg.training.config import Config, NetworkConfig, StrategyConfig  # noqa: E402
from covseg.training.networks import count_parameters  # noqa: E402
from covseg.training.strategies import STRATEGIES, get_strategy, search_cutoff  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


NET = {"features": (4, 8, 16, 16), "strides": (1, 2, 2, 2), "deep_supervision": 1}


def _config(strategy: str, out_channels: int = 2, **settings: Any) -> Config:
    classes = ("background", "infection", "liver")[:out_channels]
    cfg = Config(network=NetworkConfig(**NET, out_channels=out_channels),  # type: ignore[arg-type]
                 strategy=StrategyConfig(name=strategy, **settings))
    cfg.data.classes = classes
    return cfg.validate()


@pytest.fixture(scope="module")
def source() -> tuple[Config, dict[str, Any]]:
    torch.manual_seed(1)
    cfg = _config("scratch")
    model = get_strategy(cfg).prepare().model
    return cfg, {k: v.clone() for k, v in model.state_dict().items()}


def _step(model: Any, groups: list[dict[str, Any]], head: str | None = None) -> dict[str, Any]:
    """One SGD step (paper defaults) on a random batch; returns the parameters before it."""
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    optimiser = torch.optim.SGD(groups, lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    torch.manual_seed(0)
    x = torch.randn(1, 1, 32, 32, 32)
    outputs = model.train()(x) if head is None else model.train()(x, head=head)
    loss = sum(o.float().pow(2).mean() for o in outputs)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    return before


def _changed(model: Any, before: dict[str, Any]) -> set[str]:
    return {k for k, p in model.named_parameters() if not torch.equal(p.detach(), before[k])}


def _under(model: Any, *prefixes: str) -> set[str]:
    return {k for k, _ in model.named_parameters() if k.startswith(prefixes)}


EXPECTED_FROZEN = {
    "scratch": (), "continual": (), "body_finetune": (), "truncated": (), "transfusion": (),
    "lesion_representations": ("encoder.",), "frozen_random_encoder": ("encoder.",), "hybrid": ("adapted.",),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_FROZEN))
def test_one_step_changes_exactly_the_trainable_parameters(name: str, source: Any) -> None:
    cfg = _config(name, cutoff=3)
    strategy = get_strategy(cfg)
    prepared = strategy.prepare(source if strategy.needs_pretrained else None)
    model = prepared.model
    frozen = _under(model, *EXPECTED_FROZEN[name]) if EXPECTED_FROZEN[name] else set()
    assert frozen == {k for k, p in model.named_parameters() if not p.requires_grad}
    trainable, frozen_count = count_parameters(model)
    assert (prepared.trainable, prepared.frozen) == (trainable, frozen_count)
    assert frozen_count == sum(p.numel() for k, p in model.named_parameters() if k in frozen)
    before = _step(model, prepared.param_groups)
    changed = _changed(model, before)
    assert changed == set(before) - frozen, f"{name}: unexpected {changed ^ (set(before) - frozen)}"


def test_loaded_parts_hold_the_source_values(source: Any) -> None:
    src = source[1]
    hybrid = get_strategy(_config("hybrid")).prepare(source).model
    assert all(torch.equal(v, src[f"encoder.{k}"]) for k, v in hybrid.adapted.state_dict().items())
    body = get_strategy(_config("body_finetune")).prepare(source).model.state_dict()
    assert torch.equal(body["encoder.levels.0.0.conv.weight"], src["encoder.levels.0.0.conv.weight"])
    up = "decoder.stages.0.transp_conv.conv.weight"
    assert torch.equal(body[up], src[up])
    assert not torch.equal(body["decoder.heads.0.conv.conv.weight"], src["decoder.heads.0.conv.conv.weight"])
    continual = get_strategy(_config("continual")).prepare(source).model.state_dict()
    assert all(torch.equal(continual[k], v) for k, v in src.items())


def test_truncated_and_transfusion_shapes(source: Any) -> None:
    cut = get_strategy(_config("truncated", cutoff=2, cutoff_convs=1)).prepare(source)
    assert cut.network.truncate_at == 2 and len(cut.model.encoder.levels) == 2
    assert len(cut.model.encoder.levels[1]) == 1
    assert cut.report is not None and any(k.startswith("encoder.levels.3.") for k in cut.report.unused)
    kept = "encoder.levels.1.0.conv.weight"
    assert torch.equal(cut.model.state_dict()[kept], source[1][kept])
    tf = get_strategy(_config("transfusion", cutoff=2)).prepare(source)
    assert tf.network.features == (4, 8, 8, 8)
    assert tf.trainable < count_parameters(get_strategy(_config("scratch")).prepare().model)[0]
    with torch.no_grad():
        assert tuple(tf.model.eval()(torch.zeros(1, 1, 32, 32, 32)).shape) == (1, 2, 32, 32, 32)


def test_lwft_unfreezes_from_the_output_backwards(source: Any) -> None:
    cfg = _config("lwft", out_channels=3)
    strategy = get_strategy(cfg)
    prepared = strategy.prepare(source)
    model = prepared.model
    assert prepared.report is not None and any("decoder.heads.0" in s for s in prepared.report.skipped)
    before = _step(model, prepared.param_groups)
    assert _changed(model, before) == _under(model, "decoder.heads.")
    strategy.on_epoch_start(model, 1)
    before = _step(model, prepared.param_groups)
    assert _changed(model, before) == _under(model, "decoder.heads.", "decoder.stages.2.")
    strategy.on_epoch_start(model, 100)
    assert all(p.requires_grad for p in model.parameters())
    assert [g["lr"] for g in prepared.param_groups] == [0.01, pytest.approx(0.001)]


def test_continual_keeps_source_heads(source: Any) -> None:
    prepared = get_strategy(_config("continual", keep_source_heads=True)).prepare(source)
    model = prepared.model
    assert tuple(model.decoders) == ("source", "target")
    state = model.state_dict()
    assert all(torch.equal(state[f"decoders.source.{k[len('decoder.'):]}"], v)
               for k, v in source[1].items() if k.startswith("decoder."))
    before = _step(model, prepared.param_groups, head="target")
    assert _changed(model, before) == _under(model, "encoder.", "decoders.target.")


def test_mismatches_are_all_named(source: Any) -> None:
    wider = _config("scratch")
    wider.network.features = (4, 8, 32, 16)
    with pytest.raises(WeightMismatchError) as error:
        get_strategy(_config("body_finetune")).prepare((wider, source[1]))
    message = str(error.value)
    # the source's level-2 weights have 16 channels, the model (built like `wider`) wants 32
    assert "encoder.levels.2.0.conv.weight: shape (32, 8, 3, 3, 3) in the model but (16, 8, 3, 3, 3)" in message
    assert "decoder.stages.0.transp_conv.conv.weight" in message and "\n" not in message
    missing = {k: v for k, v in source[1].items() if not k.startswith("encoder.levels.1.")}
    with pytest.raises(WeightMismatchError, match=r"encoder\.levels\.1\.0\.conv\.weight: missing"):
        get_strategy(_config("lesion_representations")).prepare((source[0], missing))
    with pytest.raises(WeightMismatchError, match=r"decoder\.heads\.0\.conv\.conv\.weight: shape \(3, 4, 1, 1, 1\)"):
        get_strategy(_config("continual", out_channels=3)).prepare(source)


def test_every_strategy_is_registered_and_pretrained_ones_need_a_checkpoint() -> None:
    assert set(STRATEGIES) == set(EXPECTED_FROZEN) | {"lwft"}
    from covseg.errors import InputError

    with pytest.raises(InputError, match="needs a pre-trained checkpoint"):
        get_strategy(_config("hybrid")).prepare(None)


def test_search_cutoff_coarse_then_fine() -> None:
    scores = {(2, None): 0.5, (3, None): 0.8, (4, None): 0.6, (3, 1): 0.7, (4, 1): 0.85}
    best, history = search_cutoff(lambda k, c: scores[(k, c)], levels=4, convs_per_level=2)
    assert best == (4, 1)
    assert [(k, c) for k, c, _ in history] == [(2, None), (3, None), (4, None), (3, 1), (4, 1)]
