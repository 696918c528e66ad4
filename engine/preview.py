"""preview.png: an axial and a coronal slice at lung window with the masks overlaid and a legend.

Display orientation is radiological: the images are reoriented to LPS with SimpleITK (axes permuted
and flipped only), so patient right is on the image's left, anterior at the top of the axial view and
superior at the top of the coronal view. The axial slice goes through the most infection, else the
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
from covseg.labels import BY_VALUE, ENGINE_OUTPUT_LABELS, INFECTION_LABELS, LUNG_LABELS

LUNG_WINDOW_HU = (-1350.0, 150.0)
ALPHA = 0.4
PANEL_HEIGHT = 360
LEGEND_ROW = 18


def _to_lps(array: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, tuple[float, float, float]]:
    image = sitk.DICOMOrient(array_to_sitk(array, geometry), "LPS")
    sx, sy, sz = image.GetSpacing()
    return sitk.GetArrayFromImage(image), (float(sx), float(sy), float(sz))


def _centre(labels: np.ndarray) -> tuple[int, int, int]:
    """(z, y, x) through the largest infection slice, else the lungs' centre, else the middle."""
    infection = np.isin(labels, [int(v) for v in INFECTION_LABELS])
    lungs = np.isin(labels, [int(v) for v in LUNG_LABELS])
    target = infection if infection.any() else lungs if lungs.any() else None
    if target is None:
        return tuple(int(s // 2) for s in labels.shape)  # type: ignore[return-value]
    z, y, x = (round(c) for c in ndimage.center_of_mass(target))
    if target is infection:
        z = int(np.argmax(target.sum(axis=(1, 2))))
    return z, y, x


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


def _panel(rgb: np.ndarray, pixel_mm: tuple[float, float], height: int) -> Image.Image:
    """A panel scaled to `height` pixels keeping the physical aspect (row mm, column mm)."""
    rows, cols = rgb.shape[:2]
    aspect = (cols * pixel_mm[1]) / max(rows * pixel_mm[0], 1e-6)
    size = (max(round(height * aspect), 1), height)
    return Image.fromarray(rgb, "RGB").resize(size, Image.Resampling.NEAREST)


def render_preview(labels: np.ndarray, hu: np.ndarray, geometry: Geometry, title: str = "") -> Image.Image:
    """The preview image (see module docstring)."""
    lab, spacing = _to_lps(labels, geometry)
    img, _ = _to_lps(np.asarray(hu, dtype=np.float32), geometry)
    z, y, _x = _centre(lab)
    sx, sy, sz = spacing
    axial = _panel(_render(img[z], lab[z]), (sy, sx), PANEL_HEIGHT)
    coronal = _panel(_render(img[::-1, y, :], lab[::-1, y, :]), (sz, sx), PANEL_HEIGHT)
    present = [BY_VALUE[v] for v in np.unique(lab) if v in BY_VALUE and BY_VALUE[v].in_engine_output]
    legend_height = LEGEND_ROW * (len(present) + 2)
    canvas = Image.new("RGB", (axial.width + coronal.width + 30, PANEL_HEIGHT + legend_height + 20), "black")
    canvas.paste(axial, (10, 20))
    canvas.paste(coronal, (axial.width + 20, 20))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((10, 4), f"axial (slice {z})  R | L", fill="white", font=font)
    draw.text((axial.width + 20, 4), f"coronal  R | L   {title}", fill="white", font=font)
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
