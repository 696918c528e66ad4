"""Compact truncated models (seed 003, TruncatedTL) from a trained checkpoint.

`covseg export --truncate K` keeps the trained encoder levels 0..K-1, drops the deeper ones and
shortens the decoder to match. `--decoder-width F` also slims that (newly trained) decoder to F
times the encoder's widths, TransFusion's halving (seed 003's baseline) applied where a U-Net
spends its time: truncation alone keeps the full-resolution levels, which dominate the cost.
Building that network and loading the kept encoder weights is the training package's `truncated`
strategy (covseg.training.strategies.Truncated, every key and shape checked); fine-tuning is its
training loop (`covseg.training.loop.fit`). This module only wires them together for export:
- with `finetune=RECIPE` (a training configuration: data, schedule), the truncated network is
  fine-tuned from the checkpoint with strategy "truncated", cutoff K, and the fine-tuned weights
  are exported (their own validation Dice becomes the package's metric);
- without a recipe the shortened decoder has never been trained (its weights are random), so the
  export is refused unless `allow_untrained` is set, and then the package says so in
  provenance.truncation and carries no metrics (the full model's metrics do not apply to it).
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from covseg.errors import ModelPackageError


def _check_cutoff(config: Any, k: int, folder: Path) -> None:
    net = config.network
    if net.truncate_at is not None:
        raise ModelPackageError(f"checkpoint {folder} is already truncated at level {net.truncate_at}; "
                                "export it without --truncate")
    if not 2 <= k < len(net.features):
        raise ModelPackageError(f"--truncate {k}: checkpoint {folder} has {len(net.features)} levels; "
                                f"choose 2..{len(net.features) - 1} (levels kept)")


def _truncated_config(config: Any, folder: Path, k: int, convs: int | None, decoder_width: float | None) -> Any:
    network = config.network if decoder_width is None else replace(config.network, decoder_width=decoder_width)
    return replace(config, network=network, strategy=replace(config.strategy, name="truncated", pretrained=str(folder),
                                                             cutoff=k, cutoff_convs=convs))


def _untrained(folder: Path, k: int, convs: int | None, decoder_width: float | None, checkpoint: Any
               ) -> tuple[nn.Module, Any, dict[str, Any]]:
    from covseg.training.strategies import get_strategy

    config = checkpoint.config
    target = _truncated_config(config, folder, k, convs, decoder_width)
    prepared = get_strategy(target).prepare((config, checkpoint.model_state))
    state = {key: value for key, value in checkpoint.state.items() if key not in ("history", "metrics")}
    return prepared.model.eval(), replace(target, network=prepared.network), state


def _finetuned(folder: Path, k: int, convs: int | None, decoder_width: float | None, recipe: Path, work_dir: Path
               ) -> tuple[nn.Module, Any, dict[str, Any]]:
    from covseg.training.checkpoint import load_checkpoint
    from covseg.training.config import load_config
    from covseg.training.loop import fit

    config = _truncated_config(load_config(recipe), folder, k, convs, decoder_width)
    result = fit(config.validate(), out_dir=work_dir, resume=False)
    state = dict(load_checkpoint(result.checkpoint).state)
    return result.model.eval(), result.config, state


def truncated_model(folder: Path, k: int, *, convs: int | None = None, decoder_width: float | None = None,
                    finetune: Path | None = None, allow_untrained: bool = False, work_dir: Path | None = None
                    ) -> tuple[nn.Module, Any, dict[str, Any], dict[str, Any]]:
    """(network, configuration, training state, provenance extra) of the model truncated at K
    (`convs`: seed 003's fine cutoff, convolutions kept in level K-1; None keeps them all;
    `decoder_width`: the decoder's widths as a fraction of the encoder's; None keeps the recipe's)."""
    from covseg.training.checkpoint import load_checkpoint

    folder = Path(folder)
    checkpoint = load_checkpoint(folder)
    _check_cutoff(checkpoint.config, k, folder)
    if convs is not None and not 1 <= convs <= checkpoint.config.network.convs_per_level:
        raise ModelPackageError(f"--truncate-convs {convs}: choose 1..{checkpoint.config.network.convs_per_level}")
    if decoder_width is not None and not 0.0 < decoder_width <= 1.0:
        raise ModelPackageError(f"--decoder-width {decoder_width}: choose 0 < width <= 1 (0.5 halves the decoder)")
    if finetune is None and not allow_untrained:
        raise ModelPackageError(f"--truncate {k}: the shortened decoder of {folder} has not been trained; give "
                                "--finetune RECIPE (a training configuration) to fine-tune it, or --allow-untrained "
                                "to export it untrained")
    truncation: dict[str, Any] = {"cutoff": k, "cutoff_convs": convs,
                                  "source_levels": len(checkpoint.config.network.features),
                                  "source_checkpoint": str(folder)}
    if finetune is None:
        model, config, state = _untrained(folder, k, convs, decoder_width, checkpoint)
        truncation["decoder"] = "untrained (random initialisation; exported with --allow-untrained)"
    else:
        with contextlib.ExitStack() as stack:
            where = Path(work_dir) if work_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
            model, config, state = _finetuned(folder, k, convs, decoder_width, Path(finetune), where)
        truncation["decoder"] = f"fine-tuned with the truncated strategy ({state.get('epoch', 0)} epochs)"
        truncation["finetune_recipe"] = str(finetune)
        truncation["finetuned_checkpoint"] = str(Path(work_dir) / "checkpoints" / "last") if work_dir else None
    truncation["decoder_width"] = config.network.decoder_width
    return model, config, state, {"truncation": truncation}
