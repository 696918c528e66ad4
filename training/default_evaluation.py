"""Evaluation of the default models through the product path (`covseg infer`), issue 11.

Every prediction is made by the CLI on a file, exactly as a user runs it, and scored against a
reference that the model never saw:

- lung: the classical reference (lung_reference.py) of lungdx_a0001, the patient left out of training,
  and held-out phantoms (seeds the training set does not use); left/right swaps are checked;
- infection: COVID-19 lesions synthesised into lungdx_a0001 (held out by anatomy) with MosMed shapes of
  the test split (held out by shape), held-out phantoms with test shapes; and the false-positive
  infection volume on the unmodified lungdx_a0001. That CT holds an adenocarcinoma with an opacity
  around it, a real lesion that is neither COVID-19 nor normal lung: its region (the annotated boxes
  grown by TUMOUR_MARGIN_MM) is scored both ways, counted and ignored, and the false positives are
  split into components that touch the tumour and the rest of the lungs;
- liver: 3D-IRCADb 1.17, whose manual liver mask was never used for training.
"""

from __future__ import annotations

import json
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from covseg.cli import run
from covseg.engine.geometry import Geometry
from covseg.engine.postprocess import FULL, near_mm
from covseg.engine.reading import read_study
from covseg.engine.volume import Volume
from covseg.labels import INFECTION_LABELS, Label
from covseg.training.evaluation import Row, case_rows, read_label_map, write_evaluation
from covseg.training.metrics import METRIC_NAMES, case_metrics, overlap_scores
from covseg.training.synthesis.dicom_series import write_nifti

if TYPE_CHECKING:
    from covseg.training.lesion_insertion import InsertedCase

LUNGDX = ("lungdx_a0001_chest_ct/series2_5mm_kernel_L", "lungdx_a0001_chest_ct/series3_5mm_kernel_B")
LUNG_STRUCTURES = {"lung_left": int(Label.LUNG_LEFT), "lung_right": int(Label.LUNG_RIGHT)}
INFECTION_STRUCTURES = {"infection": tuple(int(v) for v in INFECTION_LABELS)}
TUMOUR_MARGIN_MM = 15.0  # the opacity around lungdx_a0001's tumour reaches ~12 mm beyond its boxes


def infer(study: Path, packages: Sequence[Path], out: Path) -> tuple[Volume, dict[str, Any]]:
    """`covseg infer` on one study with the given packages; (label map, report)."""
    args = ["infer", str(study), "--out", str(out), "--overwrite", "--quiet"]
    for package in packages:
        args += ["--model", str(package)]
    code = run(args)
    if code != 0:
        raise RuntimeError(f"covseg infer {study} exited with {code}")
    report = json.loads((out / "report.json").read_text())
    return read_label_map(out / "labels.nii.gz"), report


def _spacing_zyx(volume: Volume) -> tuple[float, float, float]:
    sx, sy, sz = volume.geometry.spacing
    return (float(sz), float(sy), float(sx))


def _scored(case_id: str, prediction: Volume, truth: np.ndarray, structures: Mapping[str, int | tuple[int, ...]],
            **keys: object) -> list[Row]:
    metrics = case_metrics(prediction.array, truth, _spacing_zyx(prediction), labels=structures)
    return case_rows(case_id, metrics, **keys)


def lung_swapped(prediction: np.ndarray, truth: np.ndarray) -> bool:
    """Whether the predicted sides overlap the opposite reference sides better than their own."""
    left, right = int(Label.LUNG_LEFT), int(Label.LUNG_RIGHT)
    own = [overlap_scores(prediction == v, truth == v)["dsc"] or 0.0 for v in (left, right)]
    other = [overlap_scores(prediction == a, truth == b)["dsc"] or 0.0 for a, b in ((left, right), (right, left))]
    return sum(other) > sum(own)


