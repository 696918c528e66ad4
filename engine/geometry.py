"""Image geometry in the ITK/DICOM patient frame (LPS) and the one place axes are converted.

Arrays are numpy in (z, y, x) order, as SimpleITK returns them; `Geometry` holds size,
spacing and origin in (x, y, z) order and the 3x3 direction whose *columns* are the
directions of the x, y and z index axes (ITK convention). No other module flips axes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import SimpleITK as sitk

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
ORTHONORMAL_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Geometry:
    """Size, spacing, origin and direction of an image grid, (x, y, z) order, LPS frame."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.size) != 3 or len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise ValueError(f"geometry needs 3 sizes, spacings, origin values and 9 direction values: {self}")
        if any(int(s) < 1 for s in self.size):
            raise ValueError(f"size must be positive, got {self.size}")
        if not all(np.isfinite(self.spacing)) or any(s <= 0 for s in self.spacing):
            raise ValueError(f"spacing must be finite and positive, got {self.spacing}")
        if not all(np.isfinite(self.origin)):
            raise ValueError(f"origin must be finite, got {self.origin}")
        matrix = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if not np.allclose(matrix.T @ matrix, np.eye(3), atol=ORTHONORMAL_TOLERANCE):
            raise ValueError(f"direction must be orthonormal, got {self.direction}")

    # --- derived values -------------------------------------------------------------
    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """The numpy array shape of an image on this grid."""
        return (int(self.size[2]), int(self.size[1]), int(self.size[0]))

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    @property
    def voxel_volume_ml(self) -> float:
        return self.voxel_volume_mm3 / 1000.0

    def affine_lps(self) -> np.ndarray:
        """4x4 matrix from (x, y, z) voxel index to LPS millimetres."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction_matrix @ np.diag(self.spacing)
        affine[:3, 3] = self.origin
        return affine

    def affine_ras(self) -> np.ndarray:
        """4x4 matrix from (x, y, z) voxel index to RAS millimetres (NIfTI, Slicer)."""
        affine = self.affine_lps()
        affine[:3, :] = LPS_TO_RAS @ affine[:3, :]
        return affine

    def index_to_lps(self, index_xyz: np.ndarray) -> np.ndarray:
        """Voxel indices (..., 3) in (x, y, z) order to LPS points (..., 3)."""
        index = np.asarray(index_xyz, dtype=float)
        return index @ (self.direction_matrix @ np.diag(self.spacing)).T + np.asarray(self.origin)

    def lps_to_index(self, points_lps: np.ndarray) -> np.ndarray:
        """LPS points (..., 3) to continuous (x, y, z) voxel indices (..., 3)."""
        points = np.asarray(points_lps, dtype=float) - np.asarray(self.origin)
        inverse = np.linalg.inv(self.direction_matrix @ np.diag(self.spacing))
        return points @ inverse.T

    def same_grid(self, other: Geometry, *, tolerance_mm: float = 1e-3) -> bool:
        """Whether two grids coincide: same size, and spacing, origin, direction within tolerance."""
        return (
            tuple(self.size) == tuple(other.size)
            and np.allclose(self.spacing, other.spacing, atol=tolerance_mm)
            and np.allclose(self.origin, other.origin, atol=tolerance_mm)
            and np.allclose(self.direction, other.direction, atol=ORTHONORMAL_TOLERANCE)
        )

    def with_size(self, size: tuple[int, int, int]) -> Geometry:
        return Geometry(size=size, spacing=self.spacing, origin=self.origin, direction=self.direction)

    def as_report(self) -> dict[str, object]:
        """The report.json `geometry` block (DESIGN.md section 4)."""
        return {
            "size": [int(v) for v in self.size],
            "spacing_mm": [float(v) for v in self.spacing],
            "origin_mm": [float(v) for v in self.origin],
            "direction": [float(v) for v in self.direction],
            "frame": "LPS",
        }

    # --- conversions ----------------------------------------------------------------
    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Geometry:
        size = image.GetSize()
        if len(size) != 3:
            raise ValueError(f"expected a 3-D image, got {len(size)}-D")
        return cls(
            size=(int(size[0]), int(size[1]), int(size[2])),
            spacing=tuple(float(v) for v in image.GetSpacing()),  # type: ignore[arg-type]
            origin=tuple(float(v) for v in image.GetOrigin()),  # type: ignore[arg-type]
            direction=tuple(float(v) for v in image.GetDirection()),
        )

    def apply_to_sitk(self, image: sitk.Image) -> sitk.Image:
        """Stamp this geometry onto a SimpleITK image of the same size (returns it)."""
        if tuple(image.GetSize()) != tuple(self.size):
            raise ValueError(f"image size {image.GetSize()} differs from geometry size {self.size}")
        image.SetSpacing([float(v) for v in self.spacing])
        image.SetOrigin([float(v) for v in self.origin])
        image.SetDirection([float(v) for v in self.direction])
        return image

    @classmethod
    def from_affine_ras(cls, affine: np.ndarray, size_xyz: tuple[int, int, int]) -> Geometry:
        """Geometry from a NIfTI-style RAS affine of an (x, y, z) indexed array."""
        lps = np.asarray(affine, dtype=float).copy()
        lps[:3, :] = LPS_TO_RAS @ lps[:3, :]
        linear = lps[:3, :3]
        spacing = np.linalg.norm(linear, axis=0)
        direction = linear / spacing
        return cls(
            size=(int(size_xyz[0]), int(size_xyz[1]), int(size_xyz[2])),
            spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
            origin=(float(lps[0, 3]), float(lps[1, 3]), float(lps[2, 3])),
            direction=tuple(float(v) for v in direction.reshape(-1)),
        )


def array_to_sitk(array_zyx: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A SimpleITK image of a (z, y, x) array on `geometry` (checks the shape)."""
    import SimpleITK as sitk

    if tuple(array_zyx.shape) != geometry.shape_zyx:
        raise ValueError(f"array shape {array_zyx.shape} does not match geometry {geometry.shape_zyx} (z, y, x)")
    return geometry.apply_to_sitk(sitk.GetImageFromArray(np.ascontiguousarray(array_zyx)))


def zyx_to_xyz(array_zyx: np.ndarray) -> np.ndarray:
    """The (x, y, z) indexed view that nibabel expects, of a (z, y, x) array."""
    return np.transpose(array_zyx, (2, 1, 0))


def xyz_to_zyx(array_xyz: np.ndarray) -> np.ndarray:
    """The (z, y, x) indexed view of an (x, y, z) array (nibabel to numpy/SimpleITK order)."""
    return np.transpose(array_xyz, (2, 1, 0))
