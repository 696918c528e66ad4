"""Loss of paper 000 / nnU-Net: Dice + cross-entropy, summed over deep-supervision outputs with
weights halving per level and normalised to sum 1 (MONAI DiceCELoss and DeepSupervisionLoss)."""

from __future__ import annotations

from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch import nn

from covseg.training.config import Config


def deep_supervision_weights(outputs: int) -> list[float]:
    """1, 1/2, 1/4, ... normalised: full resolution counts most, every level adds a little."""
    raw = [0.5**level for level in range(outputs)]
    return [w / sum(raw) for w in raw]


def make_loss(config: Config) -> nn.Module:
    """Loss taking (logits or [logits, deep-supervision outputs...], target (N, 1, z, y, x))."""
    if config.schedule.loss == "ce":
        base: nn.Module = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.0, lambda_ce=1.0)
    else:
        # batch Dice over foreground classes (nnU-Net's default for 3D full resolution)
        base = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True,
                          smooth_nr=1e-5, smooth_dr=1e-5)
    return DeepSupervisionLoss(base, weights=deep_supervision_weights(config.network.deep_supervision + 1))  # type: ignore[arg-type]
