"""COVID-19 infection patterns and solid nodules/tumours, drawn as fill fractions on lung tissue.

Infection is modelled as alveolar air partly (ground glass) or almost fully (consolidation) replaced by
fluid: HU = base + fill * (FLUID_HU - base). Because it mixes rather than replaces, vessels keep their
HU inside ground glass and stay visible, and airway air is left alone (air bronchograms).
Patterns: ground_glass, consolidation, mixed (patchy consolidation inside ground glass) and
crazy_paving (ground glass plus a polygonal network of thickened septa).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from covseg.training.synthesis import config as c
from covseg.training.synthesis.frame import Frame
from covseg.training.synthesis.imaging import smooth_noise
from covseg.training.synthesis.sites import Sites

Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Shape:
    """A soft lesion shape: occupancy in [0, 1] on a box of the grid (inside: >= 0.5)."""

    box: Box
    soft: np.ndarray


@dataclass(frozen=True)
class LesionRecord:
    """One drawn lesion, for the study README and for tests."""

    kind: str  # covid | nodule | effusion
    pattern: str  # ground_glass | consolidation | mixed | crazy_paving | nodule | tumour | effusion
    side: str  # left | right
    centre_mm: tuple[float, float, float]  # LPS
    source: str = "procedural"


@dataclass
class LesionFields:
    """Accumulated lesion fields on the whole grid."""

    fill: np.ndarray  # float32, infection fill fraction (max over lesions)
    infection: np.ndarray  # bool
    solid: np.ndarray  # float32 occupancy of nodules/tumours
    solid_hu: np.ndarray  # float32 HU of the nodule/tumour occupying a voxel
    nodule: np.ndarray  # bool

    @classmethod
    def empty(cls, shape: tuple[int, int, int]) -> LesionFields:
        return cls(np.zeros(shape, np.float32), np.zeros(shape, bool), np.zeros(shape, np.float32),
                   np.zeros(shape, np.float32), np.zeros(shape, bool))


def _basis(outward: np.ndarray) -> np.ndarray:
    """Rows: two tangents to the pleura and the outward normal."""
    norm = float(np.linalg.norm(outward))
    n = outward / norm if norm > 1e-6 else np.array([0.0, 1.0, 0.0])  # no gradient (tiny lung): posterior
    helper = np.array([0.0, 0.0, 1.0]) if abs(n[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    t1 = np.cross(n, helper)
    t1 /= np.linalg.norm(t1)
    return np.stack([t1, np.cross(n, t1), n])


def blob(frame: Frame, rng: np.random.Generator, centre: np.ndarray, outward: np.ndarray,
         radii: tuple[float, float, float], roughness: float, edge: float) -> Shape | None:
    """A smooth random blob: an ellipsoid (radii along tangent, tangent, normal) with a noisy surface."""
    # The surface noise scales q by 1 +- roughness (tanh-bounded), so this box holds the whole blob.
    reach = max(radii) * (1.0 + 0.5 * edge) / (1.0 - roughness)
    box = frame.box(centre - reach, centre + reach)
    if box is None:
        return None
    Z, Y, X = frame.box_coords(box)
    shape = (Z.shape[0], Y.shape[1], X.shape[2])
    offsets = [np.broadcast_to(v, shape) for v in (X - centre[0], Y - centre[1], Z - centre[2])]
    q2 = np.zeros(shape)
    for axis, radius in zip(_basis(outward), radii, strict=True):
        q2 += ((axis[0] * offsets[0] + axis[1] * offsets[1] + axis[2] * offsets[2]) / radius) ** 2
    cell = tuple(0.5 * float(np.mean(radii)) / v for v in frame.voxel[::-1])
    q = np.sqrt(q2) * (1.0 + roughness * np.tanh(smooth_noise(rng, shape, cell)))
    return Shape(box, np.clip((1.0 - q) / edge + 0.5, 0.0, 1.0).astype(np.float32))


def _septal_lines(frame: Frame, rng: np.random.Generator, box: Box, shape: tuple[int, ...]) -> np.ndarray:
    """Walls of random polygonal cells (~secondary lobules, 8-12 mm): 1 on a wall, 0 inside a cell."""
    Z, Y, X = frame.box_coords(box)
    grid = np.stack(np.broadcast_arrays(X, Y, Z), axis=-1).reshape(-1, 3)
    low, high = grid.min(axis=0) - 10.0, grid.max(axis=0) + 10.0
    count = max(int(np.prod(high - low) / 10.0**3), 4)
    seeds = rng.uniform(low, high, size=(count, 3))
    distances, _ = cKDTree(seeds).query(grid, k=2)
    width = max(0.8, 0.5 * float(frame.voxel.min()))
    return np.clip(1.0 - (distances[:, 1] - distances[:, 0]) / (2.0 * width), 0.0, 1.0).reshape(shape)


def covid_fill(frame: Frame, rng: np.random.Generator, shape: Shape, pattern: str,
               ggo_fill: tuple[float, float] = c.GGO_FILL) -> np.ndarray:
    """Fill fraction on the shape's box for one infection pattern (ground glass drawn from `ggo_fill`)."""
    soft = shape.soft
    ggo = rng.uniform(*ggo_fill)
    patches = smooth_noise(rng, soft.shape, tuple(6.0 / v for v in frame.voxel[::-1]))
    texture = 1.0 + 0.08 * patches
    if pattern == "ground_glass":
        return ggo * soft * texture
    consolidation = rng.uniform(*c.CONSOLIDATION_FILL)
    if pattern == "consolidation":
        return np.minimum(consolidation * soft * (1.0 + 0.02 * patches), 1.0)
    if pattern == "mixed":
        core = np.clip(2.0 * soft - 1.0, 0.0, 1.0) * np.clip((patches + 0.3) * 2.0, 0.0, 1.0)
        return np.maximum(ggo * soft * texture, consolidation * core)
    if pattern == "crazy_paving":
        lines = _septal_lines(frame, rng, shape.box, soft.shape)
        return np.minimum(ggo * soft * texture + c.SEPTAL_FILL * lines * soft, 1.0)
    raise ValueError(f"unknown infection pattern {pattern!r}; known: {', '.join(c.COVID_PATTERNS)}")


