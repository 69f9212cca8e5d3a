"""Hidden module that registers SegToolkit's "Snake" Segment Editor effect at application start-up."""

import os

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest


class SegmentEditorSnake(ScriptedLoadableModule):
    """Registers the effect; the effect itself is SegmentEditorSnakeLib/SegmentEditorEffect.py."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SegmentEditorSnake")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["SegToolkit developers"]
        self.parent.hidden = True
        self.parent.helpText = _("Adds the Snake effect (SegToolkit) to the Segment Editor.")
        self.parent.acknowledgementText = ""
        slicer.app.connect("startupCompleted()", self.registerEditorEffect)

    def registerEditorEffect(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        scriptedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        effectPath = os.path.join(os.path.dirname(__file__), self.__class__.__name__ + "Lib", "SegmentEditorEffect.py")
        scriptedEffect.setPythonSource(effectPath.replace("\\", "/"))
        scriptedEffect.self().register()


class SegmentEditorSnakeTest(ScriptedLoadableModuleTest):
    """The effect is registered and can be activated in the Segment Editor."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_effect_registered()

    def test_effect_registered(self):
        self.delayDisplay("Effect registered")
        slicer.util.selectModule("SegmentEditor")
        editorWidget = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        volume = slicer.util.addVolumeFromArray(__import__("numpy").zeros((8, 8, 8), "float32"))
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentation.GetSegmentation().AddEmptySegment("s")
        editorWidget.setSegmentationNode(segmentation)
        editorWidget.setSourceVolumeNode(volume)
        editorWidget.setActiveEffectByName("Snake")
        self.assertIsNotNone(editorWidget.activeEffect())
        self.assertEqual(editorWidget.activeEffect().name, "Snake")
        editorWidget.setActiveEffect(None)
        self.delayDisplay("Test passed")
