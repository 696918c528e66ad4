"""Offscreen rendering of what the Slicer module shows, made with slicer-core (docs/slicer_rendering.png).

    .venv-slicer/bin/python scripts/render_slicer_result.py COVSEG_OUTPUT_DIR docs/slicer_rendering.png

The covseg output folder is loaded by the extension's own library (CovSegLib.scene.load_results) into
a real MRML scene; the segmentation node's closed-surface representation (made by Slicer's
segmentation logic) is rendered with VTK offscreen, beside the rows of the module's volume table node.
"""

from __future__ import annotations

import sys
from pathlib import Path

import slicer
import vtk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slicer_extension" / "CovSeg"))
from CovSegLib.scene import load_results

# Lungs see-through so the infection inside shows; matched on the segment's name.
OPACITY = {"lung": 0.22, "liver": 0.5}


def _opacity(name: str) -> float:
    return next((value for key, value in OPACITY.items() if key in name.lower()), 1.0)


def _surfaces(segmentation_node: object) -> list[tuple[str, vtk.vtkPolyData, tuple[float, float, float]]]:
    segmentation = segmentation_node.GetSegmentation()  # type: ignore[attr-defined]
    if not segmentation_node.CreateClosedSurfaceRepresentation():  # type: ignore[attr-defined]
        raise RuntimeError("Slicer could not make closed surfaces of the segmentation")
    found = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        polydata = vtk.vtkPolyData()
        segmentation_node.GetClosedSurfaceRepresentation(segment_id, polydata)  # type: ignore[attr-defined]
        segment = segmentation.GetSegment(segment_id)
        found.append((segment.GetName(), polydata, tuple(segment.GetColor())))
    return found


def _table_text(table_node: object) -> str:
    table = table_node.GetTable()  # type: ignore[attr-defined]
    lines = []
    for row in range(table.GetNumberOfRows()):
        name = table.GetValue(row, 0).ToString()
        value = table.GetValue(row, 1).ToDouble()
        unit = table.GetValue(row, 2).ToString()
        lines.append(f"{name:<28} {'n/a' if value != value else f'{value:9.1f}'} {unit}")
    return "\n".join(lines)


def render(out_dir: Path, png: Path, size: tuple[int, int] = (1400, 700)) -> None:
    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)  # registers the surface converters before any segmentation node exists
    segmentation, table, _ = load_results(scene, out_dir)
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(0.08, 0.08, 0.1)
    renderer.SetViewport(0.0, 0.0, 0.6, 1.0)
    for name, polydata, colour in _surfaces(segmentation):
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputData(polydata)
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(*colour)
        actor.GetProperty().SetOpacity(_opacity(name))
        renderer.AddActor(actor)
    camera = renderer.GetActiveCamera()
    camera.SetPosition(0.0, 1.0, 0.0)  # RAS +y is anterior: a frontal view, patient's right on the image's left
    camera.SetFocalPoint(0.0, 0.0, 0.0)
    camera.SetViewUp(0.0, 0.0, 1.0)
    renderer.ResetCamera()
    camera.Zoom(1.3)
    text_renderer = vtk.vtkRenderer()
    text_renderer.SetViewport(0.6, 0.0, 1.0, 1.0)
    text_renderer.SetBackground(0.12, 0.12, 0.14)
    text = vtk.vtkTextActor()
    text.SetInput("covseg volumes (table node)\n\n" + _table_text(table))
    text.GetTextProperty().SetFontFamilyToCourier()
    text.GetTextProperty().SetFontSize(15)
    text.SetPosition(12, 40)
    text_renderer.AddViewProp(text)
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    window.AddRenderer(renderer)
    window.AddRenderer(text_renderer)
    window.Render()
    capture = vtk.vtkWindowToImageFilter()
    capture.SetInput(window)
    capture.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(png))
    writer.SetInputConnection(capture.GetOutputPort())
    writer.Write()


if __name__ == "__main__":
    render(Path(sys.argv[1]), Path(sys.argv[2]))