ShapeMaker = Callable[[np.ndarray, np.ndarray, float], "tuple[Shape | None, str]"]


def add_covid(frame: Frame, rng: np.random.Generator, sites: Sites, lungs: np.ndarray, fields: LesionFields,
              count: int, scale: float, shape_maker: ShapeMaker | None = None,
              ggo_fill: tuple[float, float] = c.GGO_FILL) -> list[LesionRecord]:
    """Draw `count` infection lesions alternating between the lungs; returns what was drawn.

    `shape_maker(centre, outward, scale) -> (shape, source)` replaces the procedural blob (MosMed shapes).
    """
    records = []
    weights = sites.covid_weights()
    first_left = bool(rng.integers(2))
    for n in range(count):
        index = sites.pick(rng, weights, left=first_left ^ bool(n % 2))
        if index is None:
            index = sites.pick(rng, weights, left=None)
        if index is None:
            break
        centre, outward = sites.points[index], sites.outward[index]
        pattern = str(rng.choice(c.COVID_PATTERNS, p=[0.4, 0.15, 0.3, 0.15]))
        if shape_maker is not None:
            shape, source = shape_maker(centre, outward, scale)
        else:
            tangent = rng.uniform(15.0, 40.0, size=2) * scale
            shape, source = blob(frame, rng, centre, outward, (*tangent, rng.uniform(8.0, 20.0) * scale),
                                 0.25, 0.25), "procedural"
        if shape is None:
            continue
        inside = lungs[shape.box] & (shape.soft >= 0.5)
        fill = covid_fill(frame, rng, shape, pattern, ggo_fill) * lungs[shape.box]
        np.maximum(fields.fill[shape.box], fill.astype(np.float32), out=fields.fill[shape.box])
        fields.infection[shape.box] |= inside
        records.append(_record(frame, "covid", pattern, centre, source))
    return records


def add_nodules(frame: Frame, rng: np.random.Generator, sites: Sites, lungs: np.ndarray, fields: LesionFields,
                count: int, scale: float) -> list[LesionRecord]:
    """Solid nodules (4-12 mm radius) and, one time in three, a lobulated tumour (15-25 mm)."""
    records = []
    weights = sites.nodule_weights()
    for _ in range(count):
        index = sites.pick(rng, weights, left=None)
        if index is None:
            break
        tumour = rng.uniform() < 1.0 / 3.0
        radius = (rng.uniform(15.0, 25.0) if tumour else rng.uniform(4.0, 12.0)) * scale
        radii = tuple(radius * rng.uniform(0.85, 1.15, size=3))
        shape = blob(frame, rng, sites.points[index], sites.outward[index], radii,
                     0.3 if tumour else 0.12, 0.12)
        if shape is None:
            continue
        soft = shape.soft * lungs[shape.box]
        np.maximum(fields.solid[shape.box], soft, out=fields.solid[shape.box])
        fields.solid_hu[shape.box][soft > 0] = rng.uniform(*c.NODULE_HU)
        fields.nodule[shape.box] |= soft >= 0.5
        records.append(_record(frame, "nodule", "tumour" if tumour else "nodule", sites.points[index], "procedural"))
    return records


def _record(frame: Frame, kind: str, pattern: str, centre: np.ndarray, source: str) -> LesionRecord:
    lps = frame.geometry.index_to_lps(frame.to_index(centre))
    return LesionRecord(kind, pattern, "left" if centre[0] > 0 else "right",
                        (round(float(lps[0]), 1), round(float(lps[1]), 1), round(float(lps[2]), 1)), source)
