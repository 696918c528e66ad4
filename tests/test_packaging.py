"""The layout of DESIGN.md section 1 installs as one `covseg` package, and stays honest."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

MAPPED_ROOTS = {"covseg": "covseg", "covseg.engine": "engine", "covseg.training": "training",
                "covseg.export": "export"}


def _declared_packages() -> set[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return set(config["tool"]["setuptools"]["packages"])


def test_every_package_folder_is_declared() -> None:
    on_disk = set()
    for package, folder in MAPPED_ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            on_disk.add(".".join([package, *relative.parts]))
    assert on_disk == _declared_packages()


def test_subpackages_resolve_to_repository_folders() -> None:
    import covseg.engine
    import covseg.export
    import covseg.training

    assert covseg.engine.__file__ is not None and "engine" in covseg.engine.__file__
    assert covseg.training.__file__ is not None and "training" in covseg.training.__file__
    assert covseg.export.__file__ is not None and "export" in covseg.export.__file__


def _imports_of(folder: str) -> set[str]:
    found: set[str] = set()
    for path in (REPO / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
    return found


def test_imports_point_one_way() -> None:
    """covseg root and engine import nothing from training or export, and never torch."""
    for folder in ("covseg", "engine"):
        imports = _imports_of(folder)
        bad = {name for name in imports if name.split(".")[0] in ("torch", "monai")
               or name.startswith(("covseg.training", "covseg.export"))}
        if folder == "covseg":  # the CLI registers training/export commands lazily, inside functions
            bad = {name for name in bad if not name.startswith(("covseg.training", "covseg.export"))}
        assert not bad, f"{folder}/ imports {sorted(bad)}"


def test_cli_starts_without_torch() -> None:
    """`covseg --help` and importing the engine never load torch."""
    code = ("import sys; from covseg.cli import run; import covseg.engine; "
            "rc = run(['--help']); assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "infer" in result.stdout or "Usage" in result.stdout


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_environment(tmp_path: Path) -> None:
    """The built wheel carries every subpackage, the recipes, the shipped models and py.typed, and its
    `covseg` command works from a fresh virtual environment (dependencies lent from this one)."""
    import sysconfig
    import venv

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("covseg-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for required in ("covseg/py.typed", "covseg/engine/batch/__init__.py", "covseg/training/synthesis/phantom.py",
                     "covseg/export/__init__.py", "covseg/training/recipes/default_lung.toml"):
        assert required in names, f"{required} missing from {wheel.name}"
    shipped = [p.relative_to(REPO).as_posix() for p in (REPO / "covseg" / "models").glob("*/*") if p.is_file()]
    assert set(shipped) <= names, f"shipped model files missing from the wheel: {set(shipped) - names}"
    fresh = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(fresh)
    python = fresh / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    # Dependencies come from this environment's site-packages; covseg itself only from the fresh one.
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    located = subprocess.run([str(python), "-c", "import covseg; print(covseg.__file__)"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    assert Path(located).is_relative_to(fresh), located
    result = subprocess.run([str(python), "-m", "covseg", "models", "list"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_shipped_models_fit_the_wheel_budget() -> None:
    """Issue 11: all default model packages inside the wheel together at most 30 MB."""
    total = sum(path.stat().st_size for path in (REPO / "covseg" / "models").rglob("*") if path.is_file())
    assert total <= 30_000_000, f"shipped model packages take {total:,} bytes"
