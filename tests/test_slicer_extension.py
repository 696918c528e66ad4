"""The 3D Slicer extension: static checks here, and its library against slicer-core's real MRML.

slicer-core lives in its own environment (.venv-slicer, made by scripts/setup_slicer.sh) because
its `slicer` import name clashes with an unrelated PyPI package and it pins its own VTK; the MRML
tests run there in a subprocess and call the real `covseg infer` of this environment.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import REPO

EXTENSION = REPO / "slicer_extension"
MODULE = EXTENSION / "CovSeg"
SLICER_PYTHON = REPO / ".venv-slicer" / "bin" / "python"


def _module_tree() -> ast.Module:
    return ast.parse((MODULE / "CovSeg.py").read_text())


def test_module_defines_the_four_classes_with_their_bases() -> None:
    bases = {node.name: {b.id for b in node.bases if isinstance(b, ast.Name)}
             for node in _module_tree().body if isinstance(node, ast.ClassDef)}
    assert "ScriptedLoadableModule" in bases["CovSeg"]
    assert "ScriptedLoadableModuleWidget" in bases["CovSegWidget"]
    assert "ScriptedLoadableModuleLogic" in bases["CovSegLogic"]
    assert "ScriptedLoadableModuleTest" in bases["CovSegTest"]


def test_module_file_stays_thin() -> None:
    assert len((MODULE / "CovSeg.py").read_text().splitlines()) < 260


def test_cmake_lists_every_module_file() -> None:
    cmake = (MODULE / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "CovSeg")
    needed = [p for p in MODULE.rglob("*") if p.is_file() and "Testing" not in p.parts
              and p.name != "CMakeLists.txt" and "__pycache__" not in p.parts]
    missing = [str(p.relative_to(MODULE)) for p in needed if str(p.relative_to(MODULE)) not in cmake]
    assert not missing, f"not listed in CovSeg/CMakeLists.txt: {missing}"
    listed = [line.strip() for line in cmake.splitlines() if line.strip().endswith((".py", ".png", ".ui", ".txt"))]
    absent = [name for name in listed if not (MODULE / name).exists()]
    assert not absent, f"listed but missing: {absent}"
    top = (EXTENSION / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                "add_subdirectory(CovSeg)", "Slicer_EXTENSION_GENERATE_CONFIG", "Slicer_EXTENSION_CPACK"):
        assert key in top


def test_every_widget_the_module_uses_is_in_the_ui_file() -> None:
    root = ET.parse(MODULE / "Resources" / "UI" / "CovSeg.ui").getroot()
    names = {widget.get("name") for widget in root.iter("widget")}
    used = {node.attr for node in ast.walk(_module_tree())
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"}
    assert used and used <= names, used - names
    combos = {w.get("name") for w in root.iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    slot = "setMRMLScene(vtkMRMLScene*)"
    wired = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("slot") == slot}
    assert combos <= wired


@pytest.mark.slow
def test_library_against_slicer_core(tmp_path: Path) -> None:
    if not SLICER_PYTHON.exists():
        pytest.skip("no .venv-slicer: run scripts/setup_slicer.sh")
    from model_factory import make_package

    study = REPO / "sample_data" / "covid_phantom_seed4" / "image.nii.gz"
    truth = REPO / "sample_data" / "covid_phantom_seed4" / "labels.nii.gz"
    if not study.exists():
        pytest.skip("sample study missing")
    packages = [str(make_package(tmp_path / "models", kind)) for kind in ("lung", "infection")]
    env = {**os.environ, "COVSEG_LAUNCHER": json.dumps([sys.executable, "-m", "covseg"]),
           "COVSEG_STUDY": str(study), "COVSEG_TRUTH": str(truth), "COVSEG_MODELS": json.dumps(packages),
           "QT_QPA_PLATFORM": "offscreen", "VTK_DEFAULT_OPENGL_WINDOW": "vtkEGLRenderWindow"}
    result = subprocess.run([str(SLICER_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(MODULE / "Testing" / "Python"), "--basetemp", str(tmp_path / "slicer")],
                            capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1], result.stdout[-2000:]
