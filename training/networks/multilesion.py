"""Multi-lesion network (paper 000 section 3.2, Med3D = seed 004): one shared encoder, one
decoder per source dataset, chosen by name at call time.

A batch comes from one dataset, so `forward(x, head=name)` runs only that dataset's decoder and
the others get no gradient (DDP therefore needs `find_unused_parameters=True`; loop.py sets it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from covseg.training.networks.unet import Decoder, Encoder


class MultiLesionUNet(nn.Module):
    def __init__(self, encoder: Encoder, decoders: dict[str, Decoder], default_head: str | None = None) -> None:
        super().__init__()
        if not decoders:
            raise ValueError("a multi-lesion network needs at least one decoder")
        self.encoder = encoder
        self.decoders = nn.ModuleDict(decoders)
        self.default_head = default_head or next(iter(decoders))

    @property
    def head_names(self) -> Sequence[str]:
        return tuple(self.decoders.keys())

    def forward(self, x: torch.Tensor, head: str | None = None) -> torch.Tensor | list[torch.Tensor]:
        name = head or self.default_head
        if name not in self.decoders:
            raise KeyError(f"unknown head {name!r}; this network has {', '.join(self.decoders)}")
        return self.decoders[name](self.encoder(x))
