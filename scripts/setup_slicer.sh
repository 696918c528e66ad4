#!/usr/bin/env bash
# Create .venv-slicer with slicer-core (Slicer's Qt-free MRML libraries) for the Slicer extension tests,
# and the Mesa EGL libraries VTK needs to render offscreen. Separate from .venv: PyPI's unrelated
# `slicer` package shares the import name, and slicer-core pins its own vtk.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! ldconfig -p | grep -q libEGL_mesa; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null
  else
    echo "warning: Mesa EGL libraries missing; Slicer rendering tests will be skipped" >&2
  fi
fi
if [ ! -x .venv-slicer/bin/python ]; then
  "$PYTHON" -m venv .venv-slicer
fi
.venv-slicer/bin/python -m pip install -q --upgrade pip
.venv-slicer/bin/python -m pip install -q slicer-core==5.12.4.0 nibabel==5.4.2 PySide6-Essentials==6.12.0 pytest
# covseg itself, without dependencies: the Slicer library needs only its label table (stdlib only).
.venv-slicer/bin/python -m pip install -q --no-deps -e .
