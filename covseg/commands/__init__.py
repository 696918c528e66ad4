"""CLI command groups, one module each, discovered by `covseg.cli`.

Each module defines `register(app: typer.Typer) -> None` and an integer `ORDER` (position in
--help). Modules import only typer and the standard library at import time; heavy imports
(SimpleITK, onnxruntime, torch) go inside the command functions so `covseg --help` and
`covseg infer` start fast and an inference-only install never needs torch.
"""
