"""In-memory training cases: image (normalised float32) and target (class indices) on one grid.

Cases come from the phantom generator (covseg.training.synthesis), from simple synthetic spheres
(fast, for tests), or from a dataset folder (covseg.training.datasets.load_dataset). Geometry
and intensities go through the engine's own code so that training sees what inference sees:
SimpleITK DICOMOrient to LPS, the engine's resampling (`engine.preprocess._resample_to`; label
maps go per class through the same linear resampling and an argmax, as nnU-Net resamples
segmentations) and the engine's `Normalization`. Only the dataset statistics that parametrise
the normalisation (foreground percentiles, mean, std) are computed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from covseg.engine.geometry import Geometry, array_to_sitk
from covseg.engine.package import Normalization
from covseg.engine.volume import Volume
from covseg.errors import InputError
from covseg.labels import INFECTION_LABELS, LUNG_LABELS, Label, label_value
from covseg.training.config import Config, DataConfig

CLASS_GROUPS: dict[str, tuple[int, ...]] = {
    "infection": tuple(int(v) for v in INFECTION_LABELS),
    "lungs": tuple(int(v) for v in LUNG_LABELS),
}
# Source datasets of multi-lesion pre-training on phantoms: head name -> (phantom lesion kind, class)
PHANTOM_SOURCES: dict[str, tuple[str, str]] = {
    "nodule": ("nodule", "lesion_nodule_tumour"),
    "effusion": ("effusion", "lesion_pleural_effusion"),
    "covid": ("covid", "infection"),
}


@dataclass
class Case:
    name: str
    image: np.ndarray  # (C, z, y, x) float32, normalised
    target: np.ndarray  # (z, y, x) uint8 class indices
    spacing_zyx: tuple[float, float, float]


def class_values(name: str) -> tuple[int, ...]:
    """covseg label values a training class stands for (a label name or a group)."""
    return CLASS_GROUPS.get(name) or (label_value(name),)


def to_classes(labels: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """covseg label map -> class indices (values not named by any class become background)."""
    out = np.zeros(labels.shape, dtype=np.uint8)
    for index, name in enumerate(classes):
        if index:
            out[np.isin(labels, class_values(name))] = index
    return out


def spheres_case(shape_zyx: Sequence[int], seed: int, spacing_zyx: Sequence[float]) -> tuple[Volume, Volume]:
    """A tiny synthetic chest: soft-tissue body, two lungs, a liver and spherical infections.
    For tests: fast, with known labels; the phantom generator is the realistic source."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1.0, 1.0, int(n)) for n in shape_zyx], indexing="ij")
    hu = np.full(tuple(shape_zyx), -1000.0, dtype=np.float32)
    labels = np.zeros(tuple(shape_zyx), dtype=np.uint8)
    hu[(x / 0.9) ** 2 + (y / 0.7) ** 2 < 1.0] = 40.0
    for side, label in ((-1, Label.LUNG_RIGHT), (1, Label.LUNG_LEFT)):
        lung = ((x - 0.4 * side) / 0.3) ** 2 + (y / 0.5) ** 2 + ((z - 0.2) / 0.7) ** 2 < 1.0
        hu[lung], labels[lung] = -850.0, int(label)
    liver = ((x + 0.3) / 0.4) ** 2 + (y / 0.4) ** 2 + ((z + 0.8) / 0.3) ** 2 < 1.0
    hu[liver], labels[liver] = 60.0, int(Label.LIVER)
    for _ in range(int(rng.integers(2, 4))):
        cx, cy, cz = rng.uniform(0.25, 0.55) * rng.choice([-1, 1]), rng.uniform(-0.3, 0.3), rng.uniform(-0.2, 0.5)
        sphere = ((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 < rng.uniform(0.12, 0.2) ** 2) & (labels > 0)
        solid = rng.random() < 0.5
        hu[sphere] = -100.0 if solid else -550.0
        labels[sphere] = int(Label.INFECTION_CONSOLIDATION if solid else Label.INFECTION_GROUND_GLASS)
    hu += rng.normal(0.0, 15.0, hu.shape).astype(np.float32)
    geometry = Geometry(size=tuple(int(v) for v in shape_zyx[::-1]),
                        spacing=tuple(float(v) for v in spacing_zyx[::-1]),
                        origin=(0.0, 0.0, 0.0))
    return Volume(hu, geometry), Volume(labels, geometry)


def phantom_case(data: DataConfig, seed: int, lesions: Sequence[str]) -> tuple[Volume, Volume]:
    try:
        from covseg.training.synthesis.config import PhantomConfig
        from covseg.training.synthesis.phantom import make_phantom
    except ImportError as error:
        raise InputError(f"data.source='phantom' needs covseg.training.synthesis.make_phantom ({error}); "
                         "use data.source='spheres'") from None
    phantom = make_phantom(PhantomConfig(seed=seed, size_xyz=tuple(data.shape_zyx[::-1]),
                                         spacing_xyz=tuple(data.phantom_spacing_zyx_mm[::-1]),
                                         lesions=tuple(lesions)))
    return phantom.image, phantom.labels


def _oriented(volume: Volume) -> sitk.Image:
    image = array_to_sitk(np.asarray(volume.array, dtype=np.float32), volume.geometry)
    return sitk.DICOMOrient(image, "LPS")


def resample_case(image: Volume, labels: np.ndarray, classes: int,
                  spacing_zyx: tuple[float, float, float] | None) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """HU image and class-index map reoriented and resampled as the engine does at inference."""
    from covseg.engine.preprocess import _resample_to  # the engine's resampling; no second copy here

    oriented = _oriented(image)
    spacing_xyz = tuple(oriented.GetSpacing()) if spacing_zyx is None else tuple(spacing_zyx[::-1])
    resampled = _resample_to(oriented, spacing_xyz)
    hu = sitk.GetArrayFromImage(resampled).astype(np.float32)
    if resampled is oriented:
        target = sitk.GetArrayFromImage(_oriented(image.with_array(labels))).astype(np.uint8)
    else:
        scores = [sitk.GetArrayFromImage(_resample_to(_oriented(image.with_array((labels == k).astype(np.float32))),
                                                      spacing_xyz))
                  for k in range(classes)]
        target = np.argmax(np.stack(scores), axis=0).astype(np.uint8)
    return hu, target, tuple(float(v) for v in resampled.GetSpacing()[::-1])


def median_spacing_zyx(images: Sequence[Volume]) -> tuple[float, float, float]:
    """nnU-Net's default target grid: the median voxel spacing (z, y, x) of the cases, once oriented."""
    def oriented_spacing(image: Volume) -> tuple[float, ...]:  # a one-voxel stand-in: no copy of the volume
        grid = image.geometry.with_size((1, 1, 1))
        return tuple(_oriented(Volume(np.zeros((1, 1, 1), dtype=np.float32), grid)).GetSpacing()[::-1])

    spacings = np.asarray([oriented_spacing(image) for image in images], dtype=float)
    z, y, x = (float(v) for v in np.median(spacings, axis=0))
    return z, y, x


def fit_normalization(images: Sequence[np.ndarray], targets: Sequence[np.ndarray], data: DataConfig) -> Normalization:
    """The engine normalisation with this training set's statistics (nnU-Net CT scheme): clip at
    `clip_hu` (or the foreground's 0.5/99.5 percentiles), then z-score with the foreground's mean
    and std; `window` maps clip_hu linearly onto [0, 1]."""
    low, high = data.clip_hu
    if data.normalization == "window":
        return Normalization("ct_window", low, high)
    foreground = np.concatenate([im[t > 0] for im, t in zip(images, targets, strict=True)] or [np.zeros(1)])
    if foreground.size < 2:
        foreground = np.concatenate([im.ravel() for im in images])
    if data.normalization == "percentile_zscore":
        low, high = (float(v) for v in np.percentile(foreground, [0.5, 99.5]))
    clipped = np.clip(foreground, low, high)
    return Normalization("ct_clip_zscore", float(low), float(high), float(clipped.mean()),
                         float(max(clipped.std(), 1e-3)))


def _raw_cases(config: Config, head: str | None) -> list[tuple[str, Volume, Volume]]:
    data = config.data
    offset = 0 if head is None else 1000 * (1 + sum(map(ord, head)))  # other heads: other cases
    if head is not None and head in PHANTOM_SOURCES and data.source == "phantom":
        kind = PHANTOM_SOURCES[head][0]
        return [(f"{head}-{i}", *phantom_case(data, data.seed + offset + i, (kind,))) for i in range(data.cases)]
    if data.source == "spheres":
        spacing = data.phantom_spacing_zyx_mm
        return [(f"spheres-{i}", *spheres_case(data.shape_zyx, data.seed + offset + i, spacing))
                for i in range(data.cases)]
    if data.source == "phantom":
        return [(f"phantom-{i}", *phantom_case(data, data.seed + i, data.lesions)) for i in range(data.cases)]
    return _dataset_cases(data)


def _dataset_cases(data: DataConfig) -> list[tuple[str, Volume, Volume]]:
    if data.path is None:
        raise InputError("data.source='dataset' needs data.path (a dataset folder)")
    from covseg.training.datasets import load_dataset

    dataset = load_dataset(data.path)
    ids = [c.id for c in dataset.labelled()]
    if data.splits is not None:
        from covseg.training.splits import read_splits

        ids = list(read_splits(data.splits, known_ids=ids).fold(data.fold or 0).train)
    if not ids:
        raise InputError(f"{data.path}: no labelled training cases")
    return [(case_id, *dataset.case(case_id).load()) for case_id in ids]


def class_names_for(config: Config, head: str | None) -> tuple[str, ...]:
    if head is not None and head in PHANTOM_SOURCES and config.data.source == "phantom":
        return ("background", PHANTOM_SOURCES[head][1])
    return config.data.classes


def build_cases(config: Config, head: str | None = None, normalization: Normalization | None = None
                ) -> tuple[list[Case], list[Case], Normalization]:
    """(training cases, validation cases, normalisation). The last `validation_cases` cases
    validate; the normalisation is fitted on the training cases unless given. Without
    data.spacing_zyx_mm every case is resampled to the cases' median spacing (nnU-Net's default);
    the loop records that spacing in the run's configuration."""
    classes = class_names_for(config, head)
    prepared = []
    raw = _raw_cases(config, head)
    target_spacing = config.data.spacing_zyx_mm or median_spacing_zyx([image for _, image, _ in raw])
    for name, image, labels in raw:
        hu, target, spacing = resample_case(image, to_classes(labels.array, classes), len(classes), target_spacing)
        prepared.append((name, hu, target, spacing))
    n_val = min(config.data.validation_cases, len(prepared) - 1)
    train, val = prepared[:len(prepared) - n_val], prepared[len(prepared) - n_val:]
    if normalization is None:
        normalization = fit_normalization([p[1] for p in train], [p[2] for p in train], config.data)

    def case(p: tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]) -> Case:
        return Case(p[0], normalization.apply(p[1])[None], p[2], p[3])  # type: ignore[arg-type]

    return [case(p) for p in train], [case(p) for p in val], normalization