def evaluate_lung(package: Path, shared_data: Path, out_dir: Path, *, phantom_seeds: Sequence[int] = (900, 901, 902)
                  ) -> list[Row]:
    """Lung model on the left-out real patient and on held-out phantoms."""
    from covseg.training.default_models import lungs_with_lesions, phantom_configs
    from covseg.training.lung_reference import lung_reference
    from covseg.training.synthesis.phantom import make_phantom

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for relative in LUNGDX:
            study = shared_data / relative
            image = read_study(study)
            reference = lung_reference(image).array
            prediction, report = infer(study, [package], work / "out")
            rows += _lung_rows(Path(relative).name, "real CT, left-out patient", prediction, reference, report)
            # The same case scored with the tumour region set aside: how much of the difference between
            # model and reference lies at the annotated tumour.
            _, region = lungdx_tumour(image, study, shared_data)
            rows += _lung_rows(Path(relative).name, "real CT, left-out patient, tumour region ignored",
                               prediction.with_array(ignoring(prediction.array, region)),
                               ignoring(reference, region), report)
        for config in phantom_configs(len(phantom_seeds), phantom_seeds[0]):
            phantom = make_phantom(config)
            path = work / f"phantom_{config.seed}.nii.gz"
            write_nifti(phantom.image, path)
            prediction, report = infer(path, [package], work / "out")
            rows += _lung_rows(f"phantom_{config.seed}", "held-out phantom", prediction,
                               lungs_with_lesions(phantom.labels.array), report)
    write_evaluation(rows, out_dir, by=("kind", "structure"), title="Default lung model")
    return rows


def _lung_rows(case_id: str, kind: str, prediction: Volume, reference: np.ndarray, report: Mapping[str, Any]
               ) -> list[Row]:
    swapped = lung_swapped(prediction.array, reference)
    voxel_ml = prediction.geometry.voxel_volume_ml
    rows = _scored(case_id, prediction, reference, LUNG_STRUCTURES, kind=kind, swapped=swapped,
                   seconds=report["runtime"]["seconds"]["total"])
    for row in rows:
        row["reference_ml"] = float((reference == LUNG_STRUCTURES[str(row["structure"])]).sum() * voxel_ml)
    return rows


def tumour_boxes_mask(study: Volume, series_folder: Path, annotations: Path) -> np.ndarray:
    """Voxels inside the Lung-PET-CT-Dx tumour boxes (Pascal VOC XML named by SOPInstanceUID) of a series."""
    import pydicom

    positions = {}
    for path in series_folder.glob("*.dcm"):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        positions[str(header.SOPInstanceUID)] = [float(v) for v in header.ImagePositionPatient]
    mask = np.zeros(study.array.shape, dtype=bool)
    for xml in annotations.glob("*.xml"):
        box = ET.parse(xml).getroot().find(".//bndbox")
        if xml.stem not in positions or box is None:
            continue
        x0, y0, x1, y1 = (int(float(box.findtext(k, "0"))) for k in ("xmin", "ymin", "xmax", "ymax"))
        k = round(float(study.geometry.lps_to_index(np.array([positions[xml.stem]]))[0][2]))
        if 0 <= k < mask.shape[0]:
            mask[k, y0:y1 + 1, x0:x1 + 1] = True
    return mask


def tumour_region(boxes: np.ndarray, geometry: Geometry, margin_mm: float = TUMOUR_MARGIN_MM) -> np.ndarray:
    """The tumour boxes grown by `margin_mm` (centre to centre, in millimetres): the tumour and its opacity."""
    return near_mm(boxes, np.ones_like(boxes), geometry, margin_mm)


