"""Phantom configuration and the HU values of every synthetic tissue.

The tissue values are typical unenhanced chest-CT values; tests check the rendered phantom against
the bands in `LABEL_HU_BANDS`, which are the documented contract of the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from covseg.labels import DEFAULT_CONSOLIDATION_THRESHOLD_HU, Label

LESION_KINDS = ("covid", "nodule", "effusion")
COVID_PATTERNS = ("ground_glass", "consolidation", "mixed", "crazy_paving")

# Tissue HU (noise-free, before partial-volume blur).
AIR_HU = -1000.0
FAT_HU = -100.0
SKIN_HU = 30.0
MUSCLE_HU = 40.0
SOFT_TISSUE_HU = 40.0  # heart, blood, mediastinum, vessel walls and lumen (unenhanced blood ~40)
LUNG_HU = -850.0
FLUID_HU = 30.0  # what air spaces fill with in infection (exudate): GGO partly, consolidation almost fully
LIVER_HU = 60.0
SPLEEN_HU = 45.0
CANCELLOUS_BONE_HU = 320.0
CORTICAL_BONE_HU = 850.0
DISC_HU = 90.0
CSF_HU = 10.0
EFFUSION_HU = 10.0
HU_MIN, HU_MAX = -1024.0, 3071.0

# Portal venous phase (PhantomConfig.contrast = "portal"), 60-80 s after an iodinated bolus: the phase
# of most abdominal and many chest CTs (3D-IRCADb: liver 102-108 HU by its histogram mode). Blood in
# the heart, great vessels and pulmonary vessels is brighter than the liver, the myocardium, spleen
# and renal cortex enhance too: the bright neighbours a liver model must not take. The enhancement
# (value minus the unenhanced one) is scaled per phantom by a factor in CONTRAST_SCALE.
CONTRAST_PHASES = ("none", "portal")
ENHANCED_BLOOD_HU = 170.0
ENHANCED_MYOCARDIUM_HU = 110.0
ENHANCED_LIVER_HU = 110.0
ENHANCED_SPLEEN_HU = 120.0
ENHANCED_KIDNEY_HU = 170.0  # cortex and medulla together in the nephrographic blush
UNENHANCED_KIDNEY_HU = 30.0
CONTRAST_SCALE = (0.8, 1.2)

# Fraction of alveolar air replaced by fluid, per pattern: HU = base + fill * (FLUID_HU - base).
GGO_FILL = (0.2, 0.5)  # -850 -> about -670 ... -410 HU
# Opt-in (PhantomConfig.dense_ground_glass, insert_covid): ground glass up to ~-150 HU, the band between
# GGO_FILL and CONSOLIDATION_FILL where real COVID-19 slices lose most sensitivity (docs/experiments).
DENSE_GGO_FILL = (0.2, 0.8)  # -850 -> about -670 ... -150 HU
# Opt-in (insert_covid ggo_fill, the infection_faint training set): the faint end of GGO_FILL alone, for
# small early lesions that are barely denser than lung (the kind the evaluation's hardest case is made of).
FAINT_GGO_FILL = (0.15, 0.3)  # -850 -> about -720 ... -590 HU
CONSOLIDATION_FILL = (0.86, 0.98)  # -850 -> about -93 ... +13 HU
SEPTAL_FILL = 0.3  # extra fill on the reticular lines of crazy paving
NODULE_HU = (10.0, 50.0)

# Mean HU of each label's interior (one voxel away from its border), in the rendered image: the contract
# `tests/test_synthesis_phantom.py` checks. Infection sub-labels split per voxel at the threshold.
LABEL_HU_BANDS: dict[Label, tuple[float, float]] = {
    Label.LUNG_LEFT: (-900.0, -700.0),
    Label.LUNG_RIGHT: (-900.0, -700.0),
    Label.INFECTION_GROUND_GLASS: (-750.0, DEFAULT_CONSOLIDATION_THRESHOLD_HU),
    Label.INFECTION_CONSOLIDATION: (DEFAULT_CONSOLIDATION_THRESHOLD_HU, 60.0),
    Label.LIVER: (45.0, 75.0),
    Label.LESION_NODULE_TUMOUR: (0.0, 60.0),
    Label.LESION_PLEURAL_EFFUSION: (0.0, 20.0),
}
# The bands that change in the portal venous phase (the others stay).
ENHANCED_LABEL_HU_BANDS: dict[Label, tuple[float, float]] = {Label.LIVER: (80.0, 140.0)}


@dataclass(frozen=True)
class PhantomConfig:
    """Everything that determines a phantom; the same config gives the same bytes.

    size_xyz / spacing_xyz: grid in voxels and mm, (x, y, z). The anatomy is scaled to fill the field of
    view in-plane and to span lung apex to upper abdomen along z, whatever the grid.
    slice_thickness_mm: nominal reconstructed thickness (partial-volume blur along z); None = z spacing.
    lesions: kinds among "covid", "nodule", "effusion" (empty: healthy lungs).
    lesion_count: number of COVID-19 lesions (nodules: max(1, lesion_count // 3)).
    lesion_scale: multiplies lesion sizes (burden).
    use_mosmed: take COVID-19 lesion shapes from the MosMed masks in `mosmed_dir` (generation time only;
    CC BY-NC-ND 3.0: the masks are not redistributed, phantoms made with them are non-commercial).
    noise_hu: standard deviation of the correlated CT noise.
    contrast: "none" (unenhanced) or "portal" (portal venous phase: enhanced blood, liver, spleen,
    myocardium and kidneys; the kidneys are drawn in this phase only). The anatomy and lesions of a seed
    are the same in both phases.
    dependent_density: draw the denser band of normal lung along the posterior pleura of the lung bases
    (`dependent.py`), labelled lung: real CTs without disease have it.
    dense_ground_glass: ground glass drawn up to ~-150 HU (DENSE_GGO_FILL) instead of ~-410 (GGO_FILL).
    """

    seed: int = 0
    size_xyz: tuple[int, int, int] = (256, 256, 128)
    spacing_xyz: tuple[float, float, float] = (1.5, 1.5, 2.5)
    slice_thickness_mm: float | None = None
    lesions: tuple[str, ...] = ("covid",)
    lesion_count: int = 6
    lesion_scale: float = 1.0
    use_mosmed: bool = False
    mosmed_dir: Path | None = field(default=None, compare=True)
    noise_hu: float = 15.0
    # Options added after the committed sample: out of the repr, which seeds the phantom's UIDs, so that
    # phantoms without them keep their identifiers (phantom.study_info adds them when set).
    contrast: str = field(default="none", repr=False)
    dependent_density: bool = field(default=False, repr=False)
    dense_ground_glass: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.contrast not in CONTRAST_PHASES:
            raise ValueError(f"unknown contrast phase {self.contrast!r}; known: {', '.join(CONTRAST_PHASES)}")
        if len(self.size_xyz) != 3 or any(int(s) < 8 for s in self.size_xyz):
            raise ValueError(f"size_xyz needs three sizes of at least 8 voxels, got {self.size_xyz}")
        if len(self.spacing_xyz) != 3 or any(not s > 0 for s in self.spacing_xyz):
            raise ValueError(f"spacing_xyz needs three positive spacings, got {self.spacing_xyz}")
        unknown = [kind for kind in self.lesions if kind not in LESION_KINDS]
        if unknown:
            raise ValueError(f"unknown lesion kind {unknown[0]!r}; known: {', '.join(LESION_KINDS)}")
        if self.lesion_count < 0 or self.lesion_scale <= 0 or self.noise_hu < 0:
            raise ValueError(f"lesion_count, lesion_scale and noise_hu must be >= 0 (> 0 for scale): {self}")
        if self.slice_thickness_mm is not None and not self.slice_thickness_mm > 0:
            raise ValueError(f"slice_thickness_mm must be positive, got {self.slice_thickness_mm}")

    @property
    def thickness_mm(self) -> float:
        return float(self.slice_thickness_mm if self.slice_thickness_mm is not None else self.spacing_xyz[2])
