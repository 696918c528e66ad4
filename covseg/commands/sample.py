"""`covseg sample`: write a synthetic chest CT study with ground-truth labels (the phantom).

Bad option values raise `click.BadParameter` (the click that covseg.cli maps to exit code 2); typer
0.29 raises its vendored copy, which covseg.cli does not recognise yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer

ORDER = 80
DEFAULT_SIZE = "192,192,64"
DEFAULT_SPACING = "1.9,1.9,4.5"


def _triple(text: str, name: str, kind: type) -> tuple:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(kind(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"{name} must be three comma-separated numbers X,Y,Z, got {text!r}") from None
    if len(values) != 3 or any(v <= 0 for v in values):
        raise click.BadParameter(f"{name} must be three positive numbers X,Y,Z, got {text!r}")
    return values


def _lesions(text: str) -> tuple[str, ...]:
    from covseg.training.synthesis.config import LESION_KINDS

    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    if kinds in ((), ("none",)):
        return ()
    unknown = [k for k in kinds if k not in LESION_KINDS]
    if unknown:
        raise click.BadParameter(f"unknown lesion kind {unknown[0]!r}; use none or some of {','.join(LESION_KINDS)}")
    return kinds


def sample(
    out: Annotated[Path, typer.Option("--out", "-o", help="Study folder to create (dicom/, image.nii.gz, "
                                      "labels.nii.gz, README.txt).")],
    seed: Annotated[int, typer.Option(help="Random seed: the same seed and options give identical files.")] = 0,
    lesions: Annotated[str, typer.Option(help="Lesion kinds, comma-separated: covid, nodule, effusion; or none.")
                       ] = "covid",
    size: Annotated[str, typer.Option(help="Grid size in voxels X,Y,Z.")] = DEFAULT_SIZE,
    spacing: Annotated[str, typer.Option(help="Voxel spacing in mm X,Y,Z.")] = DEFAULT_SPACING,
    slice_thickness: Annotated[float | None, typer.Option(help="Slice thickness in mm (default: the z spacing).")
                               ] = None,
    lesion_count: Annotated[int, typer.Option(min=0, help="Number of COVID-19 lesions.")] = 6,
    noise: Annotated[float, typer.Option(min=0.0, help="Noise standard deviation in HU.")] = 15.0,
    mosmed: Annotated[bool, typer.Option(help="Take lesion shapes from the MosMed masks (CC BY-NC-ND; "
                                         "$COVSEG_SHARED_DATA/mosmed_covid_masks/masks).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing study folder.")] = False,
) -> None:
    """Write a synthetic chest CT (DICOM + NIfTI) with its ground-truth label map."""
    from covseg.errors import InputError
    from covseg.training.synthesis.config import PhantomConfig
    from covseg.training.synthesis.mosmed_shapes import MosmedUnavailableError
    from covseg.training.synthesis.phantom import make_phantom
    from covseg.training.synthesis.study import write_study

    size_xyz = _triple(size, "--size", int)
    spacing_xyz = _triple(spacing, "--spacing", float)
    kinds = _lesions(lesions)
    try:
        config = PhantomConfig(seed=seed, size_xyz=size_xyz, spacing_xyz=spacing_xyz,
                               slice_thickness_mm=slice_thickness, lesions=kinds, lesion_count=lesion_count,
                               use_mosmed=mosmed, noise_hu=noise)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    command = " ".join(["covseg sample --out <DIR>", f"--seed {seed}", f"--lesions {','.join(kinds) or 'none'}",
                        f"--size {','.join(str(v) for v in size_xyz)}",
                        f"--spacing {','.join(f'{v:g}' for v in spacing_xyz)}"]
                       + ([f"--slice-thickness {slice_thickness:g}"] if slice_thickness is not None else [])
                       + ([f"--lesion-count {lesion_count}"] if lesion_count != 6 else [])
                       + ([f"--noise {noise:g}"] if noise != 15.0 else []) + (["--mosmed"] if mosmed else []))
    from covseg.engine.atomic import check_output_dir

    check_output_dir(out, overwrite=overwrite)  # fail before the work, not after it
    try:
        phantom = make_phantom(config)
    except MosmedUnavailableError as error:
        raise InputError(str(error)) from None
    files = write_study(phantom, out, overwrite=overwrite, command=command)
    typer.echo(f"wrote {files.folder}: {len(files.dicom)} DICOM slices, image.nii.gz, labels.nii.gz, README.txt")


def register(app: typer.Typer) -> None:
    app.command("sample", help="Write a synthetic chest CT study with ground-truth labels (phantom).")(sample)
