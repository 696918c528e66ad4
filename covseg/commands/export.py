"""`covseg export CHECKPOINT --out PACKAGE`: a training checkpoint to a verified ONNX model package.

Needs the `export` extra (torch, onnx); torch and the exporter load inside the command only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ORDER = 60
TASKS = ("lung", "infection", "liver")
EXPORTERS = ("dynamo", "torchscript")


def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="Training checkpoint folder (config.json + model.safetensors).")],
    out: Annotated[Path, typer.Option("--out", help="Package folder to create (variants go beside it).")],
    name: Annotated[str | None, typer.Option(help="Package name (default: TASK-CHECKPOINTNAME).")] = None,
    version: Annotated[str, typer.Option(help="Package version.")] = "1.0.0",
    task: Annotated[str | None, typer.Option(help="lung, infection or liver (default: from the classes).")] = None,
    head: Annotated[str | None, typer.Option(help="Multi-head network: the head (decoder) to export.")] = None,
    truncate: Annotated[int | None, typer.Option(help="Keep encoder levels 0..K-1 (seed 003 truncation).")] = None,
    truncate_convs: Annotated[int | None, typer.Option(help="With --truncate: convolutions kept in level K-1 "
                                                             "(seed 003's fine cutoff; default all).")] = None,
    decoder_width: Annotated[float | None, typer.Option(help="With --truncate: decoder widths as a fraction of "
                                                             "the encoder's (0.5 halves them; default: the "
                                                             "recipe's, else 1).")] = None,
    finetune: Annotated[Path | None, typer.Option(help="With --truncate: training configuration to fine-tune "
                                                       "the truncated model with.")] = None,
    allow_untrained: Annotated[bool, typer.Option(help="With --truncate and no --finetune: export the "
                                                       "shortened decoder untrained.")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write OUT-fp16 (float16 weights, float32 IO).")] = False,
    optimize: Annotated[bool, typer.Option("--optimize", help="Also write OUT-ort-optimized (ONNX Runtime "
                                                              "graph optimisations, CPU).")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 17).")] = 17,
    tolerance: Annotated[float, typer.Option(help="Largest allowed |logit| difference ONNX vs PyTorch.")] = 1e-3,
    parity_data: Annotated[Path | None, typer.Option(help="CT file (NIfTI/NRRD/MHA) whose central window "
                                                          "is a parity input (default: the phantom).")] = None,
    exporter: Annotated[str, typer.Option(help="dynamo (torch.export) or torchscript (fallback).")] = "dynamo",
    data_licence: Annotated[str | None, typer.Option(help="Licence of the training data set (dataset "
                                                          "checkpoints; unknown counts as non-commercial).")] = None,
    work_dir: Annotated[Path | None, typer.Option(help="Keep the --finetune training run here.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Two-class models: the probability above which a "
                                                  "voxel is foreground (default: argmax, 0.5); choose it on "
                                                  "validation data.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing package folder.")] = False,
) -> None:
    """Export a checkpoint to an ONNX model package, with parity checked against PyTorch."""
    from covseg.errors import InputError

    if task is not None and task not in TASKS:
        raise InputError(f"--task {task!r}: choose one of {', '.join(TASKS)}")
    if exporter not in EXPORTERS:
        raise InputError(f"--exporter {exporter!r}: choose one of {', '.join(EXPORTERS)}")
    if not checkpoint.is_dir():
        raise InputError(f"{checkpoint}: not a checkpoint folder")
    from covseg.export.checkpoint import Identity, export_checkpoint
    from covseg.export.exporter import ExportOptions

    options = ExportOptions(opset=opset, exporter=exporter, tolerance=tolerance, fp16=fp16, optimize=optimize,
                            parity_data=parity_data, overwrite=overwrite)
    if threshold is not None:
        from covseg.engine.decision import check_threshold

        try:
            check_threshold(threshold, "--threshold")
        except ValueError as error:
            raise InputError(str(error)) from None
    identity = Identity(name=name, version=version, task=task, head=head, data_licence=data_licence,
                        threshold=threshold)
    result = export_checkpoint(checkpoint, out, identity, options, truncate=truncate, truncate_convs=truncate_convs,
                               decoder_width=decoder_width, finetune=finetune, allow_untrained=allow_untrained,
                               work_dir=work_dir)
    for key, folder in result.packages.items():
        meta = result.metadata[key]
        parity, net = meta.get("parity") or {}, meta["network"]
        diff = parity.get("max_abs_logit_diff")
        agreement = parity.get("label_agreement")
        measured = (f"max |logit diff| {diff:.3g}, label agreement {agreement:.6f} on {parity.get('inputs')}"
                    if diff is not None else f"parity not measured ({parity.get('reason')})")
        typer.echo(f"{folder}: {meta['name']} {meta['version']} ({key}); {measured}; "
                   f"{net['parameters']:,} parameters, {net['macs_per_window'] / 1e9:.3g} GMAC per window, "
                   f"{net.get('cpu_seconds_per_window', float('nan')):.3g} s per window (CPU ORT, 2 threads)")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
