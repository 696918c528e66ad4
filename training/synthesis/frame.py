"""The phantom's drawing frame: reference millimetres mapped onto the output grid.

Anatomy is drawn in a *reference* frame so that it fills any field of view: in-plane, one reference mm
is `scale` real mm (a 380 mm field of view gives scale 1); along z the grid always spans reference 0
(upper abdomen) to `HEIGHT` (above the lung apices). Axes follow LPS like the grid: +x is the patient's
left, +y posterior, +z superior. The output grid has an identity direction, so array index (k, j, i)
is (z, y, x) and reference coordinates are affine per axis (no rotation anywhere).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from covseg.engine.geometry import Geometry

REFERENCE_FOV_MM = 380.0
HEIGHT = 300.0  # reference mm from the bottom slice (upper abdomen) to the top slice (neck base)


@dataclass(frozen=True)
class Frame:
    """1-D reference coordinates of every grid column, row and slice, and their voxel sizes."""

    geometry: Geometry
    scale: float
    x: np.ndarray  # (nx,) reference mm, + patient left
    y: np.ndarray  # (ny,) reference mm, + posterior
    z: np.ndarray  # (nz,) reference mm, 0 bottom .. HEIGHT top

    @classmethod
    def for_grid(cls, size_xyz: tuple[int, int, int], spacing_xyz: tuple[float, float, float]) -> Frame:
        nx, ny, nz = (int(v) for v in size_xyz)
        sx, sy, sz = (float(v) for v in spacing_xyz)
        origin = (-(nx - 1) * sx / 2.0, -(ny - 1) * sy / 2.0, -(nz - 1) * sz / 2.0)
        geometry = Geometry(size=(nx, ny, nz), spacing=(sx, sy, sz), origin=origin)
        scale = min(nx * sx, ny * sy) / REFERENCE_FOV_MM
        x = (origin[0] + np.arange(nx) * sx) / scale
        y = (origin[1] + np.arange(ny) * sy) / scale
        z = np.arange(nz) * (HEIGHT / (nz - 1))
        return cls(geometry=geometry, scale=scale, x=x, y=y, z=z)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.geometry.shape_zyx

    @property
    def voxel(self) -> np.ndarray:
        """Voxel size in reference mm, (x, y, z)."""
        return np.array([self.x[1] - self.x[0], self.y[1] - self.y[0], self.z[1] - self.z[0]])

    @property
    def lower(self) -> np.ndarray:
        """Reference coordinates of voxel (0, 0, 0), (x, y, z)."""
        return np.array([self.x[0], self.y[0], self.z[0]])

    def grids(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable (z, y, x) coordinate arrays: Z (nz,1,1), Y (1,ny,1), X (1,1,nx)."""
        return self.z[:, None, None], self.y[None, :, None], self.x[None, None, :]

    def plane(self) -> tuple[np.ndarray, np.ndarray]:
        """Broadcastable in-plane arrays Y (ny,1), X (1,nx)."""
        return self.y[:, None], self.x[None, :]

    def to_index(self, points: np.ndarray) -> np.ndarray:
        """Reference points (..., 3) in (x, y, z) to continuous voxel indices (..., 3) in (x, y, z)."""
        return (np.asarray(points, dtype=float) - self.lower) / self.voxel

    def box(self, low: np.ndarray, high: np.ndarray) -> tuple[slice, slice, slice] | None:
        """The (z, y, x) slices of voxels whose centres lie within reference box [low, high]; None if empty."""
        lo = np.maximum(np.ceil(self.to_index(low)), 0).astype(int)
        hi = np.minimum(np.floor(self.to_index(high)), np.array(self.geometry.size) - 1).astype(int)
        if np.any(hi < lo):
            return None
        return (slice(lo[2], hi[2] + 1), slice(lo[1], hi[1] + 1), slice(lo[0], hi[0] + 1))

    def box_coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable Z, Y, X reference coordinates of a box from `box`."""
        return self.z[box[0]][:, None, None], self.y[box[1]][None, :, None], self.x[box[2]][None, None, :]
