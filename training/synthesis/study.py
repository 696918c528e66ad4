"""Write a phantom as a study folder: DICOM series, image and label NIfTI, and a README.

Layout of DIR (written atomically through `covseg.engine.atomic`):
  dicom/slice_NNNN.dcm   CT Image Storage, one file per slice, explicit VR little endian
  image.nii.gz           the same HU values (int16)
  labels.nii.gz          ground truth (uint8, values from covseg/labels.py)
  README.txt             seed, command, grid, label table and lesion list
Every file is a deterministic function of the phantom config (fixed UIDs, dates, gzip header).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from covseg.engine.atomic import atomic_output_dir, output_error
from covseg.labels import DEFAULT_CONSOLIDATION_THRESHOLD_HU, NAMES
from covseg.training.synthesis.dicom_series import write_dicom_series, write_nifti
from covseg.training.synthesis.phantom import GENERATOR_VERSION, Phantom


@dataclass(frozen=True)
class StudyFiles:
    """Where `write_study` put each output."""

    folder: Path
    dicom: tuple[Path, ...]
    image: Path
    labels: Path
    readme: Path


def readme_text(phantom: Phantom, command: str | None) -> str:
    """The study README: how it was made and what the labels hold (deterministic)."""
    config, geometry = phantom.config, phantom.image.geometry
    image, labels = phantom.image.array, phantom.labels.array
    lines = [
        "covseg synthetic chest CT phantom: not patient data; research use only.",
        f"Command: {command or '(library call)'}",
        f"Seed: {config.seed}   Generator version: {GENERATOR_VERSION}",
        "Lesions: " + (f"{', '.join(config.lesions)} (count {config.lesion_count}, scale {config.lesion_scale}, "
                       f"MosMed shapes: {'yes' if config.use_mosmed else 'no'})" if config.lesions else "none"),
        f"Grid (x, y, z): size {list(geometry.size)}, spacing mm {[round(v, 4) for v in geometry.spacing]}, "
        f"slice thickness {config.thickness_mm:g} mm, origin mm {[round(v, 3) for v in geometry.origin]}, "
        "direction identity (LPS: +x patient left, +y posterior, +z head)",
        f"Noise: {config.noise_hu:g} HU (correlated in-plane)",
        "Files: dicom/ (CT Image Storage, one file per slice), image.nii.gz (HU, int16), labels.nii.gz (uint8)",
        "",
        f"Labels (covseg/labels.py; infection split per voxel at {DEFAULT_CONSOLIDATION_THRESHOLD_HU:g} HU; "
        "semantics in covseg.training.synthesis.phantom):",
        f"{'value':>5}  {'name':<26}{'voxels':>10}{'volume_ml':>11}{'mean_HU':>9}",
    ]
    counts = np.bincount(labels.ravel(), minlength=len(NAMES))
    for value, name in NAMES.items():
        count = int(counts[value])
        mean = f"{float(image[labels == value].mean()):.1f}" if count else "-"
        lines.append(f"{value:>5}  {name:<26}{count:>10}{count * geometry.voxel_volume_ml:>11.2f}{mean:>9}")
    lines += ["", "Lesions drawn (centre in LPS mm):"]
    lines += [f"  {r.kind:<9}{r.pattern:<15}{r.side:<6}{r.centre_mm!s:<26}{r.source}" for r in phantom.lesions]
    if not phantom.lesions:
        lines.append("  none")
    if config.use_mosmed:
        lines += ["", "Lesion shapes from MosMedData (CC BY-NC-ND 3.0): non-commercial use only; do not redistribute."]
    return "\n".join(lines) + "\n"


def write_study(phantom: Phantom, out: Path, *, overwrite: bool = False, command: str | None = None) -> StudyFiles:
    """Write `phantom` into folder `out` (refused if it exists unless `overwrite`); raises OutputError."""
    with atomic_output_dir(Path(out), overwrite=overwrite) as temp:
        try:
            temp.chmod(0o755)  # mkdtemp makes it private; the study is an ordinary folder
            dicom = write_dicom_series(phantom.image, temp / "dicom", uid_seed=str(phantom.config.seed),
                                       series_description=phantom.image.info.series_description
                                       or "covseg synthetic phantom",
                                       slice_thickness_mm=phantom.config.thickness_mm)
            write_nifti(phantom.image.with_array(phantom.image.array.astype(np.int16)), temp / "image.nii.gz")
            write_nifti(phantom.labels, temp / "labels.nii.gz")
            (temp / "README.txt").write_text(readme_text(phantom, command), encoding="utf-8")
        except OSError as error:
            raise output_error(error, Path(out)) from error
        names = [path.name for path in dicom]
    folder = Path(out).expanduser().absolute()
    return StudyFiles(folder, tuple(folder / "dicom" / n for n in names), folder / "image.nii.gz",
                      folder / "labels.nii.gz", folder / "README.txt")
