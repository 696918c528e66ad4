#!/usr/bin/env bash
# Rebuild the shipped default models from ../shared/data (issue 11): training sets, training, export,
# evaluation through `covseg infer`, metrics recorded into the checkpoints, final export with model
# cards. About 3.5 hours on 2 CPU cores. Every training step resumes (--resume) if interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
R=runs/default_models
LICENCE_REAL="research use only, non-commercial: 3D-IRCADb CC BY-NC-ND 3.0"
LICENCE_COVID="research use only, non-commercial: 3D-IRCADb and MosMedData CC BY-NC-ND 3.0"

[ -f $R/lung_train/cases.json ] || python scripts/build_training_sets.py lung
[ -f $R/infection_train/cases.json ] || python scripts/build_training_sets.py infection
[ -f $R/liver_train/cases.json ] || python scripts/build_training_sets.py liver
[ -f $R/liver_enhanced_train/cases.json ] || python scripts/build_training_sets.py liver_enhanced
[ -f $R/liver_chest_train/cases.json ] || python scripts/build_training_sets.py liver_chest

covseg train --config training/recipes/default_lung.toml --out $R/lung_run --resume
covseg train --config training/recipes/default_infection_pretrain.toml --out $R/infection_pretrain --resume
# The shipped infection model was trained in legs (24, 40, 100 epochs); a resumed leg restarts the poly
# learning rate on its new length, so the legs are kept to reproduce it.
for epochs in 24 40 100; do
  covseg train --config training/recipes/default_infection.toml --out $R/infection_run --resume --epochs $epochs
done
covseg train --config training/recipes/default_liver_pretrain.toml --out $R/liver_pretrain --resume
covseg train --config training/recipes/default_liver.toml --out $R/liver_run --resume
# liver 1.1.0: 1.0.0 trained further with phantoms in the portal venous phase.
covseg train --config training/recipes/default_liver_enhanced.toml --out $R/liver_enhanced_run --resume

recover_from_package() {  # package run: the package just exported, as the run's first checkpoint (once)
  [ -f $2/checkpoints/last/model.safetensors ] || python -c "
from pathlib import Path
from covseg.training.package_weights import checkpoint_from_package
checkpoint_from_package(Path('covseg/models/$1'), Path('$2/checkpoints/last'))"
}
export_model() {  # name checkpoint licence version [task]
  covseg export "$2" --out covseg/models/$1 --name $1 --version $4 --task ${5:-$1} --exporter torchscript \
    --data-licence "$3" --overwrite
}
export_model lung $R/lung_run/checkpoints/last "$LICENCE_REAL" 1.0.1
export_model infection $R/infection_run/checkpoints/last "$LICENCE_COVID" 1.1.0
export_model liver $R/liver_enhanced_run/checkpoints/last "$LICENCE_REAL" 1.1.0
# liver 1.2.0: 1.1.0 recovered from the package just exported and trained to epoch 48 with the chest CT of
# lungdx_a0001 added (heart above the liver as background; docs/evaluation/liver step 5, ~18 min).
LICENCE_LIVER="research use only, non-commercial: 3D-IRCADb CC BY-NC-ND 3.0; lungdx_a0001 CC BY 4.0"
recover_from_package liver $R/liver_chest_run
covseg train --config training/recipes/default_liver_chest.toml --out $R/liver_chest_run --resume --epochs 48
export_model liver $R/liver_chest_run/checkpoints/last "$LICENCE_LIVER" 1.2.0
# infection 1.2.0: 1.1.0 recovered from the package just exported (as it was made) and trained to epoch 120
# with dense ground glass and dependent-density phantoms (docs/experiments/infection_dense_ggo, ~10 min).
[ -f $R/infection_dense_train/cases.json ] || python scripts/build_training_sets.py infection_dense
recover_from_package infection $R/infection_dense_run
covseg train --config training/recipes/default_infection_dense.toml --out $R/infection_dense_run --resume \
  --epochs 120
export_model infection $R/infection_dense_run/checkpoints/last "$LICENCE_COVID" 1.2.0
# infection 1.3.0: 1.2.0 recovered from the package just exported and trained to epoch 200 with each real CT
# drawn with lesions ten times instead of four (docs/experiments/infection_more_real, ~38 min).
[ -f $R/infection_more_real_train/cases.json ] || python scripts/build_training_sets.py infection_more_real
recover_from_package infection $R/infection_more_real_run
covseg train --config training/recipes/default_infection_more_real.toml --out $R/infection_more_real_run --resume \
  --epochs 200
