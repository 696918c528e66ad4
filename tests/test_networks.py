"""Output shapes of every network family (train and eval mode) and Selective Fusion by hand."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from covseg.training.config import NetworkConfig  # noqa: E402
from covseg.training.networks import (  # noqa: E402
    Encoder,
    HybridUNet,
    MultiLesionUNet,
    SelectiveFusion,
    UNet,
    build_network,
    count_parameters,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = {"features": (4, 8, 16, 16), "strides": (1, 2, 2, 2), "deep_supervision": 2}


def _net(**overrides: object) -> NetworkConfig:
    return NetworkConfig(**{**TINY, **overrides})  # type: ignore[arg-type]


@pytest.mark.parametrize("family", ["unet", "multi_lesion", "hybrid"])
def test_shapes_train_and_eval(family: str) -> None:
    torch.manual_seed(0)
    model = build_network(_net(family=family, heads=("msd", "nsclc"), out_channels=3))
    x = torch.randn(2, 1, 32, 32, 32)
    model.train()
    outputs = model(x)
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 32, 32, 32), (2, 3, 16, 16, 16), (2, 3, 8, 8, 8)]
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert isinstance(logits, torch.Tensor) and tuple(logits.shape) == (2, 3, 32, 32, 32)


def test_encoder_levels_shallow_to_deep() -> None:
    encoder = Encoder(1, (4, 8, 16, 16), (1, 2, 2, 2))
    features = encoder(torch.randn(1, 1, 32, 32, 32))
    assert [tuple(f.shape[1:]) for f in features] == [(4, 32, 32, 32), (8, 16, 16, 16), (16, 8, 8, 8), (16, 4, 4, 4)]


def test_no_deep_supervision_returns_tensor_in_training() -> None:
    model = build_network(_net(deep_supervision=0)).train()
    assert isinstance(model(torch.randn(1, 1, 32, 32, 32)), torch.Tensor)


def test_multi_lesion_heads_are_separate() -> None:
    torch.manual_seed(0)
    model = build_network(_net(family="multi_lesion", heads=("msd", "nsclc"), deep_supervision=0)).eval()
    assert isinstance(model, MultiLesionUNet)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        a, b, default = model(x, head="msd"), model(x, head="nsclc"), model(x)
    assert not torch.equal(a, b) and torch.equal(a, default)
    with pytest.raises(KeyError, match="unknown head 'liver'"):
        model(x, head="liver")
    assert {k.split(".")[1] for k in model.state_dict() if k.startswith("decoders.")} == {"msd", "nsclc"}


def test_truncated_unet_is_smaller_with_same_contract() -> None:
    full = build_network(_net())
    cut = build_network(_net(truncate_at=2, deep_supervision=0))
    fine = build_network(_net(truncate_at=3, truncate_convs=1))
    assert isinstance(cut, UNet) and cut.truncated_at == 2
    sizes = [count_parameters(m)[0] for m in (cut, fine, full)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    for model in (cut, fine):
        with torch.no_grad():
            assert tuple(model.eval()(torch.randn(1, 1, 32, 32, 32)).shape) == (1, 2, 32, 32, 32)
    assert len(fine.encoder.levels[-1]) == 1 and len(fine.encoder.levels[0]) == 2


def test_slim_decoder_halves_decoder_widths_and_keeps_the_encoder() -> None:
    full = build_network(_net(truncate_at=3, deep_supervision=1))
    slim = build_network(_net(truncate_at=3, deep_supervision=1, decoder_width=0.5))
    assert _net(truncate_at=3, decoder_width=0.5).decoder_features == (2, 4, 16)  # bottleneck keeps its width
    encoder = {k: v.shape for k, v in full.state_dict().items() if k.startswith("encoder.")}
    assert encoder == {k: v.shape for k, v in slim.state_dict().items() if k.startswith("encoder.")}
    # level-0 stage: up-sampled 4 -> 2 channels, concatenated with the 4-channel skip, 6 -> 2 convolution
    stage0 = slim.decoder.stages[-1]
    assert stage0.transp_conv.conv.out_channels == 2 and stage0.conv_block.conv1.conv.in_channels == 6
    assert count_parameters(slim)[0] < count_parameters(full)[0]
    slim.train()
    outputs = slim(torch.randn(2, 1, 32, 32, 32))
    assert [tuple(o.shape) for o in outputs] == [(2, 2, 32, 32, 32), (2, 2, 16, 16, 16)]
    with pytest.raises(ValueError, match="bottleneck"):
        from covseg.training.networks import Decoder
        Decoder((4, 8), (1, 2), 2, decoder_features=(2, 4))


@pytest.mark.parametrize(("skip_channels", "out_channels"), [(4, 4), (8, 4)])
def test_frozen_skip_stage_is_monais_stage_with_the_same_gradients(skip_channels: int, out_channels: int) -> None:
    from covseg.training.networks.unet import stage_with_frozen_skip, up_stage

    torch.manual_seed(0)
    stage = up_stage(8, skip_channels, out_channels, 3, 2).double()
    x = torch.randn(2, 8, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    skip = torch.randn(2, skip_channels, 8, 8, 8, dtype=torch.float64)  # a frozen encoder's feature
    plain, split = stage(x, skip), stage_with_frozen_skip(stage, x, skip)
    assert torch.allclose(plain, split, atol=1e-10)
    inputs = [x, *stage.parameters()]
    for a, b in zip(torch.autograd.grad((plain * plain.detach()).sum(), inputs),
                    torch.autograd.grad((split * plain.detach()).sum(), inputs), strict=True):
        assert torch.allclose(a, b, atol=1e-9)


def test_decoder_takes_the_frozen_skip_path_only_when_training_on_a_frozen_encoder() -> None:
    from unittest import mock

    from covseg.training.networks import unet

    model = build_network(_net(deep_supervision=0)).train()
    x = torch.randn(1, 1, 32, 32, 32)
    with mock.patch.object(unet, "stage_with_frozen_skip", wraps=unet.stage_with_frozen_skip) as split:
        model(x)  # everything trains: the skips need their gradients
        assert split.call_count == 0
        model.encoder.requires_grad_(False)
        model(x).sum().backward()
        assert split.call_count == 3
        with torch.no_grad():
            model(x)  # inference keeps MONAI's stage
        model.eval()(x)  # so does eval mode (validation, export)
        assert split.call_count == 3


def test_hybrid_has_identical_encoders_and_fusion_per_level() -> None:
    model = build_network(_net(family="hybrid"))
    assert isinstance(model, HybridUNet)
    ded = {k: v.shape for k, v in model.dedicated.state_dict().items()}
    ada = {k: v.shape for k, v in model.adapted.state_dict().items()}
    assert ded == ada
    assert len(model.fusion) == 4
    # d = max(C // 16, 8): the floor applies to every tiny level
    assert [unit.squeeze.out_features for unit in model.fusion] == [8, 8, 8, 8]
    assert SelectiveFusion(320).squeeze.out_features == 20


def test_selective_fusion_matches_equations_by_hand() -> None:
    """Eq (2)-(6) computed element by element in float64 with fixed weights."""
    torch.manual_seed(3)
    C, d = 4, 2
    unit = SelectiveFusion(C, reduction=2, min_channels=1).double()
    W = torch.tensor([[0.5, -1.0, 0.25, 2.0], [1.0, 0.5, -0.5, 0.0]], dtype=torch.float64)
    A = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 2.0], [0.5, 0.5]], dtype=torch.float64)
    B = torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.0, 0.0], [-0.5, 1.5]], dtype=torch.float64)
    with torch.no_grad():
        unit.squeeze.weight.copy_(W)
        unit.to_dedicated.weight.copy_(A)
        unit.to_adapted.weight.copy_(B)
    xde = torch.randn(1, C, 3, 2, 2, dtype=torch.float64)
    xad = torch.randn(1, C, 3, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        out = unit(xde, xad)
    xf = xde + xad  # (2)
    n = 3 * 2 * 2
    s = [sum(float(v) for v in xf[0, c].flatten()) / n for c in range(C)]  # (3)
    z = [max(0.0, sum(float(W[i, c]) * s[c] for c in range(C))) for i in range(d)]  # (4)
    import math

    for c in range(C):
        az = sum(float(A[c, i]) * z[i] for i in range(d))
        bz = sum(float(B[c, i]) * z[i] for i in range(d))
        a = math.exp(az) / (math.exp(az) + math.exp(bz))  # (5)
        b = math.exp(bz) / (math.exp(az) + math.exp(bz))
        expected = a * xde[0, c] + b * xad[0, c]  # (6)
        assert torch.allclose(out[0, c], expected, atol=1e-12)
