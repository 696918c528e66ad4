"""Where lesions go: candidate points in the lungs with their depth below the pleura, height and lobe.

COVID-19 pneumonia is peripheral/subpleural, bilateral, posterior and lower-lobe predominant; lung
nodules favour the upper lobes. The weights below encode those distributions (a coarse lattice is
enough: a lesion's shape, not its centre, decides its voxels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from covseg.training.synthesis.anatomy import oblique_fissure_height
from covseg.training.synthesis.frame import Frame

LATTICE_MM = 4.0


@dataclass(frozen=True)
class Sites:
    """Candidate lesion centres (reference mm) and what the weights need to know about each."""

    points: np.ndarray  # (n, 3) x, y, z
    depth: np.ndarray  # (n,) distance to the lung surface
    outward: np.ndarray  # (n, 3) unit vector towards the nearest lung surface
    height: np.ndarray  # (n,) 0 at the lung base .. 1 at the apex (per lung)
    lower_lobe: np.ndarray  # (n,) bool, below the oblique fissure
    left: np.ndarray  # (n,) bool, patient's left lung (x > 0)
    periphery: np.ndarray  # (n,) 0 at the midline .. 1 at the costal pleura (normalised cavity radius)

    @classmethod
    def from_lungs(cls, frame: Frame, lungs: np.ndarray, cavity: tuple[float, float, float]) -> Sites:
        """Candidates from the lung mask; `cavity` = (semi-axis x, semi-axis y, centre y) of the chest."""
        steps = np.maximum(np.rint(LATTICE_MM / frame.voxel[::-1]).astype(int), 1)
        coarse = lungs[:: steps[0], :: steps[1], :: steps[2]]
        sampling = steps * frame.voxel[::-1]
        depth_map = ndimage.distance_transform_edt(coarse, sampling=sampling)
        gradient = np.gradient(depth_map, *sampling)
        k, j, i = np.nonzero(coarse)
        points = np.stack([frame.x[i * steps[2]], frame.y[j * steps[1]], frame.z[k * steps[0]]], axis=1)
        inward = np.stack([gradient[2][k, j, i], gradient[1][k, j, i], gradient[0][k, j, i]], axis=1)
        outward = -inward / np.maximum(np.linalg.norm(inward, axis=1, keepdims=True), 1e-6)
        left = points[:, 0] > 0
        height = np.zeros(len(points))
        for side in (left, ~left):
            if side.any():
                z = points[side, 2]
                height[side] = (z - z.min()) / max(float(z.max() - z.min()), 1e-6)
        lower = points[:, 2] < oblique_fissure_height(points[:, 1], points[:, 0])
        periphery = np.hypot(points[:, 0] / cavity[0], (points[:, 1] - cavity[2]) / cavity[1])
        return cls(points, depth_map[k, j, i], outward, height, lower, left, np.clip(periphery, 0.0, 1.0))

    def __len__(self) -> int:
        return len(self.points)

    def covid_weights(self) -> np.ndarray:
        """Peripheral (subpleural), posterior, basal, lower-lobe predominant."""
        posterior = np.clip((self.points[:, 1] + 60.0) / 150.0, 0.0, 1.0)
        return (np.exp(-self.depth / 10.0) * np.exp(-(1.0 - self.periphery) / 0.12) * np.exp(-1.8 * self.height)
                * (0.5 + posterior)
                * np.where(self.lower_lobe, 2.5, 1.0))

    def nodule_weights(self) -> np.ndarray:
        """Anywhere in the lung, more often in the upper lobes, rarely right at the pleura."""
        return np.exp(1.0 * self.height) * np.clip(self.depth / 8.0, 0.2, 1.0)

    def pick(self, rng: np.random.Generator, weights: np.ndarray, left: bool | None) -> int | None:
        """Index of a weighted random candidate (on one side when `left` is given); None if none."""
        w = weights if left is None else weights * (self.left == left)
        total = float(w.sum())
        if total <= 0:
            return None
        return int(rng.choice(len(w), p=w / total))
