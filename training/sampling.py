"""Patch sampling with foreground oversampling (nnU-Net) and MONAI augmentation.

Each epoch draws one global list of patch specifications from a generator seeded by
(seed, epoch); rank r of W takes specs r, r + W, ... exactly as DistributedSampler shards a
dataset, so the global batch is the same whatever the world size and a resumed epoch draws the
same patches. A spec is (case, centre, forced-foreground, augmentation seed): augmentation is
seeded per patch, so it too is independent of ranks and restarts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from monai import transforms as mt

from covseg.training.config import AugmentationConfig
from covseg.training.data import Case

MAX_FOREGROUND_POINTS = 20000


@dataclass(frozen=True)
class PatchSpec:
    case: int
    centre: tuple[int, int, int]
    foreground: bool
    seed: int


def make_augmentation(aug: AugmentationConfig) -> mt.Compose | None:
    """Flips, rotation, scaling, elastic deformation, noise, gamma, contrast and kernel blur/sharpening (MONAI)."""
    if not aug.enabled:
        return None
    keys = ("image", "label")
    r = aug.rotate_range_rad
    steps: list[mt.Transform] = [mt.RandFlipd(keys, prob=aug.flip_prob, spatial_axis=axis) for axis in aug.flip_axes]
    steps += [
        mt.RandRotated(keys, range_x=r, range_y=r, range_z=r, prob=aug.rotate_prob, mode=("bilinear", "nearest"),
                       padding_mode="border", keep_size=True),
        mt.RandZoomd(keys, prob=aug.scale_prob, min_zoom=1.0 - aug.scale_range, max_zoom=1.0 + aug.scale_range,
                     mode=("trilinear", "nearest"), padding_mode="edge", keep_size=True),
    ]
    if aug.elastic_prob > 0:
        steps.append(mt.Rand3DElasticd(keys, sigma_range=(5, 8), magnitude_range=(50, 150), prob=aug.elastic_prob,
                                       mode=("bilinear", "nearest"), padding_mode="border"))
    steps += [
        mt.RandGaussianNoised("image", prob=aug.noise_prob, std=aug.noise_std),
        mt.RandAdjustContrastd("image", prob=aug.gamma_prob, gamma=aug.gamma_range),
        mt.RandScaleIntensityd("image", prob=aug.contrast_prob,
                               factors=(aug.contrast_range[0] - 1.0, aug.contrast_range[1] - 1.0)),
    ]
    steps += _kernel_steps(aug)
    return mt.Compose(steps)


def _kernel_steps(aug: AugmentationConfig) -> list[mt.Transform]:
    """In-plane blur and sharpening, standing in for softer and sharper reconstruction kernels. Only added
    when their probability is above 0, so that recipes without them draw the same random numbers as before.

    MONAI's sigma_x is the first spatial axis, which is z here: z is left alone (the kernel acts in-plane)."""
    steps: list[mt.Transform] = []
    if aug.blur_prob > 0:
        steps.append(mt.RandGaussianSmoothd("image", sigma_x=(0.0, 0.0), sigma_y=aug.blur_sigma,
                                            sigma_z=aug.blur_sigma, prob=aug.blur_prob))
    if aug.sharpen_prob > 0:
        steps.append(mt.RandGaussianSharpend("image", sigma1_x=(0.0, 0.0), sigma1_y=(0.25, 0.5),
                                             sigma1_z=(0.25, 0.5), sigma2_x=0.0, sigma2_y=(0.5, 1.0),
                                             sigma2_z=(0.5, 1.0), alpha=aug.sharpen_alpha, prob=aug.sharpen_prob))
    return steps


class PatchSampler:
    def __init__(self, cases: Sequence[Case], patch: Sequence[int], batch_size: int, foreground_fraction: float,
                 augmentation: mt.Compose | None, seed: int, rank: int = 0, world: int = 1) -> None:
        if not cases:
            raise ValueError("no training cases")
        self.cases = list(cases)
        self.patch = tuple(int(p) for p in patch)
        self.batch_size = batch_size
        self.foreground_fraction = foreground_fraction
        self.augmentation = augmentation
        self.seed, self.rank, self.world = seed, rank, world
        self.foreground = [self._foreground_points(c, i) for i, c in enumerate(self.cases)]

    def _foreground_points(self, case: Case, index: int) -> np.ndarray:
        points = np.argwhere(case.target > 0)
        if len(points) > MAX_FOREGROUND_POINTS:  # a fixed subsample keeps memory small on big cases
            keep = np.random.default_rng([self.seed, index]).choice(len(points), MAX_FOREGROUND_POINTS, replace=False)
            points = points[np.sort(keep)]
        return points

    def specs(self, epoch: int, iterations: int) -> list[PatchSpec]:
        """This rank's patch specifications for an epoch: iterations x batch_size of them."""
        rng = np.random.default_rng([self.seed, epoch])
        total = iterations * self.batch_size * self.world
        out = []
        for _ in range(total):
            index = int(rng.integers(len(self.cases)))
            forced = bool(rng.random() < self.foreground_fraction) and len(self.foreground[index]) > 0
            if forced:
                centre = self.foreground[index][int(rng.integers(len(self.foreground[index])))]
            else:
                centre = np.array([int(rng.integers(s)) for s in self.cases[index].target.shape])
            out.append(PatchSpec(index, tuple(int(c) for c in centre), forced, int(rng.integers(2**31))))  # type: ignore[arg-type]
        return out[self.rank::self.world]

    def _crop(self, spec: PatchSpec) -> tuple[np.ndarray, np.ndarray]:
        case = self.cases[spec.case]
        image, target = case.image, case.target
        pad = [(max(0, (p - s + 1) // 2), max(0, p - s - (p - s + 1) // 2)) for p, s in zip(self.patch, target.shape,
                                                                                            strict=True)]
        if any(sum(p) for p in pad):
            image = np.pad(image, [(0, 0), *pad], mode="constant", constant_values=float(image.min()))
            target = np.pad(target, pad, mode="constant")
        starts = [min(max(c + lo - p // 2, 0), s - p) for c, (lo, _), p, s in zip(spec.centre, pad, self.patch,
                                                                                   target.shape, strict=True)]
        box = tuple(slice(a, a + p) for a, p in zip(starts, self.patch, strict=True))
        return image[(slice(None), *box)], target[box][None]

    def sample(self, spec: PatchSpec) -> tuple[np.ndarray, np.ndarray]:
        image, label = self._crop(spec)
        if self.augmentation is None:
            return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(label, np.uint8)
        self.augmentation.set_random_state(seed=spec.seed)
        out = self.augmentation({"image": image.astype(np.float32), "label": label.astype(np.float32)})
        return (np.asarray(out["image"], dtype=np.float32),
                np.rint(np.asarray(out["label"])).astype(np.uint8))

    def batches(self, epoch: int, iterations: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(image (B, C, z, y, x) float32, target (B, 1, z, y, x) uint8) batches for this rank."""
        specs = self.specs(epoch, iterations)
        for start in range(0, len(specs), self.batch_size):
            pairs = [self.sample(spec) for spec in specs[start:start + self.batch_size]]
            yield np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
