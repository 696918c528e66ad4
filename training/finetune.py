"""`covseg finetune`: from a shipped model (or a checkpoint) to a fine-tuned model, its evaluation
on the held-out cases of the site's dataset, and an exported package, in one command.

The source may be a training checkpoint folder, a model package folder, or the name of a shipped
package ("lung", "infection"). A package's weights come back from its ONNX graph
(`package_weights.checkpoint_from_package`, parity-checked) into OUT/source_checkpoint, so a
resumed run reuses them. The evaluation scores the cases the loop held out for validation (the
last `validation_cases` of the dataset), which the fine-tuning never trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from covseg.errors import InputError
from covseg.training.checkpoint import load_checkpoint
from covseg.training.config import Config, StrategyConfig


@dataclass(frozen=True)
class Source:
    config: Config
    folder: Path  # the checkpoint folder the strategy loads
    described: str  # what the user named, for messages and the report


def resolve_source(source: str | Path, out: Path) -> Source:
    """A checkpoint folder, a package folder, or a shipped package's name -> a checkpoint folder."""
    path = Path(source)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return Source(load_checkpoint(path).config, path, str(path))
    if (path / "model.json").is_file():
        package = path
    elif path.exists():
        raise InputError(f"{path}: neither a training checkpoint (config.json + model.safetensors) nor a model "
                         "package (model.json)")
    else:
        from covseg.engine.registry import get_package

        package = get_package(str(source)).path  # unknown names: ModelPackageError listing the shipped ones
    bundled = package / "checkpoint"
    if (bundled / "model.safetensors").is_file():
        return Source(load_checkpoint(bundled).config, bundled, str(package))
    from covseg.training.package_weights import checkpoint_from_package

    target = out / "source_checkpoint"
    sha = json.loads((package / "model.json").read_text(encoding="utf-8"))["onnx"].get("sha256")
    if not (target / "state.json").is_file() or \
            json.loads((target / "state.json").read_text()).get("package", {}).get("sha256") != sha:
        checkpoint_from_package(package, target)
    return Source(load_checkpoint(target).config, target, str(package))


def finetune_config(source: Source, data: Path, strategy: str, classes: tuple[str, ...], *, cutoff: int | None = None,
                    epochs: int | None = None, validation_cases: int | None = None) -> Config:
    """The source's data settings (spacing, normalisation) and network on the site's dataset."""
    base = source.config
    data_fields: dict[str, Any] = {"source": "dataset", "path": str(data), "classes": classes, "splits": None,
                                   "fold": None}
    if validation_cases is not None:
        data_fields["validation_cases"] = validation_cases
    cfg = replace(
        base, strategy=StrategyConfig(name=strategy, pretrained=str(source.folder), cutoff=cutoff),
        data=replace(base.data, **data_fields),
        network=replace(base.network, family="unet", heads=(), default_head=None, out_channels=len(classes),
                        truncate_at=None, truncate_convs=None),
        schedule=base.schedule if epochs is None else replace(base.schedule, epochs=epochs))
    return cfg.validate()


def held_out_ids(config: Config) -> list[str]:
    """The dataset cases the training loop validated on (and never trained on)."""
    from covseg.training.datasets import load_dataset

    ids = [c.id for c in load_dataset(str(config.data.path)).labelled()]
    n_val = min(config.data.validation_cases, len(ids) - 1)
    return ids[len(ids) - n_val:] if n_val > 0 else []


def trained_structures(classes: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """The structures a model with these training classes predicts (groups keep their members)."""
    from covseg.labels import label_value
    from covseg.training.data import CLASS_GROUPS

    return {name: CLASS_GROUPS.get(name) or (label_value(name),) for name in classes if name != "background"}


def evaluate_held_out(result: Any, out_dir: Path) -> Path | None:
    """DSC, NSD, HD95, ... of the fine-tuned model on the held-out cases -> out_dir/summary.md."""
    from covseg.training.datasets import load_dataset
    from covseg.training.evaluation import evaluate_volumes, write_evaluation
    from covseg.training.predictor import predict_case

    config = result.config
    ids = held_out_ids(config)
    if not ids:
        return None
    dataset = load_dataset(str(config.data.path))
    rows = []
    for case_id in ids:
        image, truth = dataset.case(case_id).load()
        prediction = predict_case(result, config, image)
        rows += evaluate_volumes(case_id, prediction, truth, labels=trained_structures(config.data.classes),
                                 nsd_tolerance_mm=config.evaluation.nsd_tolerance_mm, strategy=config.strategy.name)
    write_evaluation(rows, out_dir, title=f"Fine-tuned ({config.strategy.name}) on held-out cases of "
                                          f"{config.data.path}")
    return out_dir / "summary.md"


def export_finetuned(checkpoint: Path, out: Path, source: Source) -> Path:
    """The fine-tuned checkpoint as a verified model package (needs the `export` extra)."""
    try:
        from covseg.export.checkpoint import Identity, export_checkpoint
        from covseg.export.exporter import ExportOptions
    except ImportError as error:
        raise InputError(f"exporting needs the export extra (pip install 'covseg[export]'): {error}") from None
    name = f"{Path(source.described).name}-finetuned"
    result = export_checkpoint(checkpoint, out, Identity(name=name), ExportOptions(overwrite=True))
    return next(iter(result.packages.values()))
