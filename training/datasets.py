"""Readers for published dataset layouts, all returning the same `Dataset` of `Case`s.

Layouts (detected by `load_dataset`):
- "msd": Medical Segmentation Decathlon / nnU-Net raw (dataset.json, imagesTr/, labelsTr/);
- "covid19_ct_seg": Ma et al. COVID-19-CT-Seg (COVID-19-CT-Seg_20cases/ or images/, with
  Infection_Mask/, Lung_Mask/, Lung_and_Infection_Mask/; masks named like their images);
- "pairs": images/ + labels/ with matching file names, labels already in covseg values;
- "ircad": DICOM series with one DICOM mask series per structure (3D-IRCADb: PATIENT_DICOM(.zip)
  and MASKS_DICOM(.zip)/<organ>/, values 0/255), one case per folder holding PATIENT_DICOM.

Every image and mask is read by the engine's `read_study` (zips included); a case's labels are
painted in covseg label values (covseg/labels.py) on the image grid, sources in order, later ones
over earlier ones. A source label that no covseg label matches becomes background and is listed in
`Dataset.notes`. Infection masks that do not separate ground glass from consolidation are split by
HU with the engine's rule (`DEFAULT_CONSOLIDATION_THRESHOLD_HU`), so that the ground truth follows
the same definition as covseg's output; the "infection" structure is unaffected by the split.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from covseg.engine.volume import Volume
from covseg.errors import InputError
from covseg.labels import BY_NAME, DEFAULT_CONSOLIDATION_THRESHOLD_HU, NAMES, Label
from covseg.training.evaluation import case_id_of

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
# COVID-19-CT-Seg (Zenodo 3757476) README: Lung_Mask 1 = left lung, 2 = right lung; Lung_and_Infection_Mask
# adds 3 = infection; Infection_Mask is 0/1.
COVID_LUNG_AND_INFECTION = {1: int(Label.LUNG_LEFT), 2: int(Label.LUNG_RIGHT), 3: int(Label.INFECTION_GROUND_GLASS)}
COVID_LUNG = {1: int(Label.LUNG_LEFT), 2: int(Label.LUNG_RIGHT)}
# 3D-IRCADb organ folders mapped to covseg labels; tumours and vessels lie inside the liver and stay liver.
IRCAD_ORGANS: dict[str, int] = {"liver": int(Label.LIVER), "leftlung": int(Label.LUNG_LEFT),
                                "rightlung": int(Label.LUNG_RIGHT)}


@dataclass(frozen=True)
class LabelSource:
    """One mask to paint: a file, folder or zip (`member`: a folder inside the zip holding one series).

    `values` maps source values to covseg values; `nonzero_to` paints every non-zero voxel with one
    value instead (0/255 DICOM masks). `split_infection` splits the painted infection by HU.
    """

    path: Path
    values: Mapping[int, int] = field(default_factory=dict)
    nonzero_to: int | None = None
    member: str | None = None
    split_infection: bool = False


@dataclass(frozen=True)
class Case:
    id: str
    image: Path
    labels: tuple[LabelSource, ...] = ()

    @property
    def labelled(self) -> bool:
        return bool(self.labels)

    def load_image(self) -> Volume:
        return read_volume(self.image)

    def load_labels(self, image: Volume | None = None) -> Volume:
        """The covseg label map (uint8) on the image grid; InputError if a mask lies on another grid."""
        if not self.labels:
            raise InputError(f"case {self.id}: {self.image} has no label masks")
        if image is None and any(s.split_infection for s in self.labels):
            image = self.load_image()
        out: np.ndarray | None = None
        reference = image
        for source in self.labels:
            mask = read_volume(source.path, member=source.member)
            if reference is None:
                reference = mask
            elif not mask.geometry.same_grid(reference.geometry):
                raise InputError(f"case {self.id}: mask {_describe(source)} grid {mask.geometry.size} "
                                 f"differs from {reference.geometry.size} of the image")
            out = np.zeros(reference.geometry.shape_zyx, np.uint8) if out is None else out
            _paint(out, np.rint(mask.array).astype(np.int32), source)
            if source.split_infection and image is not None:
                _split_infection(out, image.array)
        assert out is not None and reference is not None  # at least one source
        return Volume(out, reference.geometry, reference.info)

    def load(self) -> tuple[Volume, Volume]:
        image = self.load_image()
        return image, self.load_labels(image)


@dataclass(frozen=True)
class Dataset:
    name: str
    layout: str
    root: Path
    cases: tuple[Case, ...]
    notes: tuple[str, ...] = ()

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.cases)

    def case(self, case_id: str) -> Case:
        for case in self.cases:
            if case.id == case_id:
                return case
        raise InputError(f"case {case_id} is not in dataset {self.name} ({self.root})")

    def labelled(self) -> tuple[Case, ...]:
        return tuple(c for c in self.cases if c.labelled)


def _describe(source: LabelSource) -> str:
    return f"{source.path}:{source.member}" if source.member else str(source.path)


def _paint(out: np.ndarray, mask: np.ndarray, source: LabelSource) -> None:
    if source.nonzero_to is not None:
        out[mask != 0] = source.nonzero_to
    for value, target in source.values.items():
        out[mask == value] = target


def _split_infection(labels: np.ndarray, hu: np.ndarray) -> None:
    infection = (labels == Label.INFECTION_GROUND_GLASS) | (labels == Label.INFECTION_CONSOLIDATION)
    labels[infection & (hu < DEFAULT_CONSOLIDATION_THRESHOLD_HU)] = Label.INFECTION_GROUND_GLASS
    labels[infection & (hu >= DEFAULT_CONSOLIDATION_THRESHOLD_HU)] = Label.INFECTION_CONSOLIDATION


def read_volume(path: Path, *, member: str | None = None) -> Volume:
    """Read with the engine; `member` picks the series in a zip whose files lie in that folder."""
    from covseg.engine.reading import read_study

    if member is None:
        return read_study(path, force=True)
    return read_study(path, series_uid=_member_series_uid(path, member), force=True)


def _member_series_uid(path: Path, member: str) -> str:
    """SeriesInstanceUID of the first file in folder `member` of a zip, from its header alone
    (cheaper than the engine's list_series, which extracts the whole archive once more)."""
    import io

    import pydicom
    from pydicom.errors import InvalidDicomError

    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if not n.endswith("/") and Path(n).parent.name == member)
        for name in names:
            try:
                header = pydicom.dcmread(io.BytesIO(archive.read(name)), stop_before_pixels=True)
            except InvalidDicomError:
                continue
            if "SeriesInstanceUID" in header:
                return str(header.SeriesInstanceUID)
    raise InputError(f"{path}: no DICOM series in a folder named {member}")


