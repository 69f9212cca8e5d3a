"""SegToolkit: semi-automatic segmentation (threshold, region growing, snakes) and radiology measurements in 3D
Slicer.

The widget only collects inputs and shows progress; everything runnable without the GUI is in
``SegToolkitSlicerLib.logic.SegToolkitSlicerLogic`` (tested outside Slicer with the slicer-core wheel), which
``SegToolkitLogic`` wraps for the module framework.
"""

from __future__ import annotations

from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

METHODS = ("threshold", "region growing", "snake")
GROWING_MODES = ("connected", "confidence", "competitive")


class SegToolkit(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SegToolkit")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "Markups"]
        self.parent.contributors = ["SegToolkit developers"]
        self.parent.helpText = _(
            "Segment an image with threshold, region growing or snakes from seed points, then measure the segments "
            "(volume, diameters, RECIST, ellipsoid, intensity statistics). The Segment Editor gets two more effects: "
            "Snake and Region growing.")
        self.parent.acknowledgementText = _("SegToolkit builds on SimpleITK, SciPy and scikit-image.")


@parameterNodeWrapper
class SegToolkitParameterNode:
    """GUI state, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    overwrite: bool = False
    method: Annotated[str, Choice(list(METHODS))] = "region growing"
    seeds: vtkMRMLMarkupsFiducialNode
    resultName: str = "Structure"
    lowerThreshold: float = -100.0
    upperThreshold: float = 300.0
    growingMode: Annotated[str, Choice(list(GROWING_MODES))] = "confidence"
    multiplier: Annotated[float, WithinRange(0.5, 10.0)] = 2.5
    competitorSeeds: vtkMRMLMarkupsFiducialNode
    snakeExpansion: float = 1.0
    snakeSmoothness: Annotated[float, WithinRange(0.0, 5.0)] = 0.3
    snakeIterations: Annotated[int, WithinRange(1, 10000)] = 500
    measurementTable: vtkMRMLTableNode


class SegToolkitWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: inputs, four sections, a progress bar with Cancel."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SegToolkit.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SegToolkitLogic()

        for combo, items in ((self.ui.methodComboBox, METHODS), (self.ui.growingModeComboBox, GROWING_MODES)):
            combo.addItems(list(items))
        self.ui.seedsPlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.seedsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.seedsPlaceWidget.setCurrentNode)
        self.ui.methodComboBox.connect("currentIndexChanged(int)", self.updateMethodGroups)
        self.ui.previewButton.connect("clicked(bool)", self.onPreview)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.measureButton.connect("clicked(bool)", self.onMeasure)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsv)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode: SegToolkitParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self.updateButtons()
            self.updateMethodGroups()

    # ------------------------------------------------------------------------------------------ GUI state
    def updateButtons(self, caller=None, event=None) -> None:
        params = self._parameterNode
        hasVolume = bool(params and params.inputVolume)
        needsSeeds = params and params.method != "threshold"
        hasSeeds = bool(params and params.seeds and params.seeds.GetNumberOfControlPoints())
        ready = hasVolume and (hasSeeds or not needsSeeds)
        self.ui.previewButton.enabled = ready
        self.ui.applyButton.enabled = ready
        self.ui.measureButton.enabled = bool(params and params.outputSegmentation)
        self.ui.exportCsvButton.enabled = bool(params and params.measurementTable)

    def updateMethodGroups(self, *args) -> None:
        method = self.ui.methodComboBox.currentText
        self.ui.thresholdGroupBox.visible = method == "threshold"
        self.ui.growingGroupBox.visible = method == "region growing"
        self.ui.snakeGroupBox.visible = method == "snake"

    # ---------------------------------------------------------------------------------------- semi-automatic
    def computeSemiAutomatic(self):
        """The chosen method's result as a label map (not yet written)."""
        p = self._parameterNode
        core = self.logic.core()
        if p.method == "threshold":
            return core.threshold_labels(p.inputVolume, p.lowerThreshold, p.upperThreshold, name=p.resultName)
        if p.method == "region growing":
            return core.region_growing_labels(p.inputVolume, p.seeds, mode=p.growingMode, name=p.resultName,
                                              multiplier=p.multiplier, competitors=p.competitorSeeds)
        return core.snake_labels(p.inputVolume, p.seeds, iterations=p.snakeIterations, name=p.resultName,
                                 expansion=p.snakeExpansion, smoothness=p.snakeSmoothness)

    def onPreview(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Preview failed."), waitCursor=True):
            self.logic.core().show_preview(self.computeSemiAutomatic(), self._parameterNode.inputVolume)

    def onApply(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Segmentation failed."), waitCursor=True):
            p = self._parameterNode
            core = self.logic.core()
            if not core.has_preview():
                core.show_preview(self.computeSemiAutomatic(), p.inputVolume)
            p.outputSegmentation = core.output_segmentation(p.inputVolume, p.outputSegmentation)
            core.apply_preview(p.outputSegmentation, overwrite=p.overwrite)

    # --------------------------------------------------------------------------------------- measurements
    def onMeasure(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Measurement failed."), waitCursor=True):
            p = self._parameterNode
            p.measurementTable = self.logic.core().measure(p.outputSegmentation, p.inputVolume, p.measurementTable)
            self.logic.showTable(p.measurementTable)

    def onExportCsv(self) -> None:
        path = qt.QFileDialog.getSaveFileName(self.parent, _("Export measurements"), "measurements.csv",
                                              _("CSV files (*.csv)"))
        if path:
            with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
                self.logic.core().export_table_csv(self._parameterNode.measurementTable, path)


class SegToolkitLogic(ScriptedLoadableModuleLogic):
    """Module-framework wrapper: parameter node, dependency installation, and the Qt-free logic."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._core = None

    def getParameterNode(self) -> SegToolkitParameterNode:
        return SegToolkitParameterNode(super().getParameterNode())

    def requirementsPath(self) -> str:
        return self.resourcePath("requirements.txt")

    def resourcePath(self, relativePath: str) -> str:
        import os

        return os.path.join(os.path.dirname(slicer.modules.segtoolkit.path), "Resources", relativePath)

    def ensureDependencies(self) -> bool:
        from SegToolkitSlicerLib.dependencies import ensure_requirements

        return ensure_requirements(self.requirementsPath())

    def core(self):
        """The Qt-free logic on the application scene, once the core Python packages are there."""
        from SegToolkitLib.errors import SegToolkitError

        if not self.ensureDependencies():
            raise SegToolkitError("SegToolkit needs its Python packages (see the Python console); install them "
                                  "and try again")
        if self._core is None or self._core.scene is not slicer.mrmlScene:
            from SegToolkitSlicerLib import logic

            self._core = logic.SegToolkitSlicerLogic(slicer.mrmlScene)
        return self._core

    @staticmethod
    def showTable(tableNode) -> None:
        """Show a table node in the layout's table view."""
        layoutManager = slicer.app.layoutManager()
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(tableNode.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()


class SegToolkitTest(ScriptedLoadableModuleTest):
    """Runs in the application (Reload and Test, or CTest through slicer_add_python_unittest)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_threshold_and_measure()
        self.setUp()
        self.test_snake_from_seed()

    def _ballVolume(self):
        import numpy as np

        z, y, x = np.mgrid[:24, :40, :40]
        ball = ((x - 20) ** 2 + (y - 20) ** 2 + ((z - 12) * 2) ** 2) <= 8 ** 2
        voxels = np.where(ball, 100.0, 0.0).astype(np.float32)
        volume = slicer.util.addVolumeFromArray(voxels, name="ball")
        volume.SetSpacing(0.8, 0.8, 1.6)
        return volume, ball

    def test_threshold_and_measure(self) -> None:
        self.delayDisplay("Threshold and measure")
        volume, ball = self._ballVolume()
        core = SegToolkitLogic().core()
        ids = core.write(core.threshold_labels(volume, 50, 150, name="Ball"), volume)
        segmentation = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
        table = core.measure(segmentation, volume)
        expected_ml = ball.sum() * 0.8 * 0.8 * 1.6 / 1000
        self.assertEqual(len(ids), 1)
        self.assertAlmostEqual(table.GetTable().GetValueByName(0, "volume_ml").ToDouble(), expected_ml, places=6)
        self.delayDisplay("Test passed")

    def test_snake_from_seed(self) -> None:
        self.delayDisplay("Snake from a seed")
        volume, ball = self._ballVolume()
        seeds = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seeds")
        volume.GetIJKToRASMatrix(matrix := vtk.vtkMatrix4x4())
        ras = matrix.MultiplyPoint([20, 20, 12, 1])[:3]
        seeds.AddControlPoint(ras)
        core = SegToolkitLogic().core()
        ids = core.snake(volume, seeds, iterations=200, name="Ball")
        segmentation = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, ids[0], volume)
        self.assertTrue(mask[12, 20, 20])
        self.assertGreater((mask.astype(bool) & ball).sum(), 0.9 * mask.astype(bool).sum())
        self.delayDisplay("Test passed")
