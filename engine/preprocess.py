"""From a CT volume to the network's input, and exactly back (DESIGN.md section 2, stage 2).

Order: crop on the input grid (a box of array indices: the body, or a region such as the lung box
of a previous model), reorient to the closest axis-aligned orientation (SimpleITK DICOMOrient to
LPS: axes permuted and flipped only, no interpolation), resample to the package spacing (linear),
normalise intensities from the package metadata, and pad to at least one patch and to a multiple of
the divisor with the normalised value of air.

Oblique volumes: reorientation picks the closest axes and the small residual rotation stays in
the model grid's direction, so the image is interpolated once (to the package spacing), never
rotated onto an axis-aligned grid; the network sees the anatomy within the obliquity angle of
canonical, as it sees a tilted-gantry scan. Cropping before reorienting is equivalent (the
reorientation is a permutation) and keeps the crop box in the caller's (input array) indices.

`Undo` maps probabilities on the padded model grid back onto the input grid by physical
coordinates: one class at a time it resamples (linear, nearest-neighbour extrapolation at the
edges) onto the crop box at input resolution and keeps a running argmax, so the memory peak is a
few crop-sized arrays whatever the number of classes. Outside the crop box every voxel is class 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from covseg.engine.geometry import Geometry, array_to_sitk
from covseg.engine.package import AIR_HU, ModelPackage
from covseg.engine.volume import Volume
from covseg.errors import InputError, ModelPackageError

CANONICAL_ORIENTATION = "LPS"  # DICOMOrient code giving the identity direction
BODY_THRESHOLD_HU = -500.0
BODY_MARGIN_MM = 10.0
BODY_SCAN_STEP_MM = 4.0  # the body box is found on a subsampled grid: fast, the margin covers the step
SPACING_TOLERANCE_MM = 1e-3
MIXED = 255  # cell-map value of a model-grid cell whose corners disagree
UNDO_CHUNK = 1 << 21  # input voxels examined at once in the undo (bounds its temporary arrays)
Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Undo:
    """How to bring model outputs back onto `input_geometry` (the input volume's grid)."""

    input_geometry: Geometry
    crop_zyx: Box  # on the input array
    model_geometry: Geometry  # the resampled grid, before padding
    pad_zyx: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]

    @property
    def padded_shape(self) -> tuple[int, int, int]:
        z, y, x = self.model_geometry.shape_zyx
        (z0, z1), (y0, y1), (x0, x1) = self.pad_zyx
        return (z + z0 + z1, y + y0 + y1, x + x0 + x1)

    @property
    def crop_geometry(self) -> Geometry:
        return crop_geometry(self.input_geometry, self.crop_zyx)

    def _unpadded(self, probabilities: np.ndarray) -> np.ndarray:
        if tuple(probabilities.shape[-3:]) != self.padded_shape:
            raise ValueError(f"probabilities of shape {probabilities.shape} do not match the model grid "
                             f"{self.padded_shape} (z, y, x)")
        (z0, z1), (y0, y1), (x0, x1) = self.pad_zyx
        z, y, x = self.padded_shape
        return probabilities[..., z0:z - z1, y0:y - y1, x0:x - x1]

    def _class_on_crop(self, probability: np.ndarray, k: int) -> np.ndarray:
        """One class's probability (model grid, unpadded) resampled onto the crop box, float32."""
        image = array_to_sitk(np.ascontiguousarray(probability, dtype=np.float32), self.model_geometry)
        box = self.crop_geometry
        resampled = sitk.Resample(image, [int(v) for v in box.size], sitk.Transform(), sitk.sitkLinear,
                                  box.origin, box.spacing, box.direction, 1.0 if k == 0 else 0.0,
                                  sitk.sitkFloat32, True)
        return sitk.GetArrayFromImage(resampled)

    def probability_on_input(self, probabilities: np.ndarray, k: int) -> np.ndarray:
        """Class k's probability on the input grid, float32 (Z, Y, X); outside the crop box 1 for
        background and 0 for other classes."""
        probs = self._unpadded(probabilities)
        if not 0 <= k < probs.shape[0]:
            raise ValueError(f"class {k} out of range for {probs.shape[0]} classes")
        out = np.full(self.input_geometry.shape_zyx, 1.0 if k == 0 else 0.0, dtype=np.float32)
        out[self.crop_zyx] = self._class_on_crop(probs[k], k)
        return out

    def labels_on_input(self, probabilities: np.ndarray) -> np.ndarray:
        """Class indices (argmax of the linearly resampled probabilities; ties to the lower index)
        on the input grid, uint8 (Z, Y, X)."""
        probs = self._unpadded(probabilities)
        if probs.shape[0] > MIXED:
            raise ValueError(f"{probs.shape[0]} classes do not fit uint8 labels")
        out = np.zeros(self.input_geometry.shape_zyx, dtype=np.uint8)
        if min(probs.shape[1:]) < 2:
            out[self.crop_zyx] = self._labels_class_by_class(probs)
        else:
            out[self.crop_zyx] = self._labels_by_cells(probs)
        return out

    def _labels_class_by_class(self, probs: np.ndarray) -> np.ndarray:
        """Reference path: every class resampled over the whole crop, running argmax."""
        best = self._class_on_crop(probs[0], 0)
        labels = np.zeros(best.shape, dtype=np.uint8)
        for k in range(1, probs.shape[0]):
            candidate = self._class_on_crop(probs[k], k)
            better = candidate > best
            labels[better] = k
            np.maximum(best, candidate, out=best)
            del candidate, better
        return labels

    def _labels_by_cells(self, probs: np.ndarray) -> np.ndarray:
        """Fast path, same result. A point's linear interpolation mixes the 8 corners of its
        model-grid cell; when all 8 corners have the same argmax k, so has the mix (p_k >= p_j at
        every corner, hence in any convex combination). Such points take k from a nearest-neighbour
        lookup of a cell map; only points in mixed cells (near class boundaries) are interpolated,
        class by class, with scipy's map_coordinates (order 1, edge values beyond the grid: what
        SimpleITK's linear interpolator with nearest extrapolation computes)."""
        labels = self._cells_on_crop(_cell_labels(np.argmax(probs, axis=0).astype(np.uint8)))
        to_model = np.linalg.inv(self.model_geometry.affine_lps()) @ self.crop_geometry.affine_lps()
        slices = max(1, UNDO_CHUNK // (labels.shape[1] * labels.shape[2]))
        for z0 in range(0, labels.shape[0], slices):
            slab = labels[z0:z0 + slices]
            zyx = np.nonzero(slab == MIXED)
            if not zyx[0].size:
                continue
            index_xyz1 = np.stack([zyx[2], zyx[1], zyx[0] + z0, np.ones_like(zyx[0])]).astype(np.float64)
            coords = (to_model @ index_xyz1)[2::-1]  # continuous model (z, y, x) indices
            best = np.full(zyx[0].size, -np.inf, dtype=np.float32)
            chosen = np.zeros(zyx[0].size, dtype=np.uint8)
            for k in range(probs.shape[0]):
                value = ndimage.map_coordinates(probs[k], coords, order=1, mode="nearest", prefilter=False,
                                                output=np.float32)
                better = value > best
                chosen[better] = k
                np.maximum(best, value, out=best)
            slab[zyx] = chosen
        return labels

    def _cells_on_crop(self, cells: np.ndarray) -> np.ndarray:
        """The cell map (voxel centres at the model cells' centres) looked up by nearest neighbour."""
        model = self.model_geometry
        origin = np.asarray(model.origin) + model.direction_matrix @ (np.asarray(model.spacing) / 2.0)
        cell_geometry = Geometry(size=(cells.shape[2], cells.shape[1], cells.shape[0]), spacing=model.spacing,
                                 origin=(float(origin[0]), float(origin[1]), float(origin[2])),
                                 direction=model.direction)
        box = self.crop_geometry
        resampled = sitk.Resample(array_to_sitk(cells, cell_geometry), [int(v) for v in box.size], sitk.Transform(),
                                  sitk.sitkNearestNeighbor, box.origin, box.spacing, box.direction, MIXED,
                                  sitk.sitkUInt8, True)
        return sitk.GetArrayFromImage(resampled)


def _cell_labels(labels: np.ndarray) -> np.ndarray:
    """For each cell of 2x2x2 neighbouring voxels: their common label, or MIXED."""
    z, y, x = labels.shape
    corner = labels[:-1, :-1, :-1]
    same = np.ones(corner.shape, dtype=bool)
    for dz, dy, dx in ((0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)):
        same &= labels[dz:z - 1 + dz, dy:y - 1 + dy, dx:x - 1 + dx] == corner
    return np.where(same, corner, np.uint8(MIXED)).astype(np.uint8)


def crop_geometry(geometry: Geometry, box: Box) -> Geometry:
    """The grid of an index box (z, y, x slices with explicit bounds) of `geometry`."""
    start_xyz = np.array([box[2].start, box[1].start, box[0].start], dtype=float)
    size = (box[2].stop - box[2].start, box[1].stop - box[1].start, box[0].stop - box[0].start)
    origin = geometry.index_to_lps(start_xyz)
    return Geometry(size=size, spacing=geometry.spacing, origin=tuple(float(v) for v in origin),
                    direction=geometry.direction)


def _normalise_box(box: Box, shape: tuple[int, ...]) -> Box:
    out = []
    for axis, (s, n) in enumerate(zip(box, shape, strict=True)):
        start, stop, _ = s.indices(n)
        if stop <= start:
            raise InputError(f"region of interest {box} is empty along array axis {axis} (shape {shape})")
        out.append(slice(start, stop))
    return (out[0], out[1], out[2])


def mask_box(mask: np.ndarray, spacing_xyz: tuple[float, float, float], margin_mm: float) -> Box | None:
    """The bounding box of a (z, y, x) mask grown by margin_mm, clipped to the array; None if empty."""
    found = ndimage.find_objects(mask.astype(np.uint8, copy=False))
    if not found or found[0] is None:
        return None
    spacing_zyx = (spacing_xyz[2], spacing_xyz[1], spacing_xyz[0])
    box = []
    for s, n, sp in zip(found[0], mask.shape, spacing_zyx, strict=True):
        grow = math.ceil(margin_mm / sp)
        box.append(slice(max(s.start - grow, 0), min(s.stop + grow, n)))
    return (box[0], box[1], box[2])


def body_box(volume: Volume, *, threshold_hu: float = BODY_THRESHOLD_HU, margin_mm: float = BODY_MARGIN_MM) -> Box:
    """Box of the largest connected region above threshold_hu (the body), grown by margin_mm; the
    whole array when nothing is above the threshold."""
    spacing_zyx = volume.geometry.spacing[::-1]
    steps = [max(1, int(BODY_SCAN_STEP_MM // s)) for s in spacing_zyx]
    coarse = volume.array[::steps[0], ::steps[1], ::steps[2]] > threshold_hu
    components, count = ndimage.label(coarse)
    full: Box = (slice(0, volume.array.shape[0]), slice(0, volume.array.shape[1]), slice(0, volume.array.shape[2]))
    if count == 0:
        return full
    largest = int(np.argmax(np.bincount(components.ravel())[1:])) + 1
    coarse_box = ndimage.find_objects(components)[largest - 1]
    box = []
    for s, step, n, sp in zip(coarse_box, steps, volume.array.shape, spacing_zyx, strict=True):
        grow = math.ceil(margin_mm / sp) + step  # the subsampling may miss up to step - 1 voxels
        box.append(slice(max(s.start * step - grow, 0), min((s.stop - 1) * step + 1 + grow, n)))
    return (box[0], box[1], box[2])


def _resample_to(image: sitk.Image, spacing_xyz: tuple[float, float, float]) -> sitk.Image:
    """Linear resampling onto the same field of view (voxel edges kept) at a new spacing."""
    old_spacing = np.array(image.GetSpacing())
    new_spacing = np.array(spacing_xyz, dtype=float)
    if np.allclose(old_spacing, new_spacing, atol=SPACING_TOLERANCE_MM):
        return image
    old_size = np.array(image.GetSize())
    new_size = [max(1, round(v)) for v in old_size * old_spacing / new_spacing]
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin()) + direction @ ((new_spacing - old_spacing) / 2.0)
    return sitk.Resample(image, [int(v) for v in new_size], sitk.Transform(), sitk.sitkLinear,
                         [float(v) for v in origin], [float(v) for v in new_spacing], image.GetDirection(),
                         AIR_HU, sitk.sitkFloat32, True)


def _padding(shape: tuple[int, ...], package: ModelPackage) -> tuple[tuple[int, int], ...]:
    pad = []
    for size, patch, divisor in zip(shape, package.patch, package.divisor, strict=True):
        target = max(patch, math.ceil(size / divisor) * divisor)
        extra = target - size
        pad.append((extra // 2, extra - extra // 2))
    return tuple(pad)


def _crop_box(volume: Volume, package: ModelPackage, roi_zyx: Box | None) -> Box:
    shape = volume.array.shape
    if roi_zyx is not None:
        return _normalise_box(roi_zyx, shape)
    if package.crop in ("body", "lung"):  # a lung-box model run without a box falls back to the body
        return body_box(volume)
    return (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))


def preprocess(volume: Volume, package: ModelPackage, *, roi_zyx: Box | None = None) -> tuple[np.ndarray, Undo]:
    """The network input float32 (C, z, y, x) of a CT volume in HU, and how to undo it.

    roi_zyx: a box of input-array indices to crop to instead of the package's own crop rule
    (e.g. the lung box of the lung model's labels via `mask_box`).
    """
    if package.channels != 1:
        raise ModelPackageError(f"model package {package.path}: {package.channels} input channels; "
                                "CT preprocessing makes 1")
    box = _crop_box(volume, package, roi_zyx)
    geometry = crop_geometry(volume.geometry, box)
    image = array_to_sitk(np.asarray(volume.array[box], dtype=np.float32), geometry)
    image = sitk.DICOMOrient(image, CANONICAL_ORIENTATION)
    image = _resample_to(image, package.spacing_mm)
    model_geometry = Geometry.from_sitk(image)
    array = package.normalization.apply(sitk.GetArrayViewFromImage(image))
    del image
    pad = _padding(array.shape, package)
    air = package.normalization.value_of(AIR_HU)
    if any(p != (0, 0) for p in pad):
        array = np.pad(array, pad, mode="constant", constant_values=air)
    undo = Undo(volume.geometry, box, model_geometry, pad)  # type: ignore[arg-type]
    return np.ascontiguousarray(array[None], dtype=np.float32), undo
