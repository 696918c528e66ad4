"""The layout of DESIGN.md section 1 installs as one `covseg` package, and stays honest."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib

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
