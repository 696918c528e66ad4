#!/usr/bin/env bash
# Set up covseg (scripts/setup.sh) and run `covseg infer` with the shipped default models on the
# synthetic sample study; outputs go to runs/demo (label map, DICOM SEG, report, preview).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
covseg models list
covseg infer sample_data/covid_phantom_seed4/dicom --out runs/demo --overwrite
echo "Open runs/demo/preview.png; the numbers are in runs/demo/report.json."
