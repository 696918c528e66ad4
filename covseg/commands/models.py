"""`covseg models list | show NAME | verify PACKAGE`: the model registry at the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from covseg.engine.package import ModelPackage

ORDER = 30

models_app = typer.Typer(name="models", help="List, show and verify model packages.", no_args_is_help=True)

ModelsDir = Annotated[Path | None, typer.Option("--models-dir", help="Folder of packages instead of the shipped "
                                                "ones (also: COVSEG_MODELS_DIR).")]


def _console() -> Any:
    from rich.console import Console

    return Console(soft_wrap=False, width=160)


def _class_names(package: ModelPackage) -> dict[int, str]:
    """Class names as users should read them: a grouped class (one output split after segmentation, e.g.
    infection by HU) shows its members."""
    groups = (package.metadata.get("output") or {}).get("class_groups") or {}
    return {k: " + ".join(groups[str(k)]) if str(k) in groups else v for k, v in package.classes.items()}


def _fmt(values: Any) -> str:
    return " x ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


@models_app.command("list")
def list_command(models_dir: ModelsDir = None) -> None:
    """List the installed model packages (each verified: schema and sha256)."""
    from rich.table import Table

    from covseg.engine.package import ModelPackage
    from covseg.engine.registry import list_entries
    from covseg.engine.registry import models_dir as folder_of

    entries = list_entries(models_dir)
    console = _console()
    if not entries:
        console.print(f"No model packages in {folder_of(models_dir)}; run one with --model PATH.")
        return
    table = Table(title=f"Model packages in {folder_of(models_dir)}")
    for column in ("name", "version", "task", "classes", "spacing mm (x, y, z)", "patch (z, y, x)", "licence",
                   "status"):
        table.add_column(column)
    for folder, entry in entries:
        if isinstance(entry, ModelPackage):
            table.add_row(entry.name, entry.version, entry.task, ", ".join(_class_names(entry).values()),
                          _fmt(entry.spacing_mm), _fmt(entry.patch), entry.licence, "ok")
        else:
            table.add_row(folder.name, "", "", "", "", "", "", f"[red]invalid[/red]: {entry}")
    console.print(table)


def _metrics_table(metrics: tuple[dict[str, Any], ...]) -> Any:
    from rich.table import Table

    columns = sorted({key for metric in metrics for key in metric}, key=lambda k: (k != "data", k))
    table = Table(title="Metrics")
    for column in columns:
        table.add_column(column)
    for metric in metrics:
        table.add_row(*(str(metric.get(column, "")) for column in columns))
    return table


@models_app.command("show")
def show_command(
    name: Annotated[str, typer.Argument(help="Package name, task or folder.")],
    models_dir: ModelsDir = None,
) -> None:
    """Print a package's metadata: classes, input, network, provenance, metrics and licence."""
    from rich.table import Table

    from covseg.engine.registry import get_package

    package = get_package(name, models_dir)
    table = Table(title=f"{package.name} {package.version}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    rows = [
        ("task", package.task), ("classes", ", ".join(f"{k}: {v}" for k, v in _class_names(package).items())),
        ("spacing mm (x, y, z)", _fmt(package.spacing_mm)), ("patch (z, y, x)", _fmt(package.patch)),
        ("divisor (z, y, x)", _fmt(package.divisor)), ("crop", package.crop),
        ("normalization", json.dumps(package.normalization.to_json())),
        ("network", json.dumps(package.network.__dict__)),
        ("onnx", f"{package.onnx_path.name}, opset {package.opset}, sha256 {package.sha256}"),
        ("parity", json.dumps(package.parity)), ("provenance", json.dumps(package.provenance)),
        ("licence", package.licence), ("path", str(package.path)),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console = _console()
    console.print(table)
    if package.metrics:
        console.print(_metrics_table(package.metrics))


@models_app.command("verify")
def verify_command(
    package: Annotated[Path, typer.Argument(help="Package folder (or its model.json).")],
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or tensorrt.")] = "cpu",
) -> None:
    """Verify a package: hash, metadata, ONNX input/output, external data, one test inference."""
    from rich.table import Table

    from covseg.engine.runtime import verify_package

    result = verify_package(package, device=device)
    table = Table(title=f"{result.package.name} {result.package.version}: verified")
    table.add_column("check")
    table.add_column("result")
    for check, detail in result.checks:
        table.add_row(check, f"[green]ok[/green] {detail}")
    _console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
