"""Patch sampling: foreground oversampling, DistributedSampler-style sharding, padding, MONAI
augmentation that keeps labels valid; and the training data preparation (classes, normalisation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

from covseg.labels import Label
from covseg.training.config import AugmentationConfig, Config
from covseg.training.data import Case, build_cases, to_classes
from covseg.training.sampling import PatchSampler, make_augmentation


def _case(shape: tuple[int, int, int] = (40, 40, 40)) -> Case:
    target = np.zeros(shape, dtype=np.uint8)
    target[5:8, 5:8, 5:8] = 1  # 27 foreground voxels in a corner: random patches rarely hit them
    image = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    return Case("c", image, target, (1.0, 1.0, 1.0))


def test_a_third_of_patches_are_centred_on_foreground() -> None:
    sampler = PatchSampler([_case()], (16, 16, 16), 3, 1 / 3, None, seed=4)
    specs = sampler.specs(epoch=0, iterations=300)
    forced = [s for s in specs if s.foreground]
    assert 0.28 < len(forced) / len(specs) < 0.39
    assert all(tuple(s.centre) in {(z, y, x) for z in range(5, 8) for y in range(5, 8) for x in range(5, 8)}
               for s in forced)
    for spec in forced[:5]:
        image, label = sampler.sample(spec)
        assert image.shape == (1, 16, 16, 16) and label.shape == (1, 16, 16, 16) and label.sum() == 27


def test_ranks_shard_one_global_list_like_distributed_sampler() -> None:
    cases = [_case(), _case()]
    whole = PatchSampler(cases, (16, 16, 16), 2, 1 / 3, None, seed=1).specs(3, 5)
    ranks = [PatchSampler(cases, (16, 16, 16), 2, 1 / 3, None, seed=1, rank=r, world=2).specs(3, 5)
             for r in range(2)]
    global_list = PatchSampler(cases, (16, 16, 16), 2, 1 / 3, None, seed=1, world=2)
    everything = global_list.specs(3, 5)  # rank 0 of 2
    assert everything == ranks[0] and len(ranks[0]) == len(ranks[1]) == len(whole) == 10
    assert not set(ranks[0]) & set(ranks[1])
    assert whole != PatchSampler(cases, (16, 16, 16), 2, 1 / 3, None, seed=1).specs(4, 5)  # epochs differ


def test_small_cases_are_padded_to_the_patch() -> None:
    sampler = PatchSampler([_case((10, 12, 20))], (16, 16, 16), 1, 0.0, None, seed=0)
    image, label = next(sampler.batches(0, 1))
    assert image.shape == (1, 1, 16, 16, 16) and label.shape == (1, 1, 16, 16, 16)


def test_augmentation_is_seeded_and_keeps_labels_valid() -> None:
    aug = make_augmentation(AugmentationConfig(rotate_prob=1.0, scale_prob=1.0, noise_prob=1.0, elastic_prob=0.0))
    sampler = PatchSampler([_case()], (16, 16, 16), 1, 1.0, aug, seed=2)
    spec = sampler.specs(0, 1)[0]
    first, again = sampler.sample(spec), sampler.sample(spec)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    plain = PatchSampler([_case()], (16, 16, 16), 1, 1.0, None, seed=2).sample(spec)
    assert not np.array_equal(first[0], plain[0])
    assert set(np.unique(first[1])) <= {0, 1} and first[0].dtype == np.float32


def _kernel_only(**probs: float) -> AugmentationConfig:
    """Every other augmentation off, so a patch changes by the kernel step alone."""
    return AugmentationConfig(flip_prob=0.0, rotate_prob=0.0, scale_prob=0.0, noise_prob=0.0, gamma_prob=0.0,
                              contrast_prob=0.0, **probs)


def _edge_patch() -> np.ndarray:
    """A sharp in-plane step edge, the same on every slice: (channel, z, y, x)."""
    image = np.zeros((1, 6, 24, 24), dtype=np.float32)
    image[..., 12:] = 1.0
    return image


def _step_width(image: np.ndarray) -> float:
    """Largest in-plane jump across the edge: 1.0 for the sharp step, less when blurred, more when sharpened."""
    return float(np.abs(np.diff(image[0, 3, 12], axis=-1)).max())


def test_kernel_steps_are_absent_by_default_so_old_recipes_draw_the_same_numbers() -> None:
    default = make_augmentation(AugmentationConfig())
    assert default is not None
    names = [type(t).__name__ for t in default.transforms]
    assert "RandGaussianSmoothd" not in names and "RandGaussianSharpend" not in names


def test_kernel_blur_softens_and_sharpening_overshoots_in_plane_only() -> None:
    edge = _edge_patch()
    blur = make_augmentation(_kernel_only(blur_prob=1.0))
    sharpen = make_augmentation(_kernel_only(sharpen_prob=1.0, sharpen_alpha=(2.0, 2.0)))
    assert blur is not None and sharpen is not None
    blurred = np.asarray(blur({"image": edge.copy(), "label": np.zeros_like(edge)})["image"])
    sharpened = np.asarray(sharpen({"image": edge.copy(), "label": np.zeros_like(edge)})["image"])
    assert _step_width(blurred) < 0.9
    # Unsharp masking overshoots on both sides of an edge: values leave [0, 1].
    assert sharpened.max() > 1.02 and sharpened.min() < -0.02
    z_step = np.zeros_like(edge)
    z_step[:, 3:] = 1.0  # an edge across slices: an in-plane kernel must leave it as sharp as it was
    for transform in (blur, sharpen):
        for _ in range(20):  # sigma and alpha are random draws: check many of them
            out = np.asarray(transform({"image": z_step.copy(), "label": np.zeros_like(z_step)})["image"])
            # Away from the in-plane border. A kernel reaching across slices would put ~0.5 at the step;
            # 1e-3 allows for the float32 normalisation of a truncated Gaussian (seen: 1.00009).
            assert np.allclose(out[0, :, 12, 12], z_step[0, :, 12, 12], atol=1e-3)


def test_classes_groups_and_normalisation() -> None:
    labels = np.array([0, 1, 2, 3, 4, 5, 6], dtype=np.uint8)
    assert to_classes(labels, ("background", "infection")).tolist() == [0, 0, 0, 1, 1, 0, 0]
    assert to_classes(labels, ("background", "lungs", "liver")).tolist() == [0, 1, 1, 0, 0, 2, 0]
    cfg = Config()
    cfg.data.source, cfg.data.shape_zyx, cfg.data.cases = "spheres", (24, 24, 24), 3
    train, val, norm = build_cases(cfg)
    assert len(train) == 2 and len(val) == 1 and norm.kind == "ct_clip_zscore"
    foreground = np.concatenate([c.image[0][c.target > 0] for c in train])
    assert abs(float(foreground.mean())) < 1e-3 and abs(float(foreground.std()) - 1.0) < 1e-2
    cfg.data.normalization = "window"
    _, _, window = build_cases(cfg)
    assert window.kind == "ct_window" and window.value_of(-1024.0) == 0.0
    assert int(Label.INFECTION_GROUND_GLASS) in (3,)  # the sphere generator's labels come from covseg.labels


def test_cases_without_a_target_spacing_go_to_the_median_grid(tmp_path: Path) -> None:
    """nnU-Net's default: no data.spacing_zyx_mm -> every case resampled to the median spacing."""
    from covseg.engine.geometry import Geometry
    from covseg.engine.volume import Volume
    from covseg.training.config import config_from_dict
    from covseg.training.data import build_cases
    from covseg.training.synthesis.dicom_series import write_nifti

    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    for i, z_mm in enumerate((2.0, 3.0, 5.0)):
        geometry = Geometry(size=(12, 12, 12), spacing=(1.5, 1.5, z_mm), origin=(0.0, 0.0, 0.0))
        labels = np.zeros((12, 12, 12), dtype=np.uint8)
        labels[3:9, 3:9, 3:9] = 3
        write_nifti(Volume(np.full((12, 12, 12), -500.0, dtype=np.float32), geometry),
                    tmp_path / "images" / f"c{i}.nii.gz")
        write_nifti(Volume(labels, geometry), tmp_path / "labels" / f"c{i}.nii.gz")
    config = config_from_dict({"data": {"source": "dataset", "path": str(tmp_path), "validation_cases": 0}})
    train, _, _ = build_cases(config)
    assert [c.spacing_zyx for c in train] == [(3.0, 1.5, 1.5)] * 3
    assert [c.image.shape[1] for c in train] == [8, 12, 20]  # 12 slices of 2, 3, 5 mm on a 3 mm grid
