"""The classical liver reference: analytic scenes, a phantom's known liver, and the real abdominal CT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from covseg.engine.geometry import Geometry
from covseg.labels import Label
from covseg.training.liver_reference import (
    LiverReferenceConfig,
    dome_seeds,
    liver_intensity,
    liver_mask,
    liver_reference,
)
from covseg.training.synthesis.config import PhantomConfig
from covseg.training.synthesis.phantom import make_phantom

SPACING = (2.0, 2.0, 2.0)


def _grid(shape_zyx: tuple[int, int, int]) -> Geometry:
    return Geometry(shape_zyx[::-1], SPACING, (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def _ball(shape: tuple[int, ...], centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True)) <= 1.0  # type: ignore[no-any-return]


def test_dome_seeds_lie_the_given_depth_below_the_lung_base() -> None:
    lungs = np.zeros((40, 8, 8), dtype=bool)
    lungs[30:, 2:6, 2:6] = True  # base at z = 30, head at the last index
    seeds = dome_seeds(lungs, SPACING, (10.0, 20.0))
    assert sorted(np.unique(np.nonzero(seeds)[0]).tolist()) == list(range(20, 26))  # 30 - 5 ... 30 - 10 voxels
    assert not seeds[:, :2].any() and not seeds[:, 6:].any()  # only under the lung's columns


def test_liver_intensity_is_the_dominant_mode_and_its_spread() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(105, 8, 7000), rng.normal(50, 8, 3000), rng.normal(-100, 20, 2000)])
    intensity = liver_intensity(values.astype(np.float32), np.ones(values.size, dtype=bool), (-50.0, 300.0))
    assert abs(intensity.mode_hu - 105) <= 5 and 6 < intensity.spread_hu < 11
    assert intensity.seeds == int(((values > -50) & (values < 300)).sum())


def _abdomen() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fat body; right lung on top; a 100 HU liver below it holding a bright vessel; a 100 HU
    spleen-like organ joined to it by a 4 mm bridge; muscle (40 HU) around."""
    shape = (48, 64, 64)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = _ball(shape, (24, 32, 32), (60, 30, 30))
    hu[body] = -100.0
    hu[body & ~_ball(shape, (24, 32, 32), (60, 26, 26))] = 40.0  # muscle wall
    lungs = np.zeros(shape, dtype=np.uint8)
    lungs[34:, 14:50, 8:30] = int(Label.LUNG_RIGHT)
    lungs &= body.astype(np.uint8) * 255
    hu[lungs > 0] = -850.0
    liver = _ball(shape, (24, 32, 19), (9, 13, 10))
    spleen = _ball(shape, (22, 32, 46), (6, 8, 6))
    hu[liver | spleen] = 100.0
    hu[22:24, 31:33, 28:41] = 100.0  # the bridge, 2 voxels = 4 mm thick
    hu[_ball(shape, (24, 32, 19), (2, 2, 2))] = 180.0  # an enhanced vessel inside the liver
    rng = np.random.default_rng(1)
    return hu + rng.normal(0, 8, shape).astype(np.float32), lungs, liver, spleen


def test_liver_mask_keeps_the_liver_under_the_lung_and_cuts_the_bridge() -> None:
    hu, lungs, liver, spleen = _abdomen()
    mask, intensity = liver_mask(hu, lungs, _grid(hu.shape), LiverReferenceConfig(opening_mm=6.0, min_seeds=10))
    assert abs(intensity.mode_hu - 100) <= 10
    assert _dice(mask, liver) > 0.9
    assert not (mask & spleen).any()
    assert mask[24, 32, 19]  # the vessel inside is part of the liver


def test_no_right_lung_no_liver() -> None:
    hu, lungs, _, _ = _abdomen()
    mask, intensity = liver_mask(hu, np.zeros_like(lungs), _grid(hu.shape), LiverReferenceConfig())
    assert not mask.any() and intensity.seeds == 0


def test_reference_finds_the_phantom_liver() -> None:
    """Phantom lungs and liver are known exactly; the liver is unenhanced (60 HU) beside 45 HU spleen
    and 40 HU muscle, the hard case for an intensity method."""
    phantom = make_phantom(PhantomConfig(seed=1, size_xyz=(160, 160, 96), spacing_xyz=(2.4, 2.4, 3.0), lesions=()))
    labels = phantom.labels.array
    lungs = phantom.labels.with_array(np.where(np.isin(labels, (Label.LUNG_LEFT, Label.LUNG_RIGHT)), labels, 0)
                                      .astype(np.uint8))
    reference, _ = liver_reference(phantom.image, lungs=lungs)
    assert _dice(reference.array == Label.LIVER, labels == Label.LIVER) > 0.9


@pytest.mark.realdata
@pytest.mark.slow
def test_real_contrast_ct_liver_is_physiological(shared_data: Path) -> None:
    """3D-IRCADb 1.1 (portal venous phase, no liver mask): a liver of adult size, enhanced, on the right."""
    from covseg.engine.reading import read_study

    image = read_study(shared_data / "ircad" / "3Dircadb1.1" / "PATIENT_DICOM.zip")
    reference, intensity = liver_reference(image)
    mask = reference.array == Label.LIVER
    assert 80 < intensity.mode_hu < 140
    assert 1000 < mask.sum() * image.geometry.voxel_volume_ml < 2500
    centroid = image.geometry.index_to_lps(np.argwhere(mask)[:, ::-1].mean(axis=0))
    middle = image.geometry.index_to_lps((np.array(image.array.shape[::-1]) - 1) / 2.0)
    assert centroid[0] < middle[0]  # LPS -x: the patient's right


def test_with_contrast_the_vessel_dense_lobe_is_kept_and_the_touching_spleen_is_not() -> None:
    """An enhanced liver (105 HU) whose left part is crossed by bright vessels every 8 mm (strips too thin
    for the wide erosion) and touches a thick spleen of the same HU."""
    hu, lungs, liver, spleen = _abdomen()
    hu[liver | spleen] += 5.0
    lobe = np.zeros_like(liver)
    lobe[14:34, 22:42, 26:40] = True  # the lobe reaches from the liver towards the spleen
    lobe &= ~spleen
    hu[lobe] = 105.0
    vessels = lobe & (np.arange(64)[None, None, :] % 4 == 0)  # 2 mm walls of 180 HU every 8 mm along x
    hu[vessels] = 180.0
    hu[lobe & ~vessels] += np.random.default_rng(2).normal(0, 8, int((lobe & ~vessels).sum())).astype(np.float32)
    wide_only = LiverReferenceConfig(opening_mm=6.0, min_seeds=10, enhanced_liver_hu=1000.0)
    default = LiverReferenceConfig(opening_mm=6.0, min_seeds=10)
    before, _ = liver_mask(hu, lungs, _grid(hu.shape), wide_only)
    after, intensity = liver_mask(hu, lungs, _grid(hu.shape), default)
    parenchyma = lobe & ~vessels
    assert intensity.mode_hu >= default.enhanced_liver_hu
    assert (after & parenchyma).sum() > 0.8 * parenchyma.sum() > (before & parenchyma).sum()
    assert (after & spleen).sum() < 0.05 * spleen.sum()
