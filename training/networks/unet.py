"""nnU-Net-style 3D U-Net split into an `Encoder` and a `Decoder` with plain interfaces.

`Encoder(x) -> list[Tensor]` returns the features of every level, shallow to deep (the last is
the bottleneck). `Decoder(features) -> logits`, plus the deep-supervision outputs (full
resolution first, then coarser) in training mode. Instance norm (affine), leaky ReLU 0.01 and
strided convolutions follow nnU-Net; the blocks are MONAI's. Every network family in this
subpackage is a composition of these two parts, so strategies can load, freeze or replace
them by name (`encoder.*`, `decoder.stages.*`, `decoder.heads.*`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, UnetBasicBlock, UnetOutBlock, UnetUpBlock
from torch import nn

NORM = ("instance", {"affine": True})
ACT = ("leakyrelu", {"negative_slope": 0.01, "inplace": True})


def conv_unit(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> Convolution:
    """Convolution -> instance norm -> leaky ReLU, as in every nnU-Net stage."""
    return Convolution(3, in_channels, out_channels, strides=stride, kernel_size=kernel_size,
                       act=ACT, norm=NORM, adn_ordering="NDA")


class Encoder(nn.Module):
    """Levels of `convs_per_level` conv units; the first unit of a level carries its stride.

    `last_level_convs` keeps fewer units in the deepest level: the fine-grained cutoff of
    truncated transfer learning (seed 003) that cuts inside a block rather than between them.
    """

    def __init__(self, in_channels: int, features: Sequence[int], strides: Sequence[int], kernel_size: int = 3,
                 convs_per_level: int = 2, last_level_convs: int | None = None) -> None:
        super().__init__()
        self.features = tuple(int(f) for f in features)
        self.strides = tuple(int(s) for s in strides)
        self.levels = nn.ModuleList()
        previous = in_channels
        for i, (width, stride) in enumerate(zip(self.features, self.strides, strict=True)):
            count = last_level_convs if (last_level_convs and i == len(self.features) - 1) else convs_per_level
            units = [conv_unit(previous, width, kernel_size, stride)]
            units += [conv_unit(width, width, kernel_size, 1) for _ in range(count - 1)]
            self.levels.append(nn.Sequential(*units))
            previous = width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level in self.levels:
            x = level(x)
            features.append(x)
        return features


def up_stage(in_channels: int, skip_channels: int, out_channels: int, kernel_size: int,
             upsample: int) -> UnetUpBlock:
    """MONAI's up-sampling stage (transposed convolution, concatenation with the skip, two conv units).

    MONAI's block assumes the skip is as wide as the stage's output; a slim decoder (narrower than
    its encoder) reads wider skips, so its conv block is rebuilt for that input width.
    """
    stage = UnetUpBlock(3, in_channels, out_channels, kernel_size=kernel_size, stride=1,
                        upsample_kernel_size=upsample, norm_name=NORM, act_name=ACT)
    if skip_channels != out_channels:
        stage.conv_block = UnetBasicBlock(3, out_channels + skip_channels, out_channels, kernel_size=kernel_size,
                                          stride=1, norm_name=NORM, act_name=ACT)
    return stage


def stage_with_frozen_skip(stage: UnetUpBlock, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """`stage(x, skip)` for a skip that needs no gradient (a frozen encoder's features).

    MONAI's stage convolves cat(up-sampled, skip); the backward pass of that convolution computes
    the input gradient of the skip channels too, only to throw it away. Convolving the two parts
    with the matching slices of the same weight and adding them is the same function (the tests
    compare outputs and gradients), and autograd then skips the skip's input gradient: that is
    what makes training on a frozen encoder cheaper than training the whole network.
    """
    up = stage.transp_conv(x)
    block = stage.conv_block
    conv = block.conv1.conv
    split = up.shape[1]
    options = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation}
    out = F.conv3d(up, conv.weight[:, :split], conv.bias, **options) + \
        F.conv3d(skip, conv.weight[:, split:], None, **options)
    out = block.lrelu(block.norm1(out))
    return block.lrelu(block.norm2(block.conv2(out)))


class Decoder(nn.Module):
    """Up-sampling stages (deepest first) and 1x1x1 output heads (`heads[j]` at level j).

    `features` are the encoder's widths (the skips); `decoder_features` the decoder's own widths
    per level (default: the same), whose last entry is the bottleneck and must equal the
    encoder's. In training mode with `deep_supervision` = d it returns [full-resolution logits,
    level 1, ..., level d]; in eval mode (and when d = 0) only the full-resolution logits, so an
    export traces plain logits.
    """

    def __init__(self, features: Sequence[int], strides: Sequence[int], out_channels: int, kernel_size: int = 3,
                 deep_supervision: int = 0, decoder_features: Sequence[int] | None = None) -> None:
        super().__init__()
        features = tuple(int(f) for f in features)
        widths = features if decoder_features is None else tuple(int(f) for f in decoder_features)
        if len(widths) != len(features) or widths[-1] != features[-1]:
            raise ValueError(f"decoder_features={widths}: need one width per level ending with the bottleneck's "
                             f"{features[-1]}")
        if not 0 <= deep_supervision <= max(0, len(features) - 2):
            raise ValueError(f"deep_supervision={deep_supervision}: at most {len(features) - 2} "
                             f"for {len(features)} levels")
        self.deep_supervision = deep_supervision
        self.stages = nn.ModuleList(
            up_stage(widths[i + 1], features[i], widths[i], kernel_size, int(strides[i + 1]))
            for i in reversed(range(len(features) - 1))
        )
        self.heads = nn.ModuleList(UnetOutBlock(3, widths[j], out_channels) for j in range(deep_supervision + 1))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x = features[-1]
        decoded = []
        for stage, skip in zip(self.stages, reversed(features[:-1]), strict=True):
            frozen = self.training and torch.is_grad_enabled() and not skip.requires_grad
            x = stage_with_frozen_skip(cast(UnetUpBlock, stage), x, skip) if frozen else stage(x, skip)
            decoded.append(x)
        decoded.reverse()  # decoded[j] is at level j: full resolution first
        logits = self.heads[0](decoded[0])
        if not self.training or self.deep_supervision == 0:
            return logits
        return [logits] + [self.heads[j](decoded[j]) for j in range(1, self.deep_supervision + 1)]


class UNet(nn.Module):
    """Encoder + decoder: the nnU-Net-style U-Net, and (fewer levels) the truncated U-Net."""

    def __init__(self, encoder: Encoder, decoder: Decoder, truncated_at: int | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.truncated_at = truncated_at

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.decoder(self.encoder(x))
