"""Real COVID-19 lesion shapes from the MosMedData masks, fitted into the phantom lungs.

Each connected component of a MosMed infection mask (0.5-150 ml) is one lesion shape. It is smoothed
(the masks have 8 mm slices), scaled in millimetres (shrunk when larger than `MAX_EXTENT_MM`),
randomly mirrored left-right and centred on a lesion site; the lung mask clips it afterwards.

Licence: MosMedData is CC BY-NC-ND 3.0. The masks are read at generation time only and never copied;
phantoms made with them inherit the non-commercial term (say so in any model card).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from covseg.training.synthesis.frame import Frame
from covseg.training.synthesis.lesions import Shape

MIN_ML, MAX_ML = 0.5, 150.0
MAX_EXTENT_MM = 90.0
LICENCE = "MosMedData COVID19_1110 infection masks, CC BY-NC-ND 3.0 (shapes only; non-commercial)"


class MosmedUnavailableError(FileNotFoundError):
    """The MosMed masks folder is absent or holds no masks (use_mosmed needs it)."""


def default_folder() -> Path:
    """$COVSEG_SHARED_DATA/mosmed_covid_masks/masks, else ../shared/data/... beside the repository."""
    shared = os.environ.get("COVSEG_SHARED_DATA")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return base / "mosmed_covid_masks" / "masks"


def mask_files(folder: Path | None) -> tuple[Path, ...]:
    """The sorted MosMed mask files; raises MosmedUnavailableError naming the folder when there are none."""
    folder = Path(folder) if folder is not None else default_folder()
    files = tuple(sorted(folder.glob("*.nii.gz"))) if folder.is_dir() else ()
    if not files:
        raise MosmedUnavailableError(f"MosMed masks folder {folder} is absent or has no *.nii.gz masks "
                                     "(needed for use_mosmed; see shared/data/README.md, section 4)")
    return files


@dataclass(frozen=True)
class Component:
    """One lesion: a smoothed occupancy crop (z, y, x) in [0, 1] and its spacing (x, y, z) in mm."""

    occupancy: np.ndarray
    spacing: tuple[float, float, float]
    source: str
    volume_ml: float


@functools.lru_cache(maxsize=8)
def components(path: Path) -> tuple[Component, ...]:
    """Lesion components of one MosMed mask, largest first."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    spacing = tuple(float(v) for v in image.GetSpacing())
    mask = sitk.GetArrayFromImage(image) > 0
    labels, _ = ndimage.label(mask)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    sizes = np.bincount(labels.ravel())
    found = []
    for number, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or not MIN_ML <= sizes[number] * voxel_ml <= MAX_ML:
            continue
        crop = np.pad((labels[box] == number).astype(np.float32), 2)
        occupancy = ndimage.gaussian_filter(crop, sigma=(0.6, 1.5, 1.5))
        found.append(Component(occupancy, spacing, f"mosmed:{path.name}#{number}",  # type: ignore[arg-type]
                               float(sizes[number] * voxel_ml)))
    return tuple(sorted(found, key=lambda component: -component.volume_ml))


class MosmedShapes:
    """A seeded source of MosMed lesion shapes for `lesions.add_covid(shape_maker=...)`."""

    def __init__(self, frame: Frame, rng: np.random.Generator, folder: Path | None = None,
                 files: tuple[Path, ...] | None = None) -> None:
        """`files` restricts the shapes to a subset of the masks (a train / validation / test split)."""
        self.frame = frame
        self.rng = rng
        self.files = files if files else mask_files(folder)

    def _pick(self) -> Component | None:
        for _ in range(8):
            found = components(self.files[int(self.rng.integers(len(self.files)))])
            if found:  # larger lesions more often, as they dominate a case's burden
                weights = np.array([component.volume_ml for component in found])
                return found[int(self.rng.choice(len(found), p=weights / weights.sum()))]
        return None

    def __call__(self, centre: np.ndarray, outward: np.ndarray, scale: float) -> tuple[Shape | None, str]:
        component = self._pick()
        if component is None:
            return None, "mosmed:none"
        frame = self.frame
        # Real mm to reference mm per axis (x, y, z): reference voxel size over real voxel size.
        to_reference = frame.voxel / np.array(frame.geometry.spacing, dtype=float)
        size = np.array(component.occupancy.shape[::-1])
        extent_mm = size * np.array(component.spacing)
        fit = scale * min(1.0, MAX_EXTENT_MM / float(extent_mm.max()))
        half = extent_mm * fit * to_reference / 2.0
        # Sites hug the pleura; move inwards by a third of the lesion so most of it stays in the lung.
        centre = centre - outward * float(np.min(half)) / 3.0
        box = frame.box(centre - half, centre + half)
        if box is None:
            return None, component.source
        Z, Y, X = frame.box_coords(box)
        shape = (Z.shape[0], Y.shape[1], X.shape[2])
        mirror = bool(self.rng.integers(2))
        index = []
        for axis, coord in enumerate((X, Y, Z)):
            local = (coord - centre[axis]) / (to_reference[axis] * fit) / component.spacing[axis] + (size[axis] - 1) / 2
            if axis == 0 and mirror:
                local = (size[0] - 1) - local
            index.append(np.broadcast_to(local, shape))
        soft = ndimage.map_coordinates(component.occupancy, [index[2], index[1], index[0]], order=1, cval=0.0,
                                       output=np.float32)
        return Shape(box, np.clip((soft - 0.5) / 0.4 + 0.5, 0.0, 1.0).astype(np.float32)), component.source
