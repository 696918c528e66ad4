#!/usr/bin/env bash
# Create .venv with everything covseg needs, CPU only. torch is installed first, pinned to the
# CPU build this machine carries (any other spelling pulls a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[cpu,train,export,batch,dev]"
