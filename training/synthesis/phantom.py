"""A synthetic chest CT with exact ground truth: `make_phantom(PhantomConfig(...)) -> Phantom`.

Ground-truth label semantics (values only from covseg/labels.py; this is the one place they are defined
for phantoms):

- lung_left / lung_right: the lung space on the patient's left (LPS x > 0) / right (x < 0), including
  intrapulmonary vessels, airways and compressed (atelectatic) lung; excluding the mediastinum, hilar
  and main bronchi, and any lesion below.
- infection_ground_glass / infection_consolidation: voxels inside a COVID-19 lesion (lung tissue, not
  airway air), split per voxel by the final image HU at DEFAULT_CONSOLIDATION_THRESHOLD_HU (-300):
  below is ground glass, at or above is consolidation. That is the engine's rule, so a perfect
  infection mask gives a perfect split; vessels crossing ground glass therefore count as consolidation.
- liver: the liver below the right hemidiaphragm (not the great vessels, spine or, in the portal venous
  phase, the kidney beside it).
- lesion_nodule_tumour: solid nodules and tumours in the lung (override infection).
- lesion_pleural_effusion: pleural fluid, carved out of the lung space (overrides everything in the lung).
- background (0): everything else (air, wall, bones, mediastinum, heart, abdomen).

Mean HU of each label's interior lies within `config.LABEL_HU_BANDS` (`ENHANCED_LABEL_HU_BANDS` in
the portal venous phase, `contrast.py`). The image is HU rounded to
integers (as a scanner stores them) in float32; the same config always gives the same bytes, and the
anatomy depends only on the seed, so the same seed with and without lesions gives a matched pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from covseg.engine.volume import StudyInfo, Volume
from covseg.labels import DEFAULT_CONSOLIDATION_THRESHOLD_HU, Label
from covseg.training.synthesis import config as c
from covseg.training.synthesis.airways_vessels import draw_lung_trees
from covseg.training.synthesis.anatomy import build_anatomy
from covseg.training.synthesis.bones import add_bones
from covseg.training.synthesis.config import PhantomConfig
from covseg.training.synthesis.contrast import blood_hu, enhance
from covseg.training.synthesis.dependent import dependent_fill
from covseg.training.synthesis.effusion import add_effusion, effusion_hu
from covseg.training.synthesis.frame import Frame
from covseg.training.synthesis.imaging import scanner
from covseg.training.synthesis.lesions import LesionFields, LesionRecord, add_covid, add_nodules
from covseg.training.synthesis.sites import Sites

GENERATOR_VERSION = 1  # bump when the same config would draw a different phantom
LATER_OPTIONS = ("contrast", "dependent_density", "dense_ground_glass")  # not in PhantomConfig's repr (see there)


@dataclass(frozen=True, eq=False)
class Phantom:
    """The image (float32 HU) and its ground-truth labels (uint8) on one grid, plus what was drawn."""

    image: Volume
    labels: Volume
    config: PhantomConfig
    lesions: tuple[LesionRecord, ...]


def study_info(config: PhantomConfig) -> StudyInfo:
    """Deterministic, obviously synthetic identifiers for a phantom."""
    from pydicom.uid import generate_uid

    later = {name: getattr(config, name) for name in LATER_OPTIONS
             if getattr(config, name) != PhantomConfig.__dataclass_fields__[name].default}
    key = f"covseg-phantom-v{GENERATOR_VERSION}:{config!r}" + (f":{later}" if later else "")
    return StudyInfo(format="array", modality="CT", patient_id=f"PHANTOM-{config.seed}",
                     patient_name="COVSEG^PHANTOM", study_date="2020-04-01",
                     study_instance_uid=generate_uid(entropy_srcs=[key, "study"]),
                     series_instance_uid=generate_uid(entropy_srcs=[key, "series"]),
                     frame_of_reference_uid=generate_uid(entropy_srcs=[key, "frame"]),
                     study_description="covseg synthetic chest CT phantom",
                     series_description=f"covseg phantom seed {config.seed}", series_number=1)


def _lesions(config: PhantomConfig, frame: Frame, rng: np.random.Generator, lungs: np.ndarray,
             cavity: tuple[float, float, float]) -> tuple[LesionFields, list[LesionRecord]]:
    fields = LesionFields.empty(frame.shape)
    records: list[LesionRecord] = []
    if not {"covid", "nodule"} & set(config.lesions):
        return fields, records
    sites = Sites.from_lungs(frame, lungs, cavity)
    if "covid" in config.lesions and config.lesion_count > 0:
        maker = None
        if config.use_mosmed:
            from covseg.training.synthesis.mosmed_shapes import MosmedShapes

            maker = MosmedShapes(frame, rng, config.mosmed_dir)
        records += add_covid(frame, rng, sites, lungs, fields, config.lesion_count, config.lesion_scale, maker,
                             c.DENSE_GGO_FILL if config.dense_ground_glass else c.GGO_FILL)
    if "nodule" in config.lesions:
        records += add_nodules(frame, rng, sites, lungs, fields, max(1, config.lesion_count // 3),
                               config.lesion_scale)
    return fields, records


def make_phantom(config: PhantomConfig) -> Phantom:
    """Draw the phantom `config` describes (numpy + scipy only; seconds for 256x256x128)."""
    # Spawned children do not depend on how many are spawned: the sixth (contrast) and seventh (dependent
    # density) leave the first five streams, and so every phantom without those options, as they were.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence([GENERATOR_VERSION, config.seed]).spawn(7)]
    anatomy_rng, tree_rng, effusion_rng, lesion_rng, noise_rng, contrast_rng, dependent_rng = streams
    if config.use_mosmed and "covid" in config.lesions:
        from covseg.training.synthesis.mosmed_shapes import mask_files

        mask_files(config.mosmed_dir)  # fail before the work when the masks are absent
    frame = Frame.for_grid(config.size_xyz, config.spacing_xyz)
    anatomy = build_anatomy(frame, anatomy_rng)
    scale = float(contrast_rng.uniform(*c.CONTRAST_SCALE))
    if config.contrast == "portal":
        enhance(frame, anatomy, scale, contrast_rng)
    add_bones(frame, anatomy.params, anatomy.hu)
    hu = anatomy.hu
    trees = draw_lung_trees(frame, anatomy.lungs, tree_rng)
    lungs = anatomy.lungs
    for occupancy, value in ((trees.vessels, blood_hu(config.contrast, scale)), (trees.walls, c.SOFT_TISSUE_HU),
                             (trees.lumen, c.AIR_HU)):
        hu[lungs] += (occupancy[lungs] * (value - hu[lungs])).astype(np.float32)
    lumen = np.maximum(anatomy.airway_lumen, trees.lumen)

    effusion = np.zeros(frame.shape, dtype=bool)
    compressed = np.zeros(frame.shape, dtype=np.float32)
    records: list[LesionRecord] = []
    if "effusion" in config.lesions:
        effusion, compressed, records = add_effusion(frame, effusion_rng, lungs, config.lesion_scale)
        lungs = lungs & ~effusion
    cavity = (*anatomy.params.cavity_axes, anatomy.params.body_yc)
    fields, lesion_records = _lesions(config, frame, lesion_rng, lungs, cavity)
    records += lesion_records

    fill = np.maximum(fields.fill, compressed)
    if config.dependent_density:
        np.maximum(fill, dependent_fill(frame, dependent_rng, lungs), out=fill)
    fill = fill[lungs] * (1.0 - lumen[lungs])
    hu[lungs] += (fill * (c.FLUID_HU - hu[lungs])).astype(np.float32)
    solid = fields.solid > 0
    hu[solid] += fields.solid[solid] * (fields.solid_hu[solid] - hu[solid])
    hu[effusion] = effusion_hu(effusion_rng, (int(effusion.sum()),))

    image = scanner(hu, noise_rng, config.spacing_xyz, config.thickness_mm, config.noise_hu)
    np.clip(np.rint(image, out=image), c.HU_MIN, c.HU_MAX, out=image)
    labels = _labels(frame, image, lungs, anatomy.liver, fields, lumen, effusion)
    info = study_info(config)
    return Phantom(image=Volume(image, frame.geometry, info), labels=Volume(labels, frame.geometry, info),
                   config=config, lesions=tuple(records))


def _labels(frame: Frame, image: np.ndarray, lungs: np.ndarray, liver: np.ndarray, fields: LesionFields,
            lumen: np.ndarray, effusion: np.ndarray) -> np.ndarray:
    labels = np.zeros(frame.shape, dtype=np.uint8)
    labels[liver] = Label.LIVER
    left = (frame.x > 0)[None, None, :]
    labels[lungs & left] = Label.LUNG_LEFT
    labels[lungs & ~left] = Label.LUNG_RIGHT
    infection = fields.infection & lungs & (lumen < 0.5)
    consolidation = image >= DEFAULT_CONSOLIDATION_THRESHOLD_HU
    labels[infection & ~consolidation] = Label.INFECTION_GROUND_GLASS
    labels[infection & consolidation] = Label.INFECTION_CONSOLIDATION
    labels[fields.nodule & lungs] = Label.LESION_NODULE_TUMOUR
    labels[effusion] = Label.LESION_PLEURAL_EFFUSION
    return labels
