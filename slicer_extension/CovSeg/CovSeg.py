"""CovSeg: one click from a loaded chest CT to lung, infection and liver segments with a volume table.

The module file stays thin: the work lives in CovSegLib (subprocess, scene loading), which is
tested outside Slicer with slicer-core. Inference runs `covseg infer --progress json` in a
subprocess so Slicer stays responsive; a QTimer drains its progress events.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import qt
import slicer
from CovSegLib import CovSegParameters, CovsegProcess, Finished, LogLine, Progress, build_infer_command
from CovSegLib.install import MINIMUM_COVSEG_VERSION, covseg_launcher, ensure_covseg
from CovSegLib.scene import load_results, write_input_volume
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


class CovSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CovSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.contributors = ["covseg developers"]
        self.parent.helpText = (
            "Segments left and right lungs, COVID-19 infection (ground-glass and consolidation) and liver "
            "in chest CT with covseg, and tabulates volumes and percent of each lung infected. "
            "Research software, not a medical device."
        )
        self.parent.acknowledgementText = "covseg models: see each model card for training data and licences."


class CovSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.connect("timeout()", self.onPoll)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        widget = slicer.util.loadUI(self.resourcePath("UI/CovSeg.ui"))
        self.layout.addWidget(widget)
        self.ui = slicer.util.childWidgetVariables(widget)
        widget.setMRMLScene(slicer.mrmlScene)
        self.logic = CovSegLogic()
        self.ui.deviceComboBox.addItems(["cpu", "cuda", "auto"])
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        self.updateButtons()

    def cleanup(self):
        self.onCancel()
        self.removeObservers()

    def updateButtons(self, *_args):
        running = self.logic is not None and self.logic.running
        self.ui.applyButton.enabled = self.ui.inputVolumeSelector.currentNode() is not None and not running
        self.ui.cancelButton.enabled = running

    def parameters(self) -> CovSegParameters:
        models = [name for name, box in (("lung", self.ui.lungCheckBox), ("infection", self.ui.infectionCheckBox),
                                         ("liver", self.ui.liverCheckBox)) if box.checked]
        if self.ui.compactCheckBox.checked:
            models = [f"{name}-compact" for name in models]
        return CovSegParameters(models=tuple(models), device=self.ui.deviceComboBox.currentText,
                                infection_threshold=self.ui.infectionThresholdSpinBox.value)

    def onApply(self):
        with slicer.util.tryWithErrorDisplay("covseg could not start.", waitCursor=True):
            ensure_covseg()
            self.ui.logTextEdit.clear()
            self.ui.progressBar.value = 0
            self.logic.start(self.ui.inputVolumeSelector.currentNode(), self.parameters())
            self.timer.start()
        self.updateButtons()

    def onCancel(self):
        if self.logic is not None and self.logic.running:
            self.logic.cancel()
            self.ui.statusLabel.text = "Cancelling..."

    def onPoll(self):
        for event in self.logic.poll():
            if isinstance(event, Progress):
                self.ui.progressBar.value = round(100 * event.overall)
                self.ui.statusLabel.text = event.stage
            elif isinstance(event, LogLine):
                self.ui.logTextEdit.appendPlainText(event.text)
            elif isinstance(event, Finished):
                self.timer.stop()
                self.onFinished(event)
        self.updateButtons()

    def onFinished(self, event: Finished):
        if event.cancelled:
            self.ui.statusLabel.text = "Cancelled"
        elif event.returncode != 0:
            self.ui.statusLabel.text = "Failed"
            slicer.util.errorDisplay(f"covseg: {event.error}")
        else:
            with slicer.util.tryWithErrorDisplay("Could not load covseg results.", waitCursor=True):
                _segmentation, table = self.logic.loadResults()
                slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
                slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
                slicer.app.applicationLogic().PropagateTableSelection()
                self.ui.statusLabel.text = "Done"
        self.logic.cleanupRun()


class CovSegLogic(ScriptedLoadableModuleLogic):
    """Starts one covseg run at a time and loads its results, reusing the result nodes."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.process = None
        self.workDir = None
        self.inputNode = None
        self.segmentationNode = None
        self.tableNode = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def start(self, volumeNode, parameters: CovSegParameters):
        if self.running:
            raise RuntimeError("covseg is already running")
        self.workDir = Path(tempfile.mkdtemp(prefix="covseg-slicer-"))
        inputPath = self.workDir / "input.nii.gz"
        write_input_volume(slicer.mrmlScene, volumeNode, inputPath)
        self.inputNode = volumeNode
        command = build_infer_command(covseg_launcher(), inputPath, self.workDir / "out", parameters)
        logging.info("covseg: %s", " ".join(command))
        self.process = CovsegProcess(command)
        self.process.start()

    def poll(self):
        return self.process.poll() if self.process is not None else []

    def cancel(self):
        if self.process is not None:
            self.process.cancel()

    def loadResults(self):
        self.segmentationNode, self.tableNode, _report = load_results(
            slicer.mrmlScene, self.workDir / "out", self.segmentationNode, self.tableNode)
        self.segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(self.inputNode)
        return self.segmentationNode, self.tableNode

    def cleanupRun(self):
        if self.workDir is not None:
            shutil.rmtree(self.workDir, ignore_errors=True)
        self.workDir = None
        self.process = None


class CovSegTest(ScriptedLoadableModuleTest):
    """Runs offline on the synthetic sample study shipped in the covseg source tree."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_sample_study()

    def test_sample_study(self):
        sample = Path(__file__).resolve().parents[2] / "sample_data" / "covid_phantom_seed4" / "image.nii.gz"
        if not sample.exists():
            self.delayDisplay(f"sample study {sample} not found; skipped")
            return
        ensure_covseg()
        volume = slicer.util.loadVolume(str(sample))
        logic = CovSegLogic()
        logic.start(volume, CovSegParameters(models=("lung", "infection")))
        events = logic.process.wait(timeout=600)
        finished = events[-1]
        self.assertIsInstance(finished, Finished)
        self.assertEqual(finished.returncode, 0, finished.error)
        segmentation, table = logic.loadResults()
        names = [segmentation.GetSegmentation().GetNthSegment(i).GetName()
                 for i in range(segmentation.GetSegmentation().GetNumberOfSegments())]
        self.assertIn("Left lung", names)
        self.assertIn("Right lung", names)
        self.assertGreater(table.GetNumberOfRows(), 5)
        logic.cleanupRun()
        self.delayDisplay(f"CovSeg test passed (covseg >= {MINIMUM_COVSEG_VERSION})")
