"""Contact sheets: every Nth axial slice of a CT with its label overlay, for inspecting references.

The lung references of real CT are made by a classical method (lung_reference.py); a person
inspects them slice by slice on these sheets, which are kept under docs/inspection/.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from covseg.engine.volume import Volume
from covseg.labels import BY_VALUE

LUNG_WINDOW_HU = (-1350.0, 150.0)
# Abdominal soft-tissue window (W 400, L 50): liver, spleen and muscle are indistinguishable at lung window.
SOFT_TISSUE_WINDOW_HU = (-150.0, 250.0)


def overlay_slice(hu: np.ndarray, labels: np.ndarray, alpha: float = 0.45,
                  window: tuple[float, float] = LUNG_WINDOW_HU) -> np.ndarray:
    """An RGB uint8 image of one axial slice at the given window with label colours blended in."""
    low, high = window
    grey = np.clip((hu - low) / (high - low), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for value in np.unique(labels):
        if int(value) == 0 or int(value) not in BY_VALUE:
            continue
        mask = labels == value
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(BY_VALUE[int(value)].colour, dtype=float)
    return rgb.astype(np.uint8)


def contact_sheet(image: Volume, labels: Volume, path: Path, *, every: int = 4, columns: int = 8,
                  tile: int = 144, title: str = "", window: tuple[float, float] = LUNG_WINDOW_HU) -> Path:
    """Write a PNG of every `every`-th axial slice (top of the array first), each labelled with its index."""
    spacing_x, spacing_y = image.geometry.spacing[0], image.geometry.spacing[1]
    height = max(1, round(tile * image.array.shape[1] * spacing_y / (image.array.shape[2] * spacing_x)))
    indices = list(range(image.array.shape[0] - 1, -1, -every))
    rows = (len(indices) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * tile, rows * height + 24), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 4), title, fill=(255, 255, 255))
    for n, z in enumerate(indices):
        rgb = overlay_slice(image.array[z], labels.array[z], window=window)
        picture = Image.fromarray(rgb).resize((tile, height), Image.Resampling.BILINEAR)
        x, y = (n % columns) * tile, 24 + (n // columns) * height
        sheet.paste(picture, (x, y))
        draw.text((x + 3, y + 3), f"z={z}", fill=(255, 255, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    # A 96-colour palette keeps a sheet of a whole CT near 0.3 MB, small enough to keep in docs/.
    sheet.quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path
