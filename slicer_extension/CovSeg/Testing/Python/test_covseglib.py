"""CovSegLib against slicer-core's real MRML scene, with the real `covseg infer` subprocess.

Run by tests/test_slicer_extension.py inside .venv-slicer (slicer-core cannot share a venv with
covseg's engine). Environment from the parent test:
  COVSEG_LAUNCHER  the covseg command as JSON (e.g. ["/repo/.venv/bin/python", "-m", "covseg"])
  COVSEG_STUDY     a NIfTI CT of the synthetic phantom
  COVSEG_TRUTH     its ground-truth label map
  COVSEG_MODELS    JSON list of model package folders to run
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import itertools

import slicer
import vtk
from CovSegLib import CovSegParameters, CovsegProcess, Finished, Progress, build_infer_command
from CovSegLib.scene import load_results, table_rows, write_input_volume

from covseg.labels import ENGINE_OUTPUT_LABELS

LAUNCHER = json.loads(os.environ.get("COVSEG_LAUNCHER", "null"))
STUDY = Path(os.environ.get("COVSEG_STUDY", "/nonexistent"))
TRUTH = Path(os.environ.get("COVSEG_TRUTH", "/nonexistent"))
MODELS = json.loads(os.environ.get("COVSEG_MODELS", "[]"))
pytestmark = pytest.mark.skipif(LAUNCHER is None or not STUDY.exists(),
                                reason="run from tests/test_slicer_extension.py")


@pytest.fixture()
def scene():
    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)  # registers the surface converters before any segmentation node
    slicer.mrmlScene = scene
    yield scene
    logic.SetMRMLScene(None)


def _load_volume(scene, path: Path):
    logic = slicer.vtkSlicerVolumesLogic()
    logic.SetMRMLScene(scene)
    node = logic.AddArchetypeVolume(str(path), "ct", 0, vtk.vtkStringArray())
    assert node is not None
    return node


def _parameters() -> CovSegParameters:
    return CovSegParameters(models=(), model_paths=tuple(MODELS), device="cpu")


def _run(scene, tmp_path: Path, volume_node):
    input_path = tmp_path / "input.nii.gz"
    write_input_volume(scene, volume_node, input_path)
    out_dir = tmp_path / "out"
    process = CovsegProcess(build_infer_command(LAUNCHER, input_path, out_dir, _parameters()))
    process.start()
    events = process.wait(timeout=600)
    return events, out_dir


def _node_counts(scene) -> dict[str, int]:
    return {cls: scene.GetNumberOfNodesByClass(cls) for cls in
            ("vtkMRMLSegmentationNode", "vtkMRMLTableNode", "vtkMRMLColorTableNode", "vtkMRMLScalarVolumeNode",
             "vtkMRMLSegmentationStorageNode", "vtkMRMLSegmentationDisplayNode")}


def _segment_voxels(scene, segmentation, reference) -> dict[str, np.ndarray]:
    """Each segment exported on the reference volume's grid with the segmentations logic (k, j, i arrays)."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    arrays = {}
    for index in range(segmentation.GetSegmentation().GetNumberOfSegments()):
        segment_id = segmentation.GetSegmentation().GetNthSegmentID(index)
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__export__")
        try:
            assert logic.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, reference)
            name = segmentation.GetSegmentation().GetSegment(segment_id).GetName()
            arrays[name] = slicer.util.arrayFromVolume(labelmap).copy() > 0
        finally:
            scene.RemoveNode(labelmap)
    return arrays


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One covseg run on the study, shared by the tests that only read its output."""
    scene = slicer.vtkMRMLScene()
    volume = _load_volume(scene, STUDY)
    return _run(scene, tmp_path_factory.mktemp("first"), volume)


def test_segments_table_and_geometry_match_covseg(scene, first_run) -> None:
    volume = _load_volume(scene, STUDY)
    events, out_dir = first_run
    progress = [e for e in events if isinstance(e, Progress)]
    assert isinstance(events[-1], Finished) and events[-1].returncode == 0, events[-5:]
    assert progress and all(b.overall >= a.overall for a, b in itertools.pairwise(progress))

    segmentation, table, report = load_results(scene, out_dir)
    labels = np.asarray(nib.load(out_dir / report["outputs"]["labels"]).dataobj).transpose(2, 1, 0)  # k, j, i
    segments = _segment_voxels(scene, segmentation, volume)
    display = {info.display_name: info.value for info in ENGINE_OUTPUT_LABELS}
    present = {int(v) for v in np.unique(labels) if v > 0}
    assert {display[name] for name in segments} == present
    for name, mask in segments.items():
        assert np.array_equal(mask, labels == display[name]), name

    rows = {row[0]: row[1] for row in table_rows(report)}
    for row in range(table.GetNumberOfRows()):
        name = table.GetCellText(row, 0)
        value = table.GetTable().GetValue(row, 1).ToDouble()
        expected = rows[name]
        assert (np.isnan(value) and expected is None) or value == pytest.approx(expected), name

    # No flips: phantom lung voxels, placed by their RAS position (truth affine -> Slicer RAS-to-IJK), fall in
    # the segment that covseg's label map (read by nibabel through its own affine) has at that RAS point,
    # and that is a lung or infection segment: the segmentation lies on the anatomy.
    truth_image = nib.load(TRUTH)
    truth = np.asarray(truth_image.dataobj)
    output_image = nib.load(out_dir / report["outputs"]["labels"])
    output = np.asarray(output_image.dataobj)
    ras_to_ijk = vtk.vtkMatrix4x4()
    volume.GetRASToIJKMatrix(ras_to_ijk)
    by_value = {value: name for name, value in display.items()}
    lung_like = {"Left lung", "Right lung", "Infection: ground-glass opacity", "Infection: consolidation"}
    rng = np.random.default_rng(0)
    points = np.argwhere(np.isin(truth, (1, 2)))
    hits = 0
    for ijk in points[rng.choice(len(points), 50, replace=False)]:
        ras = truth_image.affine @ np.append(ijk, 1.0)
        i, j, k = (round(v) for v in ras_to_ijk.MultiplyPoint([*ras[:3], 1.0])[:3])
        in_slicer = {name for name, mask in segments.items() if mask[k, j, i]}
        oi, oj, ok = (round(v) for v in np.linalg.solve(output_image.affine, ras)[:3])
        value = int(output[oi, oj, ok])
        assert in_slicer == ({by_value[value]} if value else set())
        hits += bool(in_slicer & lung_like)
    assert hits >= 45


def test_second_run_reuses_nodes(scene, tmp_path: Path, first_run) -> None:
    volume = _load_volume(scene, STUDY)
    _, out_dir = first_run
    segmentation, table, _ = load_results(scene, out_dir)
    before = _node_counts(scene)
    _, out_dir_b = _run(scene, tmp_path, volume)
    segmentation_b, table_b, _ = load_results(scene, out_dir_b, segmentation, table)
    assert segmentation_b is segmentation and table_b is table
    assert _node_counts(scene) == before


def test_cancel_leaves_scene_unchanged(scene, tmp_path: Path) -> None:
    volume = _load_volume(scene, STUDY)
    before = _node_counts(scene)
    input_path = tmp_path / "input.nii.gz"
    write_input_volume(scene, volume, input_path)
    out_dir = tmp_path / "out"
    process = CovsegProcess(build_infer_command(LAUNCHER, input_path, out_dir, _parameters()), grace_seconds=10)
    process.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(isinstance(e, Progress) for e in process.poll()):
        time.sleep(0.05)
    process.cancel()
    finished = [e for e in process.wait(timeout=60) if isinstance(e, Finished)][-1]
    assert finished.cancelled and finished.returncode != 0
    assert not out_dir.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.nii.gz"]  # no partial output left
    assert _node_counts(scene) == before


def test_covseg_error_is_shown_as_covseg_phrased_it(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist.nii.gz"
    process = CovsegProcess(build_infer_command(LAUNCHER, missing, tmp_path / "out", _parameters()))
    process.start()
    finished = process.wait(timeout=120)[-1]
    assert isinstance(finished, Finished) and finished.returncode == 3
    assert finished.error is not None and "does-not-exist.nii.gz" in finished.error and "\n" not in finished.error


def test_ui_loads_offscreen() -> None:
    pyside = pytest.importorskip("PySide6.QtUiTools")
    from PySide6.QtCore import QFile
    from PySide6.QtWidgets import QApplication

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = QApplication.instance() or QApplication([])
    ui_file = QFile(str(Path(__file__).resolve().parents[2] / "Resources" / "UI" / "CovSeg.ui"))
    assert ui_file.open(QFile.ReadOnly)
    widget = pyside.QUiLoader().load(ui_file)
    assert widget is not None
    assert widget.findChild(object, "applyButton") is not None
    app.processEvents()


def test_infection_threshold_reaches_the_command_and_is_checked(tmp_path: Path) -> None:
    parameters = CovSegParameters(models=("lung", "infection"), infection_threshold=0.7)
    command = build_infer_command(LAUNCHER, tmp_path / "in.nii.gz", tmp_path / "out", parameters)
    assert command[command.index("--infection-threshold") + 1] == "0.7"
    assert "--infection-threshold" not in build_infer_command(LAUNCHER, tmp_path / "in.nii.gz", tmp_path / "out",
                                                              CovSegParameters())
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        CovSegParameters(infection_threshold=1.0)
