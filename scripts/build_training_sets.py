"""Write the training folders of the default models (issue 11) under runs/default_models/.

    python scripts/build_training_sets.py MODEL [--shared ../shared/data]   (MODEL: see BUILDERS)

The folders hold derived data of licensed images (IRCAD, MosMed: non-commercial, no derivatives):
they stay local, are never committed, and are rebuilt from ../shared/data by this script.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from covseg.training import default_models

ROOT = Path(__file__).resolve().parents[1]
# infection 1.2.0's cases (dependent-density phantoms, dense ground glass); later sets vary the draws
_infection_dense = partial(default_models.build_infection_training_set, dependent_phantoms=6,
                           dense_ground_glass=True)
BUILDERS = {
    "lung": default_models.build_lung_training_set,
    "infection": default_models.build_infection_training_set,
    # experiment (not shipped): the same cases plus phantoms with the dependent density band of normal lung
    "infection_dependent": partial(default_models.build_infection_training_set, dependent_phantoms=6),
    "infection_dense": _infection_dense,
    # infection 1.3.0: infection_dense with 10 lesion draws per real CT instead of 4, so that real lung
    # texture is in more of the training patches
    "infection_more_real": partial(_infection_dense, real_variants=10),
    # experiment (docs/experiments/infection_more_real, second leg): sixteen fresh lesion draws per real CT
    # and fresh phantoms (another seed)
    "infection_more_real2": partial(_infection_dense, real_variants=16, seed=310),
    # experiment (docs/experiments/infection_faint): infection_more_real plus four draws per real CT of many
    # small, faint ground-glass lesions
    "infection_faint": partial(_infection_dense, real_variants=10, faint_variants=4),
    # the liver reference's inspection sheets are kept beside the lungs'
    "liver": partial(default_models.build_liver_training_set, sheets_dir=ROOT / "docs" / "inspection"),
    # liver 1.1.0: the same cases plus phantoms in the portal venous phase (enhanced heart, vessels, kidneys)
    "liver_enhanced": partial(default_models.build_liver_training_set, sheets_dir=ROOT / "docs" / "inspection",
                              enhanced_phantoms=6),
    # liver 1.2.0: liver_enhanced plus the chest CT of lungdx_a0001 (heart above the liver is background)
    "liver_chest": partial(default_models.build_liver_training_set, sheets_dir=ROOT / "docs" / "inspection",
                           enhanced_phantoms=6, chest_cases=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(BUILDERS))
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or ROOT / "runs" / "default_models" / f"{args.model}_train"
    records = BUILDERS[args.model](args.shared, out)
    print(f"{len(records)} cases written to {out}")


if __name__ == "__main__":
    main()
