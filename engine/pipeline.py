"""The whole job: `segment` runs the model cascade on a Volume; `infer` reads, segments, quantifies and
writes every output atomically (DESIGN.md sections 2 and 4).

Cascade: models that predict lungs run first (on their own crop, usually the body, at their coarse
spacing); a model that predicts infection but not lungs then runs only on the lung bounding box grown
by LUNG_BOX_MARGIN_MM (pleural consolidation the lung model missed stays inside); when the lung model
ran and found no lung, the infection model is skipped (nothing to confine infection to) and the report
says so. Liver and other models run on their own crop. Precedence in the label map: infection over
lung, liver only outside the lungs (see covseg.engine.postprocess).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covseg.engine.atomic import atomic_output_dir, check_output_dir, output_error
from covseg.engine.decision import apply_threshold, check_threshold, decision_threshold
from covseg.engine.dicom_seg import SEGMENTATION_TYPES, seg_unavailable_reason, write_seg
from covseg.engine.memory import check_memory, estimate_memory
from covseg.engine.package import AIR_HU, ModelPackage, load_package
from covseg.engine.postprocess import (
    PostprocessOptions,
    combine_model_masks,
    groups_of,
    largest_components,
    masks_from_classes,
    postprocess,
    side_swapped_channels,
)
from covseg.engine.preprocess import mask_box, preprocess
from covseg.engine.preview import write_preview
from covseg.engine.progress import ProgressCallback, notify, scaled
from covseg.engine.quantify import DEFAULT_MIN_LESION_ML, quantify
from covseg.engine.reading import read_study
from covseg.engine.registry import resolve_models
from covseg.engine.report import ModelRun, RunSettings, build_report, pseudonym, write_report
from covseg.engine.runtime import Predictor, create_predictor, physical_cores
from covseg.engine.sliding_window import sliding_window
from covseg.engine.volume import Volume
from covseg.engine.write_labels import label_file_name, write_label_map
from covseg.errors import InputError, OutputError
from covseg.labels import DEFAULT_CONSOLIDATION_THRESHOLD_HU

LUNG_BOX_MARGIN_MM = 15.0
GROUP_ORDER = ("lung", "infection", "liver")


@dataclass(frozen=True, eq=False)
class Segmentation:
    """The label map of one volume and how it was made."""

    labels: np.ndarray  # uint8 covseg label values on the input grid
    ran: frozenset[str]  # structure groups a model predicted ("lung", "infection", "liver")
    models: tuple[ModelRun, ...]
    seconds: dict[str, float]  # preprocess, inference, postprocess
    not_run: dict[str, str] = field(default_factory=dict)  # group -> why its model was skipped
    consolidation_threshold_hu: float = DEFAULT_CONSOLIDATION_THRESHOLD_HU


def cascade_order(packages: Sequence[ModelPackage]) -> list[ModelPackage]:
    """Lung-predicting models first, then infection, liver and the rest (stable)."""
    def rank(package: ModelPackage) -> int:
        groups = groups_of(package.classes)
        return min((GROUP_ORDER.index(g) for g in groups if g in GROUP_ORDER), default=len(GROUP_ORDER))

    return sorted(packages, key=rank)


def stage_name(package: ModelPackage) -> str:
    """The progress stage of a model: its task when that is a known group, else its first group."""
    if package.task in GROUP_ORDER:
        return package.task
    groups = [g for g in GROUP_ORDER if g in groups_of(package.classes)]
    return groups[0] if groups else package.task


def _provider_device(provider: str) -> str:
    return {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda",
            "TensorrtExecutionProvider": "tensorrt"}.get(provider, provider)


@dataclass
class _Run:
    """Mutable state of one cascade run."""

    volume: Volume
    options: dict[str, Any]
    progress: ProgressCallback | None
    predictors: dict[str, Predictor]
    seconds: dict[str, float] = field(default_factory=lambda: {"preprocess": 0.0, "inference": 0.0,
                                                               "postprocess": 0.0})
    masks: list[dict[str, np.ndarray]] = field(default_factory=list)
    runs: list[ModelRun] = field(default_factory=list)
    not_run: dict[str, str] = field(default_factory=dict)
    lung: np.ndarray | None = None

    def predictor(self, package: ModelPackage) -> Predictor:
        key = str(package.path)
        if key not in self.predictors:
            self.predictors[key] = create_predictor(package, device=self.options["device"],
                                                    threads=self.options["threads"])
        return self.predictors[key]

    def clock(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - start
        return now


def _roi(run: _Run, package: ModelPackage) -> tuple[bool, Any]:
    """(run it?, roi box) for a model in the cascade."""
    groups = groups_of(package.classes)
    if "infection" in groups and "lung" not in groups and run.lung is not None:
        # The box of the (at most two) main lung components: specks elsewhere must not widen it.
        parts = largest_components(run.lung, 2, min_fraction=PostprocessOptions().second_lung_min_fraction)
        lungs = np.logical_or.reduce(parts) if parts else np.zeros_like(run.lung)
        box = mask_box(lungs, run.volume.geometry.spacing, LUNG_BOX_MARGIN_MM)
        if box is None:
            return False, None
        return True, box
    return True, None


def _run_model(run: _Run, package: ModelPackage) -> None:
    stage = stage_name(package)
    groups = groups_of(package.classes)
    notify(run.progress, stage, 0.0)
    go, roi = _roi(run, package)
    if not go:
        reason = "no lungs found by the lung model; infection model not run"
        run.not_run.update(dict.fromkeys(groups - {"lung"}, reason))
        run.runs.append(ModelRun(package.name, package.version, package.task, package.sha256, "not run", 0.0,
                                 skipped=reason))
        notify(run.progress, stage, 1.0)
        return
    start = time.perf_counter()
    predictor = run.predictor(package)  # creating the session counts as inference
    mark = run.clock("inference", start)
    image, undo = preprocess(run.volume, package, roi_zyx=roi)
    mark = run.clock("preprocess", mark)
    notify(run.progress, stage, 0.1)
    probabilities = sliding_window(
        image, predictor, patch=package.patch, overlap=run.options["overlap"],
        batch_size=run.options["batch_size"], tta=run.options["tta"], progress=scaled(run.progress, stage, 0.1, 0.9),
        pad_value=package.normalization.value_of(AIR_HU), num_classes=package.num_classes,
        x_mirror_channels=side_swapped_channels(package.classes),
        tta_axes=package.tta_axes)
    del image
    threshold = decision_threshold(package, run.options["infection_threshold"])
    apply_threshold(probabilities, threshold)
    mark = run.clock("inference", mark)
    indices = undo.labels_on_input(probabilities)
    del probabilities
    masks = masks_from_classes(indices, package.classes)
    run.masks.append(masks)
    if "lung" in masks:
        run.lung = masks["lung"] if run.lung is None else run.lung | masks["lung"]
    end = run.clock("postprocess", mark)
    run.runs.append(ModelRun(package.name, package.version, package.task, package.sha256,
                             str(getattr(predictor, "provider", "unknown")), end - start, threshold=threshold))
    notify(run.progress, stage, 1.0)


def segment(volume: Volume, packages: Sequence[ModelPackage | str | Path], *, device: str = "auto",
            threads: int | None = None,
            overlap: float = 0.5, tta: bool = False, batch_size: int = 2,
            consolidation_threshold_hu: float = DEFAULT_CONSOLIDATION_THRESHOLD_HU,
            infection_threshold: float | None = None,
            progress: ProgressCallback | None = None,
            predictors: Mapping[str, Predictor] | None = None) -> Segmentation:
    """Run the model cascade on a HU volume and postprocess into one covseg label map.

    packages: ModelPackages, or package folders (loaded and verified here).
    infection_threshold: operating point of a two-class infection model (None: the package's own).
    predictors: already created predictors keyed by package path (a batch loads each model once);
    missing ones are created here with `device` and `threads`.
    """
    if not packages:
        raise ValueError("segment needs at least one model package")
    loaded = [p if isinstance(p, ModelPackage) else load_package(p) for p in packages]
    if infection_threshold is not None:
        check_threshold(infection_threshold)
    run = _Run(volume, {"device": device, "threads": threads, "overlap": overlap, "tta": tta,
                        "batch_size": batch_size, "infection_threshold": infection_threshold},
               progress, dict(predictors or {}))
    for package in cascade_order(loaded):
        _run_model(run, package)
    notify(progress, "postprocess", 0.0)
    start = time.perf_counter()
    options = PostprocessOptions(consolidation_threshold_hu=consolidation_threshold_hu)
    labels = postprocess(combine_model_masks(run.masks), volume.array, volume.geometry, options)
    run.clock("postprocess", start)
    ran = frozenset(g for p in loaded for g in groups_of(p.classes) if g not in run.not_run)
    notify(progress, "postprocess", 0.5)
    return Segmentation(labels=labels, ran=ran, models=tuple(run.runs), seconds=dict(run.seconds),
                        not_run=dict(run.not_run), consolidation_threshold_hu=consolidation_threshold_hu)


def run_device(segmentation: Segmentation, requested: str) -> str:
    """The device the run used, from the first model's provider (the request when none ran)."""
    for model in segmentation.models:
        if model.skipped is None:
            return _provider_device(model.provider)
    return requested


# --- infer: read, segment, quantify, write ---------------------------------------------------------
@dataclass(frozen=True)
class InferOptions:
    """Everything `infer` takes besides the study and the output folder (the CLI's flags)."""

    models: str | None = None
    model_paths: tuple[Path, ...] = ()
    series_uid: str | None = None
    force: bool = False
    device: str = "auto"
    threads: int | None = None
    overlap: float = 0.5
    tta: bool = False
    batch_size: int = 2
    overwrite: bool = False
    anonymize: bool = False
    keep_identifiers: bool = False
    label_format: str = "nifti"
    seg_type: str = "BINARY"
    consolidation_threshold_hu: float = DEFAULT_CONSOLIDATION_THRESHOLD_HU
    min_lesion_ml: float = DEFAULT_MIN_LESION_ML
    max_memory_mb: float | None = None
    infection_threshold: float | None = None


def _write_outputs(folder: Path, volume: Volume, result: Segmentation, options: InferOptions,
                   progress: ProgressCallback | None, reasons: dict[str, str]) -> dict[str, str | None]:
    """Label map, SEG and preview into `folder`; returns the report's `outputs` block."""
    outputs: dict[str, str | None] = {}
    name = label_file_name(options.label_format)
    _guarded(folder / name, lambda p: write_label_map(result.labels, volume.geometry, p))
    outputs["labels"] = name
    notify(progress, "write", 0.3)
    outputs["seg"] = None
    reason = seg_unavailable_reason(volume.info)
    if reason is None:
        reason = _write_seg(folder / "seg.dcm", volume, result, options)
        if reason is None:
            outputs["seg"] = "seg.dcm"
    if reason is not None:
        reasons["outputs.seg"] = reason
    notify(progress, "write", 0.7)
    _guarded(folder / "preview.png", lambda p: write_preview(result.labels, volume.array, volume.geometry, p))
    outputs["preview"] = "preview.png"
    outputs["report"] = "report.json"
    notify(progress, "write", 0.9)
    return outputs


def _write_seg(path: Path, volume: Volume, result: Segmentation, options: InferOptions) -> str | None:
    """Write seg.dcm; the reason when it is not written. Source headers highdicom cannot build a SEG from
    cost the SEG only (the reason goes in the report), never the labels, report and preview."""
    pseudo = (pseudonym(volume.info.patient_id) or "anonymous") if options.anonymize else None
    names = [f"{m.name} {m.version}" for m in result.models if m.skipped is None]
    try:
        written = _guarded(path, lambda p: write_seg(result.labels, volume.geometry, volume.info, p,
                                                     model_names=names, segmentation_type=options.seg_type,
                                                     pseudonym=pseudo))
    except (InputError, ValueError, TypeError, AttributeError, KeyError) as error:
        path.unlink(missing_ok=True)
        return f"DICOM SEG not written: {' '.join(str(error).split())[:200]}"
    return None if written is not None else "no structure was found: an empty DICOM SEG is not written"


def _guarded(path: Path, write: Callable[[Path], Any]) -> Any:
    """Run a writer, turning an OSError into a one-line OutputError naming the file."""
    try:
        return write(path)
    except OSError as error:
        raise output_error(error, path) from error
    except RuntimeError as error:  # SimpleITK reports write failures as RuntimeError
        if "write" in str(error).lower():
            raise OutputError(f"cannot write {path}: {' '.join(str(error).split())[:200]}") from error
        raise


def _read(path: Path, options: InferOptions, progress: ProgressCallback | None) -> Volume:
    notify(progress, "read", 0.0)
    volume = read_study(path, series_uid=options.series_uid, force=options.force)
    notify(progress, "read", 1.0)
    return volume


def infer(path: str | Path, out_dir: str | Path, *, models: str | Sequence[str] | None = None,
          model_paths: Sequence[str | Path] = (), series_uid: str | None = None, force: bool = False,
          device: str = "auto", threads: int | None = None, overlap: float = 0.5, tta: bool = False,
          overwrite: bool = False, anonymize: bool = False, keep_identifiers: bool = False,
          label_format: str = "nifti", max_memory_mb: float | None = None,
          progress: ProgressCallback | None = None,
          consolidation_threshold_hu: float = DEFAULT_CONSOLIDATION_THRESHOLD_HU,
          min_lesion_ml: float = DEFAULT_MIN_LESION_ML, batch_size: int = 2, seg_type: str = "BINARY",
          infection_threshold: float | None = None,
          predictors: Mapping[str, Predictor] | None = None) -> dict[str, Any]:
    """Segment and quantify the study at `path` into `out_dir` (atomically); return the report dict.

    models: "lung,infection,liver" (names or tasks of shipped packages); model_paths: package folders.
    The output folder is refused when it exists (unless overwrite) before any work is done.
    """
    if models is not None and not isinstance(models, str):
        models = ",".join(models)
    options = InferOptions(
        models=models, model_paths=tuple(Path(p) for p in model_paths), series_uid=series_uid, force=force,
        device=device, threads=threads, overlap=overlap, tta=tta, batch_size=batch_size, overwrite=overwrite,
        anonymize=anonymize, keep_identifiers=keep_identifiers, label_format=label_format, seg_type=seg_type,
        consolidation_threshold_hu=consolidation_threshold_hu, min_lesion_ml=min_lesion_ml,
        max_memory_mb=max_memory_mb, infection_threshold=infection_threshold)
    label_file_name(options.label_format)  # refuse bad settings before any work
    if options.infection_threshold is not None:
        check_threshold(options.infection_threshold)
    if options.seg_type not in SEGMENTATION_TYPES:
        raise ValueError(f"seg_type must be one of {SEGMENTATION_TYPES}, got {options.seg_type!r}")
    started = time.perf_counter()
    target = check_output_dir(Path(out_dir), overwrite=options.overwrite)
    packages = resolve_models(options.models, list(options.model_paths))
    source = Path(path)
    mark = time.perf_counter()
    volume = _read(source, options, progress)
    read_seconds = time.perf_counter() - mark
    check_memory(estimate_memory(volume.geometry, packages, batch_size=options.batch_size, tta=options.tta),
                 options.max_memory_mb)
    result = segment(volume, packages, device=options.device, threads=options.threads, overlap=options.overlap,
                     tta=options.tta, batch_size=options.batch_size,
                     consolidation_threshold_hu=options.consolidation_threshold_hu,
                     infection_threshold=options.infection_threshold, progress=progress, predictors=predictors)
    mark = time.perf_counter()
    quantities = quantify(result.labels, volume.array, volume.geometry, ran=result.ran, not_run_reasons=result.not_run,
                          consolidation_threshold_hu=options.consolidation_threshold_hu,
                          min_lesion_ml=options.min_lesion_ml)
    seconds = {"read": read_seconds, **result.seconds}
    seconds["postprocess"] += time.perf_counter() - mark
    notify(progress, "postprocess", 1.0)
    notify(progress, "write", 0.0)
    mark = time.perf_counter()
    reasons: dict[str, str] = {}
    with atomic_output_dir(target, overwrite=options.overwrite) as folder:
        outputs = _write_outputs(folder, volume, result, options, progress, reasons)
        seconds["write"] = time.perf_counter() - mark
        seconds["total"] = time.perf_counter() - started
        report = build_report(
            path=source.absolute(), info=volume.info, geometry=volume.geometry, models=list(result.models),
            settings=RunSettings(run_device(result, options.device), options.threads or physical_cores(),
                                 options.overlap, options.tta),
            seconds=seconds, quantities=quantities, outputs=outputs, reasons=reasons,
            anonymize=options.anonymize, keep_identifiers=options.keep_identifiers)
        _guarded(folder / "report.json", lambda p: write_report(report, p))
    notify(progress, "write", 1.0)
    return report