def covseg_label_for(name: str) -> int | None:
    """The covseg label value a dataset's label name means (None when no covseg label matches)."""
    text = name.strip().lower().replace("_", " ").replace("-", " ")
    if text in ("background", "bg", ""):
        return 0
    if text.replace(" ", "_") in BY_NAME:
        return BY_NAME[text.replace(" ", "_")].value
    rules: tuple[tuple[tuple[str, ...], Label], ...] = (
        (("tumo", "cancer", "nodule", "mass", "neoplasm"), Label.LESION_NODULE_TUMOUR),
        (("effusion",), Label.LESION_PLEURAL_EFFUSION),
        (("ground glass", "ggo"), Label.INFECTION_GROUND_GLASS),
        (("consolidation",), Label.INFECTION_CONSOLIDATION),
        (("infection", "covid", "pneumonia"), Label.INFECTION_GROUND_GLASS),
        (("liver",), Label.LIVER),
    )
    for words, label in rules:
        if any(w in text for w in words):
            return int(label)
    if "lung" in text and "left" in text:
        return int(Label.LUNG_LEFT)
    if "lung" in text and "right" in text:
        return int(Label.LUNG_RIGHT)
    return None


def _find_dir(root: Path, *names: str) -> Path | None:
    wanted = {n.lower() for n in names}
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        if child.is_dir() and child.name.lower() in wanted:
            return child
    return None


def _images(folder: Path) -> dict[str, Path]:
    return {case_id_of(p): p for p in sorted(folder.iterdir())
            if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)}


