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

# Choices mirrored from SegToolkitLib.methods.classic.snakes (this file loads before SegToolkitLib is installed)
MODELS = ("geodesic", "chan-vese")
FEATURES = ("auto", "edge", "region")
SHAPES = ("auto", "ellipse", "free")


class SegmentEditorEffect(effects.EffectResultMixin, AbstractScriptedSegmentEditorEffect):
    """Active contour grown from clicked bubbles."""

    previewName = "Snake contour"
    featureNode = None

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
                "segment (undo with Ctrl+Z).<p><b>Model</b>: geodesic (the contour follows the feature image) or "
                "Chan-Vese (inside and outside intensities compete). <b>Feature</b>: edges, or the region "
                "probability of an intensity range; <i>auto</i> picks the region for homogeneous tissue (CT, MRI) "
                "and edges for textured images (ultrasound). With <i>automatic settings</i> the range or edge "
                "strength is derived from the clicks and shown; untick it to adjust them, and tick "
                "<b>Show feature image</b> to see what the contour follows (region: bright inside the range). "
                "Expansion inflates (positive) or shrinks (negative) the contour; smoothness keeps it from leaking "
                "through small gaps.</html>")

    def setupOptionsFrame(self):
        self.modelCombo = self._combo(MODELS, "Geodesic: follow the feature image. Chan-Vese: intensity competition.")
        self.scriptedEffect.addLabeledOptionsWidget("Model:", self.modelCombo)
        self.featureCombo = self._combo(FEATURES, "What the geodesic contour follows: edges or the region "
                                                  "probability of an intensity range (auto: chosen from the clicks).")
        self.scriptedEffect.addLabeledOptionsWidget("Feature:", self.featureCombo)
        self.shapeCombo = self._combo(SHAPES, "Shape prior: ellipse keeps the contour elliptical (auto: for a 2D "
                                              "click inside a bright elliptical ridge).")
        self.scriptedEffect.addLabeledOptionsWidget("Shape:", self.shapeCombo)

        self.automaticFeatureCheckBox = qt.QCheckBox("Automatic feature settings (from the clicks)")
        self.scriptedEffect.addOptionsWidget(self.automaticFeatureCheckBox)
        self.lowerSpinBox = self._spinBox("Lowest intensity inside the structure (region feature).")
        self.upperSpinBox = self._spinBox("Highest intensity inside the structure (region feature).")
        row = qt.QHBoxLayout()
        row.addWidget(self.lowerSpinBox)
        row.addWidget(self.upperSpinBox)
        self.scriptedEffect.addLabeledOptionsWidget("Intensity range:", row)
        self.edgeStrengthSpinBox = self._spinBox("Gradient magnitude that counts as an edge (edge feature).")
        self.scriptedEffect.addLabeledOptionsWidget("Edge strength:", self.edgeStrengthSpinBox)
        self.showFeatureCheckBox = qt.QCheckBox("Show feature image")
        self.showFeatureCheckBox.setToolTip("Show what the contour follows in the slice views (foreground layer).")
        self.scriptedEffect.addOptionsWidget(self.showFeatureCheckBox)

        self.automaticForcesCheckBox = qt.QCheckBox("Automatic forces")
        self.automaticForcesCheckBox.setToolTip("Expansion and smoothness chosen for the model and feature.")
        self.scriptedEffect.addOptionsWidget(self.automaticForcesCheckBox)
        self.expansionSlider = self._slider(-3.0, 3.0, 0.1, 1, "Balloon force: positive inflates, negative shrinks.")
        self.scriptedEffect.addLabeledOptionsWidget("Expansion:", self.expansionSlider)
        self.smoothnessSlider = self._slider(0.0, 3.0, 0.05, 2,
                                             "Curvature force (mm): higher keeps the contour smooth and out of gaps.")
        self.scriptedEffect.addLabeledOptionsWidget("Smoothness:", self.smoothnessSlider)
        self.edgeAttractionSlider = self._slider(0.0, 3.0, 0.1, 1, "Pull towards the nearest edge (edge feature).")
        self.scriptedEffect.addLabeledOptionsWidget("Edge attraction:", self.edgeAttractionSlider)
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
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

        for combo in (self.modelCombo, self.featureCombo, self.shapeCombo):
            combo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        for slider in (self.expansionSlider, self.smoothnessSlider, self.edgeAttractionSlider):
            slider.connect("valueChanged(double)", self.updateMRMLFromGUI)
        for spinBox in (self.lowerSpinBox, self.upperSpinBox, self.edgeStrengthSpinBox):
            spinBox.connect("valueChanged(double)", self.updateMRMLFromGUI)
        for checkBox in (self.automaticFeatureCheckBox, self.automaticForcesCheckBox, self.showFeatureCheckBox):
            checkBox.connect("toggled(bool)", self.updateMRMLFromGUI)
        self.stepsSpinBox.connect("valueChanged(int)", self.updateMRMLFromGUI)
        self.startButton.connect("clicked()", self.timer.start)
        self.pauseButton.connect("clicked()", self.timer.stop)
        self.stepButton.connect("clicked()", self.onTick)
        self.applyButton.connect("clicked()", self.onApply)
        self.cancelButton.connect("clicked()", self.reset)

    @staticmethod
    def _combo(items, toolTip):
        combo = qt.QComboBox()
        for item in items:
            combo.addItem(item)
        combo.setToolTip(toolTip)
        return combo

    @staticmethod
    def _spinBox(toolTip):
        spinBox = qt.QDoubleSpinBox()
        spinBox.setRange(-1e6, 1e6)
        spinBox.setDecimals(2)
        spinBox.setToolTip(toolTip)
        return spinBox

    @staticmethod
    def _slider(minimum, maximum, step, decimals, toolTip):
        slider = ctk.ctkSliderWidget()
        slider.minimum, slider.maximum = minimum, maximum
        slider.singleStep, slider.decimals = step, decimals
        slider.setToolTip(toolTip)
        return slider

    def setMRMLDefaults(self):
        for name, value in (("Model", "geodesic"), ("Feature", "auto"), ("Shape", "auto")):
            self.scriptedEffect.setParameterDefault(name, value)
        for name, value in (("AutomaticFeature", 1), ("AutomaticForces", 1), ("ShowFeature", 0),
                            ("IterationsPerUpdate", 5)):
            self.scriptedEffect.setParameterDefault(name, value)
        for name, value in (("Expansion", 1.0), ("Smoothness", 0.3), ("EdgeAttraction", 1.0), ("Lower", 0.0),
                            ("Upper", 0.0), ("EdgeStrength", 1.0)):
            self.scriptedEffect.setParameterDefault(name, value)

    def updateGUIFromMRML(self):
        for combo, name in ((self.modelCombo, "Model"), (self.featureCombo, "Feature"), (self.shapeCombo, "Shape")):
            wasBlocked = combo.blockSignals(True)
            combo.setCurrentIndex(max(combo.findText(self.scriptedEffect.parameter(name)), 0))
            combo.blockSignals(wasBlocked)
        for widget, name in ((self.expansionSlider, "Expansion"), (self.smoothnessSlider, "Smoothness"),
                             (self.edgeAttractionSlider, "EdgeAttraction"), (self.lowerSpinBox, "Lower"),
                             (self.upperSpinBox, "Upper"), (self.edgeStrengthSpinBox, "EdgeStrength")):
            wasBlocked = widget.blockSignals(True)
            widget.value = self.scriptedEffect.doubleParameter(name)
            widget.blockSignals(wasBlocked)
        for checkBox, name in ((self.automaticFeatureCheckBox, "AutomaticFeature"),
                               (self.automaticForcesCheckBox, "AutomaticForces"), (self.showFeatureCheckBox,
                                                                                  "ShowFeature")):
            wasBlocked = checkBox.blockSignals(True)
            checkBox.checked = self.scriptedEffect.integerParameter(name) != 0
            checkBox.blockSignals(wasBlocked)
        wasBlocked = self.stepsSpinBox.blockSignals(True)
        self.stepsSpinBox.value = self.scriptedEffect.integerParameter("IterationsPerUpdate")
        self.stepsSpinBox.blockSignals(wasBlocked)
        automaticFeature = self.automaticFeatureCheckBox.checked
        for widget in (self.lowerSpinBox, self.upperSpinBox, self.edgeStrengthSpinBox):
            widget.enabled = not automaticFeature
        for widget in (self.expansionSlider, self.smoothnessSlider):
            widget.enabled = not self.automaticForcesCheckBox.checked
        hasBubbles = self.session is not None and bool(self.session.bubbles)
        for button in (self.startButton, self.stepButton, self.applyButton, self.cancelButton):
            button.enabled = hasBubbles
        self.pauseButton.enabled = hasBubbles and self.timer.isActive()

    def updateMRMLFromGUI(self, *args):
        before = self.snakeOptions()
        self.scriptedEffect.setParameter("Model", self.modelCombo.currentText)
        self.scriptedEffect.setParameter("Feature", self.featureCombo.currentText)
        self.scriptedEffect.setParameter("Shape", self.shapeCombo.currentText)
        for widget, name in ((self.expansionSlider, "Expansion"), (self.smoothnessSlider, "Smoothness"),
                             (self.edgeAttractionSlider, "EdgeAttraction"), (self.lowerSpinBox, "Lower"),
                             (self.upperSpinBox, "Upper"), (self.edgeStrengthSpinBox, "EdgeStrength")):
            self.scriptedEffect.setParameter(name, widget.value)
        for checkBox, name in ((self.automaticFeatureCheckBox, "AutomaticFeature"),
                               (self.automaticForcesCheckBox, "AutomaticForces"), (self.showFeatureCheckBox,
                                                                                  "ShowFeature")):
            self.scriptedEffect.setParameter(name, 1 if checkBox.checked else 0)
        self.scriptedEffect.setParameter("IterationsPerUpdate", self.stepsSpinBox.value)
        if self.session is not None and self.snakeOptions() != before:  # new settings: restart from the bubbles
            with slicer.util.tryWithErrorDisplay("The snake settings do not fit this image.", waitCursor=True):
                self.session.set_options(**self.snakeOptions())
                self.showPreview(self.session.step(1))
                self.showSettings()
        self.updateFeaturePreview()
        self.updateGUIFromMRML()

    def snakeOptions(self):
        """The SnakeSession settings from the parameters (None: automatic)."""
        automaticFeature = self.scriptedEffect.integerParameter("AutomaticFeature") != 0
        automaticForces = self.scriptedEffect.integerParameter("AutomaticForces") != 0
        feature = self.scriptedEffect.parameter("Feature")
        rangeGiven = not automaticFeature and feature == "region"
        return {
            "model": self.scriptedEffect.parameter("Model"), "feature": feature,
            "shape": self.scriptedEffect.parameter("Shape"),
            "edge_attraction": self.scriptedEffect.doubleParameter("EdgeAttraction"),
            "expansion": None if automaticForces else self.scriptedEffect.doubleParameter("Expansion"),
            "smoothness": None if automaticForces else self.scriptedEffect.doubleParameter("Smoothness"),
            "intensity_range": (self.scriptedEffect.doubleParameter("Lower"),
                                self.scriptedEffect.doubleParameter("Upper")) if rangeGiven else None,
            "edge_strength": self.scriptedEffect.doubleParameter("EdgeStrength")
            if not automaticFeature and feature == "edge" else None,
        }

    def newSession(self):
        return effects.SnakeEffectSession(self.sourceImage(), **self.snakeOptions())

    def showSettings(self):
        """Show what the contour uses, and with automatic settings write the derived values into the fields."""
        settings = self.session.describe()
        if self.scriptedEffect.integerParameter("AutomaticFeature") != 0:
            if settings["intensity_range"] is not None:
                self.scriptedEffect.setParameter("Lower", settings["intensity_range"][0])
                self.scriptedEffect.setParameter("Upper", settings["intensity_range"][1])
            if settings["edge_strength"] is not None:
                self.scriptedEffect.setParameter("EdgeStrength", settings["edge_strength"])
        if self.scriptedEffect.integerParameter("AutomaticForces") != 0:
            self.scriptedEffect.setParameter("Expansion", settings["expansion"])
            self.scriptedEffect.setParameter("Smoothness", settings["smoothness"])
        choice = settings["choice"] or f"{settings['feature']} feature"
        self.statusLabel.text = f"{len(self.session.bubbles)} bubble(s), {settings['model']}: {choice}."
        self.updateGUIFromMRML()

    def updateFeaturePreview(self):
        """Show (or remove) the feature image as the slice views' foreground layer."""
        show = self.scriptedEffect.integerParameter("ShowFeature") != 0 and self.session is not None \
            and bool(self.session.bubbles)
        if not show:
            self.removeFeaturePreview()
            return
        from SegToolkitSlicerLib import mrml

        feature = self.session.feature_image()
        segmentationNode = self.scriptedEffect.parameterSetNode().GetSegmentationNode()
        if self.featureNode is None or self.featureNode.GetScene() is None:
            self.featureNode = mrml.add_volume_from_sitk(segmentationNode.GetScene(), feature, "Snake feature")
            self.featureNode.SetHideFromEditors(True)
        else:
            mrml.update_volume_from_sitk(self.featureNode, feature)
        self.featureNode.SetAndObserveTransformNodeID(segmentationNode.GetTransformNodeID())
        slicer.util.setSliceViewerLayers(foreground=self.featureNode, foregroundOpacity=0.5)

    def removeFeaturePreview(self):
        if self.featureNode is not None and self.featureNode.GetScene() is not None:
            self.featureNode.GetScene().RemoveNode(self.featureNode)
        self.featureNode = None

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
        self.removeFeaturePreview()
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
            self.showSettings()
            self.statusLabel.text += " Press Start or Step."
            self.updateFeaturePreview()
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