export_model infection $R/infection_more_real_run/checkpoints/last "$LICENCE_COVID" 1.3.0
# Compact lung (seed 003): truncate the lung model at k = 3, half-width decoder, fine-tune (~10 min).
[ -f $R/lung_compact_k3_run/checkpoints/last/model.safetensors ] || \
  covseg export $R/lung_run/checkpoints/last --out $R/lung-compact-k3 --name lung-compact --task lung \
    --truncate 3 --decoder-width 0.5 --finetune training/recipes/default_lung_compact.toml \
    --work-dir $R/lung_compact_k3_run --exporter torchscript --overwrite
# Compact infection 1.1.0 (seed 003): the dedicated encoder of infection 1.3.0 truncated at k = 3, half-width
# decoder, 40 epochs on 1.3.0's training set (~19 min; docs/experiments/compacts_from_defaults). 1.0.0 was made
# the same way from 1.1.0 (infection_run) with default_infection_compact.toml on infection_train.
[ -f $R/infection_compact_more_real_run/checkpoints/last/model.safetensors ] || \
  covseg export $R/infection_more_real_run/checkpoints/last --out $R/infection-compact --name infection-compact \
    --task infection --truncate 3 --decoder-width 0.5 --finetune training/recipes/default_infection_compact_more_real.toml \
    --work-dir $R/infection_compact_more_real_run --exporter torchscript --overwrite
# Compact liver 1.1.0 (seed 003): liver 1.1.0 truncated at k = 3, half-width decoder, 24 epochs (~11 min).
# (1.0.0 was made the same way from liver_run with default_liver_compact.toml.)
[ -f $R/liver_compact_enhanced_run/checkpoints/last/model.safetensors ] || \
  covseg export $R/liver_enhanced_run/checkpoints/last --out $R/liver-compact --name liver-compact --task liver \
    --truncate 3 --decoder-width 0.5 --finetune training/recipes/default_liver_compact_enhanced.toml \
    --work-dir $R/liver_compact_enhanced_run --exporter torchscript --overwrite

python scripts/evaluate_default_models.py lung --record $R/lung_run/checkpoints/last
python scripts/evaluate_default_models.py lung --models $R --package lung-compact-k3 \
  --out docs/evaluation/lung-compact --record $R/lung_compact_k3_run/checkpoints/last
python scripts/evaluate_default_models.py infection --record $R/infection_more_real_run/checkpoints/last
python scripts/evaluate_default_models.py infection --models $R --package infection-compact \
  --out docs/evaluation/infection-compact --record $R/infection_compact_more_real_run/checkpoints/last
python scripts/evaluate_default_models.py slices --record $R/infection_more_real_run/checkpoints/last
python scripts/evaluate_default_models.py slices --models $R --package infection-compact \
  --out docs/evaluation/infection-compact/slices --record $R/infection_compact_more_real_run/checkpoints/last
python scripts/evaluate_default_models.py liver --record $R/liver_chest_run/checkpoints/last
# Same patient, split by slab (docs/evaluation/liver_same_patient, ~15 min): liver 1.2.0 (liver_chest_run).
# It rewrites README.md there: the reading and 1.1.0's table under the tables were added by hand after the run.
python scripts/liver_slab_split.py
python scripts/evaluate_default_models.py liver --models $R --package liver-compact \
  --out docs/evaluation/liver-compact --record $R/liver_compact_enhanced_run/checkpoints/last

# Export again so that model.json, the ONNX metadata and MODEL_CARD.md carry the measured metrics.
export_model lung $R/lung_run/checkpoints/last "$LICENCE_REAL" 1.0.1
export_model infection $R/infection_more_real_run/checkpoints/last "$LICENCE_COVID" 1.3.0
export_model lung-compact $R/lung_compact_k3_run/checkpoints/last "$LICENCE_REAL" 1.0.1 lung
export_model infection-compact $R/infection_compact_more_real_run/checkpoints/last "$LICENCE_COVID" 1.1.0 infection
export_model liver $R/liver_chest_run/checkpoints/last "$LICENCE_LIVER" 1.2.0
export_model liver-compact $R/liver_compact_enhanced_run/checkpoints/last "$LICENCE_REAL" 1.1.0 liver
covseg models list
