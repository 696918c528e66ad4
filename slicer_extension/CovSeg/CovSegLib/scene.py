"""Put covseg's outputs into an MRML scene: one segmentation node, one table node.

Works on any `vtkMRMLScene` (Slicer's, or slicer-core's in tests). Running again reuses the
nodes it is given: segments and rows are replaced, no node is added twice.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import slicer
import vtk

from covseg.labels import ENGINE_OUTPUT_LABELS

SEGMENTATION_NAME = "covseg segmentation"
TABLE_NAME = "covseg volumes"


def write_input_volume(scene: Any, volume_node: Any, path: Path) -> None:
    """Write a scalar volume node with its geometry (IJK-to-RAS) to NIfTI for covseg to read."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    try:
        storage.SetFileName(str(path))
        storage.SetUseCompression(0)
        if not storage.WriteData(volume_node):
            raise OSError(f"could not write volume {volume_node.GetName()!r} to {path}")
    finally:
        scene.RemoveNode(storage)


def _colour_table(scene: Any) -> Any:
    colours = slicer.vtkMRMLColorTableNode()
    colours.SetTypeToUser()
    colours.SetNumberOfColors(max(info.value for info in ENGINE_OUTPUT_LABELS) + 1)
    colours.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for info in ENGINE_OUTPUT_LABELS:
        red, green, blue = (c / 255.0 for c in info.colour)
        colours.SetColor(info.value, info.name, red, green, blue, 1.0)
    scene.AddNode(colours)
    return colours


def _load_segmentation(scene: Any, labels_path: Path, node: Any | None) -> Any:
    if node is None or scene.GetNodeByID(node.GetID()) is None:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", SEGMENTATION_NAME)
        node.CreateDefaultDisplayNodes()
    node.GetSegmentation().RemoveAllSegments()
    colours = _colour_table(scene)
    try:
        node.SetLabelmapConversionColorTableNodeID(colours.GetID())
        if node.GetStorageNode() is None:
            node.AddDefaultStorageNode()
        node.GetStorageNode().SetFileName(str(labels_path))
        if not node.GetStorageNode().ReadData(node):
            raise OSError(f"could not read covseg label map {labels_path}")
    finally:
        node.SetLabelmapConversionColorTableNodeID(None)
        scene.RemoveNode(colours)
    segmentation = node.GetSegmentation()
    for info in ENGINE_OUTPUT_LABELS:
        segment = segmentation.GetSegment(info.name)
        if segment is not None:
            segment.SetName(info.display_name)
            segment.SetColor(*(c / 255.0 for c in info.colour))
    node.CreateClosedSurfaceRepresentation()
    return node


def table_rows(report: dict[str, Any]) -> list[tuple[str, float | None, str, str]]:
    """(measurement, value, unit, note) rows from a covseg report; None where covseg measured nothing."""
    structures = report.get("structures", {})
    infection = report.get("infection", {})
    reasons = report.get("reasons", {})
    rows: list[tuple[str, float | None, str, str]] = []
    for key, name in (("lung_left", "Left lung"), ("lung_right", "Right lung"), ("liver", "Liver")):
        rows.append((f"{name} volume", (structures.get(key) or {}).get("volume_ml"), "mL",
                     reasons.get(f"{key}.volume_ml", "")))
    rows.append(("Infection volume", infection.get("volume_ml"), "mL", reasons.get("infection.volume_ml", "")))
    rows.append(("Infection, percent of lungs", infection.get("percent_of_lungs"), "%",
                 reasons.get("infection.percent_of_lungs", "")))
    for key, name in (("lung_left", "left"), ("lung_right", "right")):
        per_lung = (infection.get("by_lung") or {}).get(key) or {}
        rows.append((f"Infection, {name} lung", per_lung.get("volume_ml"), "mL", ""))
        rows.append((f"Infection, percent of {name} lung", per_lung.get("percent"), "%", ""))
    rows.append(("Ground-glass volume", infection.get("ground_glass_ml"), "mL", ""))
    rows.append(("Consolidation volume", infection.get("consolidation_ml"), "mL",
                 f"at or above {infection.get('consolidation_threshold_hu')} HU"))
    rows.append(("Lesion count", infection.get("lesion_count"), "", reasons.get("infection.lesion_count", "")))
    rows.append(("Mean lesion density", infection.get("mean_hu"), "HU", ""))
    return rows


def _fill_table(scene: Any, report: dict[str, Any], node: Any | None) -> Any:
    if node is None or scene.GetNodeByID(node.GetID()) is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", TABLE_NAME)
    node.RemoveAllColumns()
    columns = (("Measurement", vtk.vtkStringArray()), ("Value", vtk.vtkDoubleArray()),
               ("Unit", vtk.vtkStringArray()), ("Note", vtk.vtkStringArray()))
    for name, array in columns:
        array.SetName(name)
        node.AddColumn(array)
    for measurement, value, unit, note in table_rows(report):
        row = node.AddEmptyRow()
        node.SetCellText(row, 0, measurement)
        # An empty cell of a double column reads back as 0: write NaN for "not measured".
        number = float("nan") if value is None else float(value)
        node.GetTable().SetValue(row, 1, vtk.vtkVariant(number if not math.isinf(number) else float("nan")))
        node.SetCellText(row, 2, unit)
        node.SetCellText(row, 3, note)
    return node


def load_results(scene: Any, out_dir: Path, segmentation_node: Any | None = None,
                 table_node: Any | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Load `labels.nii.gz` and `report.json` from a covseg output folder into the scene."""
    out_dir = Path(out_dir)
    report = json.loads((out_dir / "report.json").read_text())
    labels_name = (report.get("outputs") or {}).get("labels") or "labels.nii.gz"
    segmentation = _load_segmentation(scene, out_dir / labels_name, segmentation_node)
    table = _fill_table(scene, report, table_node)
    return segmentation, table, report