def lungdx_tumour(image: Volume, series_folder: Path, shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """(tumour boxes, tumour region) of a lungdx_a0001 series."""
    boxes = tumour_boxes_mask(image, series_folder, shared_data / "lungdx_a0001_chest_ct" / "annotations")
    return boxes, tumour_region(boxes, image.geometry)


def components_touching(mask: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The connected components (26-connected) of `mask` that have a voxel in `region`."""
    components, _ = ndimage.label(mask, FULL)
    touching = np.unique(components[region & mask])
    return np.isin(components, touching[touching > 0])


def ignoring(labels: np.ndarray, region: np.ndarray) -> np.ndarray:
    """A copy of a label map with `region` set to background: voxels scored neither way."""
    out = labels.copy()
    out[region] = 0
    return out


def mosmed_test_shapes(shared_data: Path) -> tuple[Path, ...]:
    """The MosMed masks of the test split: the only lesion shapes the evaluation draws."""
    from covseg.training.lesion_insertion import split_mosmed
    from covseg.training.synthesis.mosmed_shapes import mask_files

    return split_mosmed(mask_files(shared_data / "mosmed_covid_masks" / "masks"))["test"]


def held_out_lesions(image: Volume, lung_labels: np.ndarray, variant: int, test_shapes: tuple[Path, ...]
                     ) -> InsertedCase:
    """The evaluation's synthesised case `variant` of a real CT (fixed seed and count), so that analyses
    (scripts/infection_components.py, kernel_swap_check.py, lesion_shape_check.py) see the same lesions."""
    from covseg.training.lesion_insertion import insert_covid

    return insert_covid(image, lung_labels, seed=7000 + variant, count=6 + 2 * variant, shape_files=test_shapes)


def evaluate_infection(lung_package: Path, infection_package: Path, shared_data: Path, out_dir: Path, *,
                       variants: int = 2, phantom_seeds: Sequence[int] = (950, 951)) -> dict[str, Any]:
    """Infection model on synthesised held-out cases, and its false positives on real non-COVID CT."""
    from covseg.training.default_models import mosmed_split_folder
    from covseg.training.lung_reference import lung_reference
    from covseg.training.synthesis.config import PhantomConfig
    from covseg.training.synthesis.phantom import make_phantom

    test_shapes = mosmed_test_shapes(shared_data)
    packages = [lung_package, infection_package]
    rows: list[Row] = []
    specificity: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for relative in LUNGDX:
            study = shared_data / relative
            image = read_study(study)
            reference = lung_reference(image).array
            boxes, region = lungdx_tumour(image, study, shared_data)
            prediction, report = infer(study, packages, work / "out")
            specificity.append(_false_positives(study.name, prediction, report, boxes, region))
            for variant in range(variants):
                inserted = held_out_lesions(image, reference, variant, test_shapes)
                path = work / f"{Path(relative).name}_covid{variant}.nii.gz"
                write_nifti(inserted.image, path)
                prediction, report = infer(path, packages, work / "out")
                case_id = path.name.removesuffix(".nii.gz")
                truth = inserted.labels.array
                rows += _scored(case_id, prediction, truth, INFECTION_STRUCTURES,
                                kind="real CT + test-split MosMed lesions (held-out patient)")
                rows += _scored(case_id, prediction.with_array(ignoring(prediction.array, region)),
                                ignoring(truth, region), INFECTION_STRUCTURES,
                                kind="real CT + test-split MosMed lesions (held-out patient), tumour region ignored")
        mosmed_test = mosmed_split_folder(work / "test_shapes", test_shapes)
        for seed in phantom_seeds:
            phantom = make_phantom(PhantomConfig(seed=seed, size_xyz=(224, 224, 80), spacing_xyz=(1.7, 1.7, 4.0),
                                                 lesions=("covid",), lesion_count=8, use_mosmed=True,
                                                 mosmed_dir=mosmed_test))
            path = work / f"phantom_{seed}.nii.gz"
            write_nifti(phantom.image, path)
            prediction, report = infer(path, packages, work / "out")
            rows += _scored(f"phantom_{seed}", prediction, phantom.labels.array, INFECTION_STRUCTURES,
                            kind="held-out phantom, test-split MosMed lesions")
    write_evaluation(rows, out_dir, by=("kind", "structure"), title="Default infection model")
    (out_dir / "false_positives.json").write_text(json.dumps(specificity, indent=2))
    return {"rows": rows, "false_positives": specificity}


def _false_positives(case: str, prediction: Volume, report: Mapping[str, Any], boxes: np.ndarray,
                     region: np.ndarray) -> dict[str, Any]:
    """Infection predicted on a CT without COVID-19: all of it, the part in components that touch the
    annotated tumour (the model calling the tumour's opacity infection), and the rest of the lungs."""
    infection = np.isin(prediction.array, [int(v) for v in INFECTION_LABELS])
    at_tumour = components_touching(infection, boxes)
    elsewhere = infection & ~at_tumour
    voxel_ml = prediction.geometry.voxel_volume_ml
    return {"case": case, "infection_ml": float(infection.sum() * voxel_ml),
            "infection_ml_in_tumour_boxes": float((infection & boxes).sum() * voxel_ml),
            "infection_ml_touching_tumour": float(at_tumour.sum() * voxel_ml),
            "infection_ml_elsewhere": float(elsewhere.sum() * voxel_ml),
            "infection_ml_outside_tumour_region": float((infection & ~region).sum() * voxel_ml),
            "components_elsewhere": int(ndimage.label(elsewhere, FULL)[1]),
            "tumour_box_ml": float(boxes.sum() * voxel_ml),
            "tumour_region_ml": float(region.sum() * voxel_ml),
            "report_infection_ml": report["infection"]["volume_ml"],
            "lung_left_ml": report["structures"]["lung_left"]["volume_ml"],
            "lung_right_ml": report["structures"]["lung_right"]["volume_ml"]}


LIVER_KIND = "3D-IRCADb 1.17 (real contrast-enhanced CT, manual liver mask), never used for training"
LIVER_BASELINE_KIND = "classical reference method on the same CT (baseline, not a model)"


def evaluate_liver(package: Path, shared_data: Path, out_dir: Path) -> list[Row]:
    """Liver model on 3D-IRCADb 1.17 (manual liver mask, never used for training), beside the classical
    method that made the model's real-CT training labels, run on the same CT: the bar a model must pass."""
    from covseg.training.datasets import read_ircad
    from covseg.training.liver_reference import liver_reference

    case = read_ircad(shared_data / "ircad" / "3Dircadb1.17").labelled()[0]
    image, truth = case.load()
    structures = {"liver": int(Label.LIVER)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = work / "ircad_1_17.nii.gz"
        write_nifti(image, path)
        prediction, _ = infer(path, [package], work / "out")
        rows = _scored("ircad_1_17", prediction, truth.array, structures, kind=LIVER_KIND)
    baseline, _ = liver_reference(image)
    rows += _scored("ircad_1_17", baseline, truth.array, structures, kind=LIVER_BASELINE_KIND)
    write_evaluation(rows, out_dir, by=("kind", "structure"),
                     title=f"Liver model `{package.name}` on 3D-IRCADb 1.17, left out of training entirely")
    return rows


# --- the 50 real labelled 2-D COVID-19 slices (covid_ct_labelled): a rough real-data check --------------

SLICE_SPACING_MM = 0.75  # assumed: the crops carry no spacing; 0.75 mm is a 512 matrix over 384 mm
SLICE_COPIES, SLICE_THICKNESS_MM = 12, 5.0
PARENCHYMA_HU, TISSUE_HU = -850.0, 40.0
SLICES_KIND = "50 real 2-D COVID-19 slices (8-bit JPEG greys mapped to HU; rough check)"


def grey_to_hu(grey: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Map display greys to HU by two histogram peaks: aerated lung (the strongest mode in the dark
    half) to -850 HU and soft tissue (the strongest mode in the bright half) to +40 HU, linearly.
    Saturated greys (255, the display window's top) make the tissue peak a lower bound: a caveat."""
    histogram = np.bincount(grey.ravel(), minlength=256).astype(float)
    smooth = np.convolve(histogram, np.ones(7) / 7.0, mode="same")
    dark = int(np.argmax(smooth[8:128])) + 8
    bright = int(np.argmax(smooth[128:255])) + 128
    slope = (TISSUE_HU - PARENCHYMA_HU) / max(bright - dark, 1)
    return (PARENCHYMA_HU + (grey.astype(np.float32) - dark) * slope).astype(np.float32), (float(dark), float(bright))


def evaluate_covid_slices(infection_package: Path, shared_data: Path, out_dir: Path) -> list[Row]:
    """Infection model (alone) on each 2-D slice, replicated into a short 3-D stack; the middle slice
    is scored against the radiologist's mask. The slices are rotated to the radiological view first."""
    from PIL import Image

    from covseg.engine.geometry import Geometry
    from covseg.engine.volume import StudyInfo

    folder = shared_data / "covid_ct_labelled"
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for image_path in sorted(folder.glob("images/*.jpg"), key=lambda p: int(p.stem)):
            grey = np.rot90(np.asarray(Image.open(image_path).convert("L")), k=-1)
            truth = np.rot90(np.asarray(Image.open(folder / "infection_binary" / f"{image_path.stem}.png")
                                        .convert("L")) > 127, k=-1)
            hu, peaks = grey_to_hu(np.ascontiguousarray(grey))
            stack = np.repeat(hu[None], SLICE_COPIES, axis=0)
            geometry = Geometry(size=(stack.shape[2], stack.shape[1], stack.shape[0]),
                                spacing=(SLICE_SPACING_MM, SLICE_SPACING_MM, SLICE_THICKNESS_MM),
                                origin=(0.0, 0.0, 0.0))
            path = work / f"slice_{image_path.stem}.nii.gz"
            write_nifti(Volume(np.rint(stack).astype(np.int16), geometry, StudyInfo(format="array", modality="CT")),
                        path)
            prediction, _ = infer(path, [infection_package], work / "out")
            middle = np.isin(prediction.array[SLICE_COPIES // 2], [int(v) for v in INFECTION_LABELS])
            scores = overlap_scores(middle, np.ascontiguousarray(truth))
            rows.append({"case": image_path.stem, "structure": "infection", "kind": SLICES_KIND,
                         **{name: scores.get(name) for name in METRIC_NAMES},
                         "truth_voxels": float(truth.sum()), "prediction_voxels": float(middle.sum()),
                         "parenchyma_grey": peaks[0], "tissue_grey": peaks[1]})
    write_evaluation(rows, out_dir, by=("structure",), title="Infection model on 50 real 2-D COVID-19 slices")
    return rows


def card_metrics(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Mean metrics per (kind, structure) in the form model cards list them ("measured on ...")."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((str(row.get("kind", "evaluation")), str(row["structure"])), []).append(row)

    def mean(values: list[Row], key: str) -> float | None:
        found = [float(v[key]) for v in values if v.get(key) is not None]
        return round(float(np.mean(found)), 4) if found else None

    return [{"data": f"{kind}: {structure}", "cases": len(group), "dsc": mean(group, "dsc"),
             "nsd": mean(group, "nsd"), "nsd_tolerance_mm": 3.0 if mean(group, "nsd") is not None else None,
             "hd95_mm": mean(group, "hd95_mm")} for (kind, structure), group in groups.items()]


def false_positive_metric(false_positives: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The model-card entry for the infection predicted on the CT without COVID-19 (one per series)."""
    def each(key: str) -> str:
        return " / ".join(f"{float(entry[key]):.1f}" for entry in false_positives)

    return {"data": ("lungdx_a0001 as it is (real chest CT, adenocarcinoma, no COVID-19): false-positive infection "
                     f"{each('infection_ml')} mL ({' / '.join(str(e['case']) for e in false_positives)}), of which "
                     f"{each('infection_ml_touching_tumour')} mL in components touching the tumour and "
                     f"{each('infection_ml_elsewhere')} mL elsewhere in the lungs"),
            "cases": len(false_positives), "dsc": None, "nsd": None, "nsd_tolerance_mm": None, "hd95_mm": None}


def record_in_checkpoint(checkpoint: Path, metrics: Sequence[Mapping[str, Any]], evaluation: str = "default") -> None:
    """Store one evaluation's metrics in a checkpoint's state.json; `covseg export` puts them in the package
    metadata and model card. Each evaluation (e.g. "infection", "slices") replaces its own entries only, so
    the card collects several evaluations of one model in the order they were first recorded."""
    path = checkpoint / "state.json"
    state = json.loads(path.read_text())
    sections = state.setdefault("metric_sections", {})
    sections[evaluation] = [dict(m) for m in metrics]
    state["metrics"] = [m for section in sections.values() for m in section]
    path.write_text(json.dumps(state, indent=2))
