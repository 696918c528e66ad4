"""The registry of model packages: the defaults shipped in the wheel (covseg/models/<name>/) and
any folder a user names. Imports neither torch nor onnx; every package it returns went through
`load_package` (hash and schema verified).

Where the shipped packages are: the `models_dir` argument, else the environment variable
COVSEG_MODELS_DIR, else the `covseg.models` package folder. The registry works with none.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from covseg.engine.package import ModelPackage, load_package
from covseg.errors import ModelPackageError

MODELS_ENV = "COVSEG_MODELS_DIR"
TASK_ORDER = ("lung", "infection", "liver")  # cascade order: the lung box feeds the infection model
DEFAULT_TASKS = TASK_ORDER


def models_dir(directory: Path | str | None = None) -> Path:
    """The folder holding the shipped packages (see the module docstring)."""
    if directory is not None:
        return Path(directory)
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV])
    import covseg.models

    return Path(covseg.models.__file__).parent


def package_folders(directory: Path | str | None = None) -> list[Path]:
    """Sub-folders with a model.json, sorted by name."""
    root = models_dir(directory)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "model.json").is_file())


def list_entries(directory: Path | str | None = None) -> list[tuple[Path, ModelPackage | ModelPackageError]]:
    """Every package folder with its verified package or the error that refused it (for listings)."""
    entries: list[tuple[Path, ModelPackage | ModelPackageError]] = []
    for folder in package_folders(directory):
        try:
            entries.append((folder, load_package(folder)))
        except ModelPackageError as error:
            entries.append((folder, error))
    return entries


def list_packages(directory: Path | str | None = None) -> list[ModelPackage]:
    """The shipped packages, verified; a broken one raises its ModelPackageError."""
    packages = []
    for _, entry in list_entries(directory):
        if isinstance(entry, ModelPackageError):
            raise entry
        packages.append(entry)
    return packages


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _available(packages: Sequence[ModelPackage], directory: Path) -> str:
    if not packages:
        return f"none installed in {directory}; pass --model PATH"
    return "available: " + ", ".join(f"{p.name} ({p.task})" for p in packages)


def _shipped(directory: Path) -> tuple[list[ModelPackage], dict[str, ModelPackageError]]:
    """Valid packages, and the errors of broken ones by folder name (a broken package is refused
    when asked for, and does not hide the others)."""
    valid, broken = [], {}
    for folder, entry in list_entries(directory):
        if isinstance(entry, ModelPackageError):
            broken[folder.name] = entry
        else:
            valid.append(entry)
    return valid, broken


def _match(token: str, packages: Sequence[ModelPackage], directory: Path,
           broken: dict[str, ModelPackageError] | None = None) -> ModelPackage:
    """A package by name (or folder name), else the newest package of that task."""
    if broken and token in broken:
        raise broken[token]
    for package in packages:
        if token in (package.name, package.path.name):
            return package
    by_task = [p for p in packages if p.task == token]
    if by_task:
        # The package named after its task is that task's default (e.g. "lung" over "lung-compact").
        return max(by_task, key=lambda p: (p.name == token, _version_key(p.version)))
    raise ModelPackageError(f"unknown model {token!r}; {_available(packages, directory)}")


def get_package(name: str, directory: Path | str | None = None) -> ModelPackage:
    """A shipped package by name, folder name or task; or a package folder given as a path."""
    path = Path(name)
    if path.is_dir() or path.name == "model.json":
        return load_package(path)
    root = models_dir(directory)
    valid, broken = _shipped(root)
    return _match(name, valid, root, broken)


def _cascade_order(packages: Iterable[ModelPackage]) -> list[ModelPackage]:
    unique: dict[Path, ModelPackage] = {}
    for package in packages:
        unique.setdefault(package.path.resolve(), package)
    ordered = list(unique.values())
    rank = {task: i for i, task in enumerate(TASK_ORDER)}
    return sorted(ordered, key=lambda p: rank.get(p.task, len(rank)))  # stable for equal ranks


def resolve_models(spec: str | None, model_paths: Sequence[Path | str] = (), *,
                   directory: Path | str | None = None) -> list[ModelPackage]:
    """The packages a run uses, in cascade order (lung, infection, liver, others).

    spec: "--models lung,infection,liver", tokens are package names or tasks (a task picks the package
    named after it, else its newest shipped package). model_paths: "--model PATH" package folders.
    With neither, one shipped package per default task that has one.
    """
    root = models_dir(directory)
    chosen = [load_package(Path(p)) for p in model_paths]
    tokens = [t.strip() for t in (spec or "").split(",") if t.strip()]
    if tokens or not chosen:
        shipped, broken = _shipped(root)
        if tokens:
            chosen += [_match(token, shipped, root, broken) for token in tokens]
        else:
            chosen += [_match(task, shipped, root) for task in DEFAULT_TASKS if any(p.task == task for p in shipped)]
        if not chosen:
            raise ModelPackageError(f"no model to run: {_available(shipped, root)}")
    return _cascade_order(chosen)
