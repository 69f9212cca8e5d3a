"""Segment Editor effect "Snake": click to drop bubbles, watch the contour evolve (Start / Pause / Step), Apply.

The contour evolution is SegToolkitLib's SnakeSession (through SegToolkitSlicerLib.effects, which is tested
outside Slicer); a QTimer advances it a few iterations per tick so the slice views update live.
"""

import os

import ctk
import qt
import slicer
import vtk
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect
from SegToolkitSlicerLib import effects


class SegmentEditorEffect(effects.EffectResultMixin, AbstractScriptedSegmentEditorEffect):
    """Active contour grown from clicked bubbles."""

    previewName = "Snake contour"

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "Snake"
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.session = None
        self.timer = qt.QTimer()
        self.timer.setInterval(50)
        self.timer.connect("timeout()", self.onTick)

    def helpText(self):
        return ("<html>Grow the selected segment with an active contour.<p>Click inside the structure in a slice "
                "view to drop a bubble (several clicks: several bubbles), then <b>Start</b> to let the contour "
                "evolve (<b>Pause</b> / <b>Step</b> to control it) and <b>Apply</b> to add it to the selected "
                "segment (undo with Ctrl+Z). Expansion inflates (positive) or shrinks (negative) the contour; "
                "smoothness keeps it from leaking through small gaps.</html>")

    def setupOptionsFrame(self):
        self.expansionSlider = ctk.ctkSliderWidget()
        self.expansionSlider.setToolTip("Balloon force: positive inflates, negative shrinks.")
        self.expansionSlider.minimum, self.expansionSlider.maximum = -3.0, 3.0
        self.expansionSlider.singleStep, self.expansionSlider.decimals = 0.1, 1
        self.scriptedEffect.addLabeledOptionsWidget("Expansion:", self.expansionSlider)
        self.smoothnessSlider = ctk.ctkSliderWidget()
        self.smoothnessSlider.setToolTip("Curvature force: higher keeps the contour smooth and out of gaps.")
        self.smoothnessSlider.minimum, self.smoothnessSlider.maximum = 0.0, 2.0
        self.smoothnessSlider.singleStep, self.smoothnessSlider.decimals = 0.05, 2
        self.scriptedEffect.addLabeledOptionsWidget("Smoothness:", self.smoothnessSlider)
        self.stepsSpinBox = qt.QSpinBox()
        self.stepsSpinBox.setRange(1, 100)
        self.stepsSpinBox.setToolTip("Iterations per update of the views.")
        self.scriptedEffect.addLabeledOptionsWidget("Iterations per update:", self.stepsSpinBox)

        self.startButton = qt.QPushButton("Start")
        self.pauseButton = qt.QPushButton("Pause")
        self.stepButton = qt.QPushButton("Step")
        row = qt.QHBoxLayout()
        for button in (self.startButton, self.pauseButton, self.stepButton):
            row.addWidget(button)
        self.scriptedEffect.addOptionsWidget(row)
        self.applyButton = qt.QPushButton("Apply")
        self.cancelButton = qt.QPushButton("Cancel")
        row = qt.QHBoxLayout()
        row.addWidget(self.cancelButton)
        row.addWidget(self.applyButton)
        self.scriptedEffect.addOptionsWidget(row)
        self.statusLabel = qt.QLabel("Click inside the structure to drop a bubble.")
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

        for slider in (self.expansionSlider, self.smoothnessSlider):
            slider.connect("valueChanged(double)", self.updateMRMLFromGUI)
        self.stepsSpinBox.connect("valueChanged(int)", self.updateMRMLFromGUI)
        self.startButton.connect("clicked()", self.timer.start)
        self.pauseButton.connect("clicked()", self.timer.stop)
        self.stepButton.connect("clicked()", self.onTick)
        self.applyButton.connect("clicked()", self.onApply)
        self.cancelButton.connect("clicked()", self.reset)

    def setMRMLDefaults(self):
        self.scriptedEffect.setParameterDefault("Expansion", 1.0)
        self.scriptedEffect.setParameterDefault("Smoothness", 0.3)
        self.scriptedEffect.setParameterDefault("IterationsPerUpdate", 5)

    def updateGUIFromMRML(self):
        for widget, name in ((self.expansionSlider, "Expansion"), (self.smoothnessSlider, "Smoothness")):
            wasBlocked = widget.blockSignals(True)
            widget.value = self.scriptedEffect.doubleParameter(name)
            widget.blockSignals(wasBlocked)
        wasBlocked = self.stepsSpinBox.blockSignals(True)
        self.stepsSpinBox.value = self.scriptedEffect.integerParameter("IterationsPerUpdate")
        self.stepsSpinBox.blockSignals(wasBlocked)
        hasBubbles = self.session is not None and bool(self.session.bubbles)
        for button in (self.startButton, self.stepButton, self.applyButton, self.cancelButton):
            button.enabled = hasBubbles
        self.pauseButton.enabled = hasBubbles and self.timer.isActive()

    def updateMRMLFromGUI(self, *args):
        changed = (self.scriptedEffect.doubleParameter("Expansion") != self.expansionSlider.value
                   or self.scriptedEffect.doubleParameter("Smoothness") != self.smoothnessSlider.value)
        self.scriptedEffect.setParameter("Expansion", self.expansionSlider.value)
        self.scriptedEffect.setParameter("Smoothness", self.smoothnessSlider.value)
        self.scriptedEffect.setParameter("IterationsPerUpdate", self.stepsSpinBox.value)
        if changed and self.session is not None:  # new forces: restart from the same bubbles
            bubbles = self.session.bubbles
            self.session = self.newSession()
            self.session.bubbles.extend(bubbles)

    def newSession(self):
        return effects.SnakeEffectSession(self.sourceImage(), expansion=self.scriptedEffect.doubleParameter(
            "Expansion"), smoothness=self.scriptedEffect.doubleParameter("Smoothness"))

    def deactivate(self):
        self.reset()

    def cleanup(self):
        self.timer.stop()
        self.timer.disconnect("timeout()", self.onTick)

    def sourceVolumeNodeChanged(self):
        self.reset()

    def reset(self):
        self.timer.stop()
        self.session = None
        self.removePreview()
        if hasattr(self, "statusLabel"):
            self.statusLabel.text = "Click inside the structure to drop a bubble."
            self.updateGUIFromMRML()

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if eventId != vtk.vtkCommand.LeftButtonPressEvent or viewWidget.className() != "qMRMLSliceWidget":
            return False
        if self.sourceImage() is None:
            return False
        if not self.dependenciesReady():
            return True  # the click was answered by the installation dialog
        with slicer.util.tryWithErrorDisplay("Cannot drop a bubble here.", waitCursor=True):
            if self.session is None:
                self.session = self.newSession()
            self.session.add_bubble(self.clickedIjk(callerInteractor, viewWidget))
            self.showPreview(self.session.step(1))
            self.statusLabel.text = f"{len(self.session.bubbles)} bubble(s); press Start or Step."
            self.updateGUIFromMRML()
        return True

    def onTick(self):
        if self.session is None:
            self.timer.stop()
            return
        try:
            mask = self.session.step(self.scriptedEffect.integerParameter("IterationsPerUpdate"))
        except Exception as error:
            self.timer.stop()
            slicer.util.errorDisplay(f"Snake stopped: {error}")
            return
        self.showPreview(mask)
        state = "converged" if self.session.converged else "running" if self.timer.isActive() else "paused"
        self.statusLabel.text = f"Iteration {self.session.iteration} ({state})"
        if self.session.converged:
            self.timer.stop()
        self.updateGUIFromMRML()

    def onApply(self):
        if self.session is None:
            return
        self.timer.stop()
        with slicer.util.tryWithErrorDisplay("Applying the snake failed.", waitCursor=True):
            self.applyMask(self.session.mask())
        self.reset()

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "SegmentEditorEffect.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()
