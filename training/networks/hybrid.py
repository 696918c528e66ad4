"""Hybrid-encoder U-Net with Selective Fusion (paper 000 section 3.5, equations (1)-(6)).

Two encoders of identical architecture: the dedicated encoder (random init, trained) and the
adapted encoder (pre-trained, frozen by the `hybrid` strategy). A Selective Fusion unit merges
their features at every skip level and at the bottleneck; one decoder reads the fused features.

Reading of the equations (the seed text lost some symbols, so this is stated, not guessed away):
- (2) Xf = Xde + Xad;  (3) s = global average pool of Xf over the three spatial axes;
- (4) z = ReLU(W s), W in R^{d x C}, d = max(C // r, min_channels), r = 16 (paper), floor 8.
  SKNet [33] puts a batch norm before the ReLU; we leave it out because the paper's batch is 2
  (batch statistics of 2 vectors are noise and batch 1 is undefined) and the equation as
  printed shows no norm. No bias, as printed.
- (5) a = e^{Az} / (e^{Az} + e^{Bz}), b = e^{Bz} / (...): a softmax across the two branches,
  per channel, with A, B in R^{C x d} (printed as C/r x C, which cannot multiply z; the
  shape that yields per-channel attention is C x d).
- (6) Xsf = a * Xde + b * Xad (the outer operator of (6) is unreadable in the seed; identity).
"""

from __future__ import annotations

import torch
from torch import nn

from covseg.training.networks.unet import Decoder, Encoder


class SelectiveFusion(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, min_channels: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, min_channels)
        self.squeeze = nn.Linear(channels, hidden, bias=False)  # W of eq (4)
        self.to_dedicated = nn.Linear(hidden, channels, bias=False)  # A of eq (5)
        self.to_adapted = nn.Linear(hidden, channels, bias=False)  # B of eq (5)

    def forward(self, dedicated: torch.Tensor, adapted: torch.Tensor) -> torch.Tensor:
        fused = dedicated + adapted  # (2)
        s = fused.mean(dim=(2, 3, 4))  # (3)
        z = torch.relu(self.squeeze(s))  # (4)
        logits = torch.stack((self.to_dedicated(z), self.to_adapted(z)), dim=1)
        weights = torch.softmax(logits, dim=1)  # (5): across the two branches
        a = weights[:, 0, :, None, None, None]
        b = weights[:, 1, :, None, None, None]
        return a * dedicated + b * adapted  # (6)


class HybridUNet(nn.Module):
    def __init__(self, dedicated: Encoder, adapted: Encoder, decoder: Decoder, reduction: int = 16,
                 min_channels: int = 8) -> None:
        super().__init__()
        if dedicated.features != adapted.features:
            raise ValueError(f"encoders differ: {dedicated.features} vs {adapted.features}")
        self.dedicated = dedicated
        self.adapted = adapted
        self.fusion = nn.ModuleList(SelectiveFusion(c, reduction, min_channels) for c in dedicated.features)
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        fused = [unit(de, ad) for unit, de, ad in zip(self.fusion, self.dedicated(x), self.adapted(x), strict=True)]
        return self.decoder(fused)