# --- MSD ---------------------------------------------------------------------------------------------
def _msd_label_names(raw: Mapping[str, object]) -> dict[int, str]:
    """dataset.json labels, MSD ({"1": "cancer"}) or nnU-Net v2 ({"cancer": 1}) orientation."""
    names: dict[int, str] = {}
    for key, value in raw.items():
        if str(key).strip().isdigit():
            names[int(key)] = str(value)
        elif isinstance(value, int):
            names[value] = str(key)
    return names


def read_msd(root: Path) -> Dataset:
    spec_path = root / "dataset.json"
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{spec_path}: not a readable dataset.json ({error})") from error
    names = _msd_label_names(spec.get("labels", {}))
    values: dict[int, int] = {}
    notes = []
    for value, name in sorted(names.items()):
        target = covseg_label_for(name)
        if target is None:
            notes.append(f"label {value} ({name}) has no covseg label: read as background")
        elif value != 0:
            values[value] = target
    split = any(covseg_label_for(n) == Label.INFECTION_GROUND_GLASS and "ground" not in n.lower()
                for n in names.values())
    pairs = _msd_pairs(root, spec)
    cases = tuple(Case(cid, image, (LabelSource(label, values, split_infection=split),))
                  for cid, (image, label) in pairs.items())
    return Dataset(str(spec.get("name", root.name)), "msd", root, cases, tuple(notes))


def _msd_pairs(root: Path, spec: Mapping[str, object]) -> dict[str, tuple[Path, Path]]:
    training = spec.get("training")
    pairs: dict[str, tuple[Path, Path]] = {}
    if isinstance(training, list) and training:
        for entry in training:
            image, label = root / str(entry["image"]), root / str(entry["label"])
            if not image.is_file() or not label.is_file():
                raise InputError(f"{root / 'dataset.json'}: listed file {image if not image.is_file() else label} "
                                 "does not exist")
            pairs[case_id_of(label)] = (image, label)
        return pairs
    images, labels = root / "imagesTr", root / "labelsTr"  # nnU-Net v2: case_0000.nii.gz + case.nii.gz
    if not images.is_dir() or not labels.is_dir():
        raise InputError(f"{root}: dataset.json lists no training cases and imagesTr/labelsTr are missing")
    found = _images(images)
    for cid, label in _images(labels).items():
        match = found.get(f"{cid}_0000", found.get(cid))
        if match is None:
            raise InputError(f"{labels / label.name}: no image {cid}_0000 in {images}")
        pairs[cid] = (match, label)
    return pairs


# --- COVID-19-CT-Seg ---------------------------------------------------------------------------------
def read_covid19_ct_seg(root: Path) -> Dataset:
    images = _find_dir(root, "COVID-19-CT-Seg_20cases", "images", "ct_scans")
    if images is None:
        raise InputError(f"{root}: COVID-19-CT-Seg layout needs a COVID-19-CT-Seg_20cases/ or images/ folder")
    both = _find_dir(root, "Lung_and_Infection_Mask")
    lung = _find_dir(root, "Lung_Mask")
    infection = _find_dir(root, "Infection_Mask")
    cases = []
    for cid, image in _images(images).items():
        sources: list[LabelSource] = []
        if both is not None and (path := _match(both, cid)) is not None:
            sources.append(LabelSource(path, COVID_LUNG_AND_INFECTION, split_infection=True))
        else:
            if lung is not None and (path := _match(lung, cid)) is not None:
                sources.append(LabelSource(path, COVID_LUNG))
            if infection is not None and (path := _match(infection, cid)) is not None:
                sources.append(LabelSource(path, nonzero_to=int(Label.INFECTION_GROUND_GLASS), split_infection=True))
        cases.append(Case(cid, image, tuple(sources)))
    notes = ("lung values 1/2 read as left/right lung per the dataset README",)
    return Dataset("COVID-19-CT-Seg", "covid19_ct_seg", root, tuple(cases), notes)


def _match(folder: Path, case_id: str) -> Path | None:
    return _images(folder).get(case_id)


