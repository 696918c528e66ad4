#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite except GPU tests, then lint and type-check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ -f scripts/setup_slicer.sh ]; then bash scripts/setup_slicer.sh; fi
ruff check covseg engine training export tests benchmarks slicer_extension scripts
mypy covseg engine training export
pytest -m "not gpu" -n 2 --dist loadgroup --durations=15
