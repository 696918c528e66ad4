"""preview.png: an axial and a coronal slice at lung window with the masks overlaid and a legend.

Display orientation is radiological: each view is resampled by SimpleITK onto an LPS-aligned plane
with square pixels (any input direction, oblique included; only the two planes are computed), so
patient right is on the image's left, anterior at the top of the axial view and superior at the top
of the coronal view. The axial slice goes through the most infection, else the
lungs' centre; the coronal slice through the same structure's centre. Masks are tinted (alpha 0.4)
and outlined in the label's own colour from covseg/labels.py. PIL only (no matplotlib needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from covseg.engine.geometry import Geometry, array_to_sitk
from covseg.engine.postprocess import axial_axis, centroid, label_mask
from covseg.labels import ENGINE_OUTPUT_LABELS, INFECTION_LABELS, LUNG_LABELS

LUNG_WINDOW_HU = (-1350.0, 150.0)
ALPHA = 0.4
PANEL_HEIGHT = 360
LEGEND_ROW = 18


def _focus_lps(labels: np.ndarray, geometry: Geometry) -> np.ndarray:
    """LPS point the views go through: the axial index plane with most infection (its infection
    centroid), else the lungs' centroid, else the volume centre."""
    infection = label_mask(labels, [int(v) for v in INFECTION_LABELS])
    if infection.any():
        axis = axial_axis(geometry)
        others = tuple(a for a in range(3) if a != axis)
        best = int(np.argmax(np.count_nonzero(infection, axis=others)))
        plane = np.zeros_like(infection)
        index: list[slice | int] = [slice(None)] * 3
        index[axis] = best
        plane[tuple(index)] = infection[tuple(index)]
        point = centroid(plane)
    else:
        lungs = label_mask(labels, [int(v) for v in LUNG_LABELS])
        point = centroid(lungs) if lungs.any() else (np.asarray(labels.shape, dtype=float) - 1) / 2
    return np.asarray(geometry.index_to_lps(point[::-1]))


def _slice(image: sitk.Image, geometry: Geometry, focus: np.ndarray, view: str,
           interpolator: int, default: float) -> np.ndarray:
    """One radiological view through `focus`, resampled (SimpleITK) onto a square-pixel LPS-aligned plane:
    rows anterior->posterior (axial) or superior->inferior (coronal), columns patient right->left."""
    corners = np.array([[i, j, k] for i in (0, geometry.size[0] - 1) for j in (0, geometry.size[1] - 1)
                        for k in (0, geometry.size[2] - 1)], dtype=float)
    lps = geometry.index_to_lps(corners)
    low, high = lps.min(axis=0), lps.max(axis=0)
    pixel = float(min(geometry.spacing))
    if view == "axial":
        direction = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        origin = (low[0], low[1], focus[2])
        size = (high[0] - low[0], high[1] - low[1])
    else:  # coronal: column index -> +x (left), row index -> -z (down), third axis -> +y
        direction = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)
        origin = (low[0], focus[1], high[2])
        size = (high[0] - low[0], high[2] - low[2])
    shape = [max(round(extent / pixel) + 1, 1) for extent in size] + [1]
    out = sitk.Resample(image, shape, sitk.Transform(), interpolator, [float(v) for v in origin],
                        (pixel, pixel, pixel), direction, default, image.GetPixelID())
    return sitk.GetArrayFromImage(out)[0]


def _render(hu: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """RGB uint8 of one slice: lung-window grey, label tint and outline."""
    low, high = LUNG_WINDOW_HU
    grey = np.clip((hu - low) / (high - low) * 255.0, 0, 255)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for info in ENGINE_OUTPUT_LABELS:
        mask = labels == info.value
        if not mask.any():
            continue
        colour = np.asarray(info.colour, dtype=float)
        rgb[mask] = (1 - ALPHA) * rgb[mask] + ALPHA * colour
        outline = mask & ~ndimage.binary_erosion(mask)
        rgb[outline] = colour
    return rgb.astype(np.uint8)


def _panel(rgb: np.ndarray, height: int) -> Image.Image:
    """A square-pixel panel scaled to `height` pixels."""
    rows, cols = rgb.shape[:2]
    return Image.fromarray(rgb, "RGB").resize((max(round(height * cols / rows), 1), height),
                                              Image.Resampling.NEAREST)


def render_preview(labels: np.ndarray, hu: np.ndarray, geometry: Geometry, title: str = "") -> Image.Image:
    """The preview image (see module docstring)."""
    focus = _focus_lps(labels, geometry)
    label_image = array_to_sitk(labels, geometry)
    hu_image = array_to_sitk(np.asarray(hu, dtype=np.float32), geometry)
    panels = []
    for view in ("axial", "coronal"):
        lab = _slice(label_image, geometry, focus, view, sitk.sitkNearestNeighbor, 0)
        img = _slice(hu_image, geometry, focus, view, sitk.sitkLinear, -1024.0)
        panels.append(_panel(_render(img, lab), PANEL_HEIGHT))
    axial, coronal = panels
    present = [info for info in ENGINE_OUTPUT_LABELS if np.count_nonzero(labels == info.value)]
    legend_height = LEGEND_ROW * (len(present) + 2)
    canvas = Image.new("RGB", (axial.width + coronal.width + 30, PANEL_HEIGHT + legend_height + 20), "black")
    canvas.paste(axial, (10, 20))
    canvas.paste(coronal, (axial.width + 20, 20))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((10, 4), f"axial (z {focus[2]:.0f} mm)  R | L", fill="white", font=font)
    draw.text((axial.width + 20, 4), f"coronal (y {focus[1]:.0f} mm)  R | L   {title}", fill="white", font=font)
    top = PANEL_HEIGHT + 28
    for i, info in enumerate(present):
        row = top + i * LEGEND_ROW
        draw.rectangle((10, row, 24, row + 12), fill=info.colour)
        draw.text((30, row), info.display_name, fill="white", font=font)
    draw.text((10, top + len(present) * LEGEND_ROW), "lung window -1350..150 HU; research use only",
              fill="white", font=font)
    return canvas


def write_preview(labels: np.ndarray, hu: np.ndarray, geometry: Geometry, path: Path, title: str = "") -> Path:
    render_preview(labels, hu, geometry, title).save(path, format="PNG")
    return Path(path)
