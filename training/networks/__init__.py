"""Network families built from MONAI blocks, all compositions of `Encoder` and `Decoder`.

`build_network(config)` is the one constructor: the trainer, the strategies and the ONNX
exporter rebuild a network from the configuration saved beside a checkpoint with it. In eval
mode every network returns plain full-resolution logits (no deep-supervision outputs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from covseg.training.networks.hybrid import HybridUNet, SelectiveFusion
from covseg.training.networks.multilesion import MultiLesionUNet
from covseg.training.networks.unet import Decoder, Encoder, UNet

if TYPE_CHECKING:
    from covseg.training.config import Config, NetworkConfig

__all__ = ["Decoder", "Encoder", "HybridUNet", "MultiLesionUNet", "SelectiveFusion", "UNet", "build_network",
           "count_parameters"]


def _network_config(config: Config | NetworkConfig) -> NetworkConfig:
    return getattr(config, "network", config)


def build_encoder(net: NetworkConfig) -> Encoder:
    levels = net.levels
    return Encoder(net.in_channels, net.features[:levels], net.strides[:levels], net.kernel_size,
                   net.convs_per_level, last_level_convs=net.truncate_convs if net.truncate_at else None)


def build_decoder(net: NetworkConfig) -> Decoder:
    levels = net.levels
    return Decoder(net.features[:levels], net.strides[:levels], net.out_channels, net.kernel_size,
                   deep_supervision=min(net.deep_supervision, max(0, levels - 2)),
                   decoder_features=net.decoder_features)


def build_network(config: Config | NetworkConfig) -> nn.Module:
    """A fresh (randomly initialised) network from a Config or its `network` section."""
    net = _network_config(config)
    if net.family == "unet":
        return UNet(build_encoder(net), build_decoder(net), truncated_at=net.truncate_at)
    if net.family == "multi_lesion":
        return MultiLesionUNet(build_encoder(net), {name: build_decoder(net) for name in net.heads},
                               default_head=net.default_head)
    if net.family == "hybrid":
        return HybridUNet(build_encoder(net), build_encoder(net), build_decoder(net),
                          net.fusion_reduction, net.fusion_min_channels)
    raise ValueError(f"unknown network family {net.family!r}")


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return trainable, frozen
