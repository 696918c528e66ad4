"""Branching, tapering pulmonary vessels and airways that fill each lung from its hilum.

Each tree is grown by recursive territory splitting (a simplified space-colonisation model): a branch
runs from its parent's end towards the centroid of the lung points it supplies, then the territory
is cut in two across its longest axis and each half gets a child whose radius follows Murray's law
(r_child^3 proportional to the territory it supplies). Hand-written: no library grows vessel trees.
Three trees per lung: bronchi (air lumen with soft-tissue walls), pulmonary arteries and veins (~40 HU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from covseg.training.synthesis.anatomy import HILUM_LEFT, HILUM_RIGHT
from covseg.training.synthesis.frame import Frame
from covseg.training.synthesis.raster import draw_tubes

POINT_SPACING = 6.5  # reference mm between the lung sample points a tree is grown into
LENGTH_FRACTION = 0.5  # a branch covers this fraction of the way to its territory's centroid


@dataclass(frozen=True)
class Tree:
    """Tube segments (reference mm): start and end points (n, 3) and radii at both ends (n,)."""

    starts: np.ndarray
    ends: np.ndarray
    r_start: np.ndarray
    r_end: np.ndarray


def lung_points(frame: Frame, lung: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Jittered points (n, 3) in reference (x, y, z) on a ~POINT_SPACING lattice inside `lung`."""
    steps = np.maximum(np.rint(POINT_SPACING / frame.voxel[::-1]).astype(int), 1)  # (z, y, x) strides
    sub = lung[:: steps[0], :: steps[1], :: steps[2]]
    k, j, i = np.nonzero(sub)
    points = np.stack([frame.x[i * steps[2]], frame.y[j * steps[1]], frame.z[k * steps[0]]], axis=1)
    jitter = rng.uniform(-0.5, 0.5, size=points.shape) * (steps[::-1] * frame.voxel)
    return points + jitter


def grow_tree(root: np.ndarray, points: np.ndarray, r_root: float, r_min: float) -> Tree:
    """Grow a tree from `root` into `points`; branches stop once thinner than `r_min`.

    Level-synchronous: every node of a generation is split at once with bincount sums and a batched
    3x3 eigen-decomposition, so the cost is a few array passes per generation, not per branch.
    """
    segments: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    node = np.zeros(len(points), dtype=int)  # which current node supplies each point
    start = np.asarray(root, dtype=float)[None, :]
    radius = np.array([float(r_root)])
    while len(points):
        n = len(start)
        count = np.bincount(node, minlength=n)
        centroid = np.stack([np.bincount(node, points[:, a], n) for a in range(3)], axis=1) / count[:, None]
        leaf = (count < 4) | (radius * 0.79 < r_min)
        segments.append((start[leaf], centroid[leaf], radius[leaf], 0.6 * radius[leaf]))
        inner = ~leaf
        end = start + LENGTH_FRACTION * (centroid - start)
        segments.append((start[inner], end[inner], radius[inner], radius[inner]))
        keep = inner[node]
        points, node = points[keep], node[keep]
        if not len(points):
            break
        # Renumber the inner nodes 0..m-1 and split each across the longest axis of its territory.
        renumber = np.cumsum(inner) - 1
        node = renumber[node]
        m = int(inner.sum())
        offsets = points - centroid[inner][node]
        covariance = np.empty((m, 3, 3))
        for a in range(3):
            for b in range(a, 3):
                covariance[:, a, b] = covariance[:, b, a] = np.bincount(node, offsets[:, a] * offsets[:, b], m)
        axis = np.linalg.eigh(covariance)[1][:, :, -1]
        child = 2 * node + (np.einsum("ij,ij->i", offsets, axis[node]) < 0.0)
        child_count = np.bincount(child, minlength=2 * m)
        present = child_count > 0
        share = child_count / np.repeat(count[inner], 2)
        start = np.repeat(end[inner], 2, axis=0)[present]
        radius = (np.repeat(radius[inner], 2) * np.cbrt(share))[present]
        node = (np.cumsum(present) - 1)[child]
    if not segments:
        empty = np.zeros((0, 3))
        return Tree(empty, empty, np.zeros(0), np.zeros(0))
    starts, ends, r0, r1 = (np.concatenate(parts) for parts in zip(*segments, strict=True))
    return Tree(starts, ends, r0, r1)


@dataclass
class TreeOccupancy:
    """Occupancy in [0, 1] of vessel tissue, airway wall tissue and airway air, (z, y, x) float32."""

    vessels: np.ndarray
    walls: np.ndarray
    lumen: np.ndarray


def draw_lung_trees(frame: Frame, lungs: np.ndarray, rng: np.random.Generator) -> TreeOccupancy:
    """Grow and draw bronchi, arteries and veins in both lungs (left lung: x > 0)."""
    occupancy = TreeOccupancy(*(np.zeros(frame.shape, dtype=np.float32) for _ in range(3)))
    left_columns = frame.x > 0
    for hilum, side in ((np.array(HILUM_RIGHT), ~left_columns), (np.array(HILUM_LEFT), left_columns)):
        lung = lungs & side[None, None, :]
        if not lung.any():
            continue
        bronchi = grow_tree(hilum, lung_points(frame, lung, rng), 5.0, 0.9)
        wall = 0.3 + 0.17 * bronchi.r_start
        draw_tubes(frame, occupancy.walls, bronchi.starts, bronchi.ends, bronchi.r_start + wall, bronchi.r_end + wall)
        draw_tubes(frame, occupancy.lumen, bronchi.starts, bronchi.ends, bronchi.r_start, bronchi.r_end)
        for offset, radius in (((0.0, -9.0, 6.0), 6.5), ((0.0, -14.0, -28.0), 6.0)):
            tree = grow_tree(hilum + np.array(offset), lung_points(frame, lung, rng), radius, 0.35)
            draw_tubes(frame, occupancy.vessels, tree.starts, tree.ends, tree.r_start, tree.r_end)
    return occupancy