# --- plain pairs -------------------------------------------------------------------------------------
def read_pairs(root: Path, *, label_map: Mapping[int, int] | None = None) -> Dataset:
    images, labels = _find_dir(root, "images"), _find_dir(root, "labels")
    if images is None or labels is None:
        raise InputError(f"{root}: the pairs layout needs images/ and labels/")
    values = dict(label_map) if label_map is not None else {v: v for v in NAMES if v != 0}
    label_files = _images(labels)
    cases = tuple(Case(cid, image, (LabelSource(label_files[cid], values),) if cid in label_files else ())
                  for cid, image in _images(images).items())
    return Dataset(root.name, "pairs", root, cases)


# --- IRCAD (DICOM + per-structure DICOM masks) -------------------------------------------------------
def _ircad_part(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.zip", folder / name):
        if candidate.exists():
            return candidate
    return None


def _ircad_organs(masks: Path) -> list[str]:
    if masks.is_dir():
        return sorted(p.name for p in masks.iterdir() if p.is_dir())
    with zipfile.ZipFile(masks) as archive:
        parts = [Path(n).parts for n in archive.namelist() if not n.endswith("/")]
    return sorted({p[-2] for p in parts if len(p) >= 2})


def _ircad_case(folder: Path, organs: Mapping[str, int]) -> Case:
    image = _ircad_part(folder, "PATIENT_DICOM")
    assert image is not None
    masks = _ircad_part(folder, "MASKS_DICOM")
    sources: list[LabelSource] = []
    if masks is not None:
        present = _ircad_organs(masks)
        for organ, value in organs.items():
            if organ not in present:
                continue
            if masks.is_dir():
                sources.append(LabelSource(masks / organ, nonzero_to=value))
            else:
                sources.append(LabelSource(masks, nonzero_to=value, member=organ))
    return Case(folder.name, image, tuple(sources))


def read_ircad(root: Path, *, organs: Mapping[str, int] | None = None) -> Dataset:
    chosen = IRCAD_ORGANS if organs is None else organs
    folders = [root] if _ircad_part(root, "PATIENT_DICOM") else [
        p for p in sorted(root.iterdir()) if p.is_dir() and _ircad_part(p, "PATIENT_DICOM")]
    if not folders:
        raise InputError(f"{root}: no PATIENT_DICOM(.zip) in it or in its sub-folders")
    cases = tuple(_ircad_case(f, chosen) for f in folders)
    notes = tuple(f"case {c.id}: no masks of {', '.join(chosen)}" for c in cases if not c.labelled)
    return Dataset(root.name, "ircad", root, cases, notes)


# --- detection ---------------------------------------------------------------------------------------
LAYOUTS = ("msd", "covid19_ct_seg", "pairs", "ircad")


def detect_layout(root: Path) -> str:
    if (root / "dataset.json").is_file():
        return "msd"
    if _find_dir(root, "Infection_Mask", "Lung_and_Infection_Mask", "Lung_Mask") is not None:
        return "covid19_ct_seg"
    if _find_dir(root, "images") is not None and _find_dir(root, "labels") is not None:
        return "pairs"
    if _ircad_part(root, "PATIENT_DICOM") or any(
            p.is_dir() and _ircad_part(p, "PATIENT_DICOM") for p in root.iterdir()):
        return "ircad"
    raise InputError(
        f"{root}: unknown dataset layout; expected dataset.json (MSD), Infection_Mask/ (COVID-19-CT-Seg), "
        "images/ + labels/ (pairs) or PATIENT_DICOM(.zip) + MASKS_DICOM(.zip) (IRCAD)"
    )


def load_dataset(path: str | Path, *, layout: str | None = None) -> Dataset:
    """The dataset at `path` (its folder, or its dataset.json), layout detected unless given."""
    root = Path(path).expanduser()
    if root.is_file() and root.name == "dataset.json":
        root = root.parent
    if not root.is_dir():
        raise InputError(f"{root}: no such dataset folder")
    chosen = layout or detect_layout(root)
    readers = {"msd": read_msd, "covid19_ct_seg": read_covid19_ct_seg, "pairs": read_pairs, "ircad": read_ircad}
    if chosen not in readers:
        raise InputError(f"unknown dataset layout {chosen!r}; known: {', '.join(LAYOUTS)}")
    dataset = readers[chosen](root)
    if not dataset.cases:
        raise InputError(f"{root}: {chosen} layout but no cases found")
    return dataset
