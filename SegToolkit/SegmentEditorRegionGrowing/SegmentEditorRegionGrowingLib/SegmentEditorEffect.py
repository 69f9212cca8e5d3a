"""Segment Editor effect "Region growing": grow the selected segment from clicks (connected / confidence), or
grow all visible segments against each other from their current voxels (competitive).

The growing is SegToolkitLib's (through SegToolkitSlicerLib.effects, tested outside Slicer).
"""

import os

import qt
import slicer
import vtk
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect
from SegToolkitSlicerLib import effects

MODES = ("connected", "confidence", "competitive")


class SegmentEditorEffect(effects.EffectResultMixin, AbstractScriptedSegmentEditorEffect):
    """Region growing from clicked seeds or from the segments themselves."""

    previewName = "Region growing preview"

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "Region growing"
        scriptedEffect.perSegment = False
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.clicks = []
        self.mask = None

    def helpText(self):
        return ("<html>Grow segments from seeds.<p><b>connected</b> / <b>confidence</b>: click inside the "
                "structure in a slice view (more clicks add seeds); the grown region is previewed, <b>Apply</b> adds "
                "it to the selected segment. <b>competitive</b>: paint a few strokes in each structure and in the "
                "surroundings (one segment each), then <b>Grow from segments</b>: every visible segment grows until "
                "it meets the others. Undo with Ctrl+Z.</html>")

    def setupOptionsFrame(self):
        self.modeComboBox = qt.QComboBox()
        self.modeComboBox.addItems(list(MODES))
        self.modeComboBox.setToolTip("connected: intensity range around the seeds; confidence: mean +/- k SD of "
                                     "the region; competitive: visible segments grow against each other.")
        self.scriptedEffect.addLabeledOptionsWidget("Mode:", self.modeComboBox)
        self.multiplierSpinBox = qt.QDoubleSpinBox()
        self.multiplierSpinBox.setRange(0.5, 10.0)
        self.multiplierSpinBox.setSingleStep(0.1)
        self.scriptedEffect.addLabeledOptionsWidget("Confidence multiplier:", self.multiplierSpinBox)
        self.growSegmentsButton = qt.QPushButton("Grow from segments")
        self.scriptedEffect.addOptionsWidget(self.growSegmentsButton)
        self.cancelButton = qt.QPushButton("Cancel")
        self.applyButton = qt.QPushButton("Apply")
        row = qt.QHBoxLayout()
        row.addWidget(self.cancelButton)
        row.addWidget(self.applyButton)
        self.scriptedEffect.addOptionsWidget(row)

        self.modeComboBox.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.multiplierSpinBox.connect("valueChanged(double)", self.updateMRMLFromGUI)
        self.growSegmentsButton.connect("clicked()", self.onGrowFromSegments)
        self.applyButton.connect("clicked()", self.onApply)
        self.cancelButton.connect("clicked()", self.reset)

    def setMRMLDefaults(self):
        self.scriptedEffect.setParameterDefault("Mode", "confidence")
        self.scriptedEffect.setParameterDefault("Multiplier", 2.5)

    def updateGUIFromMRML(self):
        mode = self.scriptedEffect.parameter("Mode")
        wasBlocked = self.modeComboBox.blockSignals(True)
        self.modeComboBox.currentText = mode
        self.modeComboBox.blockSignals(wasBlocked)
        wasBlocked = self.multiplierSpinBox.blockSignals(True)
        self.multiplierSpinBox.value = self.scriptedEffect.doubleParameter("Multiplier")
        self.multiplierSpinBox.blockSignals(wasBlocked)
        competitive = mode == "competitive"
        self.multiplierSpinBox.enabled = mode == "confidence"
        self.growSegmentsButton.visible = competitive
        self.applyButton.enabled = self.cancelButton.enabled = self.mask is not None and not competitive

    def updateMRMLFromGUI(self, *args):
        self.scriptedEffect.setParameter("Mode", self.modeComboBox.currentText)
        self.scriptedEffect.setParameter("Multiplier", self.multiplierSpinBox.value)
        if self.clicks:
            self.regrow()

    def deactivate(self):
        self.reset()

    def sourceVolumeNodeChanged(self):
        self.reset()

    def reset(self):
        self.clicks = []
        self.mask = None
        self.removePreview()
        if hasattr(self, "applyButton"):
            self.updateGUIFromMRML()

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if eventId != vtk.vtkCommand.LeftButtonPressEvent or viewWidget.className() != "qMRMLSliceWidget":
            return False
        if self.scriptedEffect.parameter("Mode") == "competitive" or self.sourceImage() is None:
            return False
        if not self.dependenciesReady():
            return True  # the click was answered by the installation dialog
        self.clicks.append(self.clickedIjk(callerInteractor, viewWidget))
        self.regrow()
        return True

    def regrow(self):
        with slicer.util.tryWithErrorDisplay("Region growing failed.", waitCursor=True):
            mode = self.scriptedEffect.parameter("Mode")
            if mode == "competitive":
                return
            self.mask = effects.grow_from_clicks(self.sourceImage(), self.clicks, mode=mode,
                                                 multiplier=self.scriptedEffect.doubleParameter("Multiplier"))
            self.showPreview(self.mask)
        self.updateGUIFromMRML()

    def onApply(self):
        if self.mask is not None:
            with slicer.util.tryWithErrorDisplay("Applying the region failed.", waitCursor=True):
                self.applyMask(self.mask)
        self.reset()

    def onGrowFromSegments(self):
        if not self.dependenciesReady():
            return
        with slicer.util.tryWithErrorDisplay("Growing from segments failed.", waitCursor=True):
            segmentationNode = self.scriptedEffect.parameterSetNode().GetSegmentationNode()
            segmentIds = vtk.vtkStringArray()
            segmentationNode.GetDisplayNode().GetVisibleSegmentIDs(segmentIds)
            ids = [segmentIds.GetValue(i) for i in range(segmentIds.GetNumberOfValues())]
            grown = effects.grow_from_segments(self.sourceImage(), segmentationNode, ids)
            self.scriptedEffect.saveStateForUndo()
            for segmentId, mask in grown.items():
                modifier = effects.mask_to_oriented_image(mask, self.sourceImage())
                self.scriptedEffect.modifySegmentByLabelmap(segmentationNode, segmentId, modifier,
                                                            slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeSet)

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "SegmentEditorEffect.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()
