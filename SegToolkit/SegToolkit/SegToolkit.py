"""SegToolkit: semi-automatic segmentation (threshold, region growing, snakes), atlas segmentation, deep learning
(predict and train) and radiology measurements in 3D Slicer.

The widget only collects inputs and shows progress; long work (atlas, prediction, training) runs as a
``SegToolkitSlicerLib.jobs.Job`` whose computation is on a worker thread while a ``qt.QTimer`` polls it, so the GUI
stays responsive and every MRML change happens on the main thread; everything runnable without the GUI is in
``SegToolkitSlicerLib.logic.SegToolkitSlicerLogic`` (tested outside Slicer with the slicer-core wheel), which
``SegToolkitLogic`` wraps for the module framework.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
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
# mirrors SegToolkitLib.methods.atlas (not imported here: the module must load before its packages are installed)
ATLAS_TRANSFORMS = ("auto", "rigid", "affine", "deformable", "diffeomorphic")
ATLAS_PRESETS = ("fast", "default", "accurate")
FUSION_METHODS = ("auto", "majority", "staple", "weighted")
DEVICES = ("auto", "cpu", "cuda")
MODELS_FOLDER_SETTING = "SegToolkit/ModelsFolder"
JOB_POLL_MS = 200


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
        self.parent.acknowledgementText = _("SegToolkit builds on SimpleITK, SciPy, scikit-image, PyTorch and MONAI.")


@parameterNodeWrapper
class SegToolkitParameterNode:
    """GUI state, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    overwrite: bool = False
    method: Annotated[str, Choice(list(METHODS))] = "region growing"
    seeds: vtkMRMLMarkupsFiducialNode
    resultName: str = "Structure"
    # the same range as the .ui spin boxes (connectGui replaces a widget's range by the field's, -inf..inf if none)
    lowerThreshold: Annotated[float, WithinRange(-100000.0, 100000.0)] = -100.0
    upperThreshold: Annotated[float, WithinRange(-100000.0, 100000.0)] = 300.0
    growingMode: Annotated[str, Choice(list(GROWING_MODES))] = "confidence"
    multiplier: Annotated[float, WithinRange(0.5, 10.0)] = 2.5
    competitorSeeds: vtkMRMLMarkupsFiducialNode
    snakeExpansion: Annotated[float, WithinRange(-5.0, 5.0)] = 1.0
    snakeSmoothness: Annotated[float, WithinRange(0.0, 5.0)] = 0.3
    snakeIterations: Annotated[int, WithinRange(1, 10000)] = 500
    measurementTable: vtkMRMLTableNode
    atlasVolumes: list[vtkMRMLScalarVolumeNode]
    atlasSegmentations: list[vtkMRMLSegmentationNode]
    atlasFolder: str = ""
    atlasTransform: Annotated[str, Choice(list(ATLAS_TRANSFORMS))] = "auto"
    atlasPreset: Annotated[str, Choice(list(ATLAS_PRESETS))] = "default"
    atlasFusion: Annotated[str, Choice(list(FUSION_METHODS))] = "auto"
    atlasMaskMargin: Annotated[float, WithinRange(0.0, 200.0)] = 0.0
    deepModel: str = ""
    deepDevice: Annotated[str, Choice(list(DEVICES))] = "auto"
    deepAccurate: bool = False
    deepLargestComponent: bool = False
    deepClasses: str = ""
    trainVolumes: list[vtkMRMLScalarVolumeNode]
    trainSegmentations: list[vtkMRMLSegmentationNode]
    trainModelName: str = "my model"
    trainMinutes: Annotated[float, WithinRange(1.0, 10000.0)] = 30.0
    trainIsCT: bool = True


class SegToolkitWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: inputs, four sections, a progress bar with Cancel."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.runner = None
        self._onJobDone = None
        self.jobTimer = None
        self._previewSettings = None
        self._modelInfos = {}

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SegToolkit.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SegToolkitLogic()

        # the Choice combo boxes get their items from connectGui (the parameter node wrapper's combo box connector)
        self.ui.seedsPlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.seedsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.seedsPlaceWidget.setCurrentNode)
        self.ui.methodComboBox.connect("currentIndexChanged(int)", self.updateMethodGroups)
        self.ui.previewButton.connect("clicked(bool)", self.onPreview)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.measureButton.connect("clicked(bool)", self.onMeasure)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsv)

        self.ui.addAtlasButton.connect("clicked(bool)", self.onAddAtlas)
        self.ui.removeAtlasButton.connect("clicked(bool)", self.onRemoveAtlas)
        self.ui.atlasFolderPathLineEdit.connect("currentPathChanged(QString)", self.onAtlasFolderChanged)
        self.ui.atlasApplyButton.connect("clicked(bool)", self.onApplyAtlas)
        self.ui.modelsFolderPathLineEdit.currentPath = qt.QSettings().value(MODELS_FOLDER_SETTING,
                                                                            self.logic.defaultModelsFolder())
        self.ui.modelsFolderPathLineEdit.connect("currentPathChanged(QString)", self.onModelsFolderChanged)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.updateModelList)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.deepApplyButton.connect("clicked(bool)", self.onApplyDeep)
        self.ui.downloadModelButton.connect("clicked(bool)", self.onDownloadModel)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.importModelPathLineEdit.connect("currentPathChanged(QString)", self.updateButtons)
        self.ui.addTrainingPairButton.connect("clicked(bool)", self.onAddTrainingPair)
        self.ui.removeTrainingPairButton.connect("clicked(bool)", self.onRemoveTrainingPair)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)
        self.ui.cancelJobButton.connect("clicked(bool)", self.onCancelJob)

        self.jobTimer = qt.QTimer()
        self.jobTimer.setInterval(JOB_POLL_MS)
        self.jobTimer.connect("timeout()", self.onJobTimer)
        self.showJobState(None)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.runner is not None and not self.runner.done:
            self.runner.cancel()
        if self.jobTimer is not None:
            self.jobTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        # a running job would write its result into nodes that are about to leave the scene
        if self.runner is not None and not self.runner.done:
            self.runner.cancel()
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
            self.updatePairLists()
            self.updateModelList()

    # ------------------------------------------------------------------------------------------ GUI state
    def updateButtons(self, caller=None, event=None) -> None:
        params = self._parameterNode
        hasVolume = bool(params and params.inputVolume)
        needsSeeds = params and params.method != "threshold"
        # placing points does not modify the parameter node: an empty seeds node is reported on Apply instead
        hasSeeds = bool(params and params.seeds)
        ready = hasVolume and (hasSeeds or not needsSeeds)
        idle = self.runner is None or self.runner.done
        self.ui.previewButton.enabled = idle and ready
        self.ui.applyButton.enabled = idle and ready
        self.ui.measureButton.enabled = bool(params and params.outputSegmentation)
        self.ui.exportCsvButton.enabled = bool(params and params.measurementTable)
        hasAtlas = bool(params and (params.atlasVolumes or params.atlasFolder))
        self.ui.atlasApplyButton.enabled = idle and hasVolume and hasAtlas
        chosen = self.chosenModelInfo()
        self.ui.deepApplyButton.enabled = idle and hasVolume and chosen is not None and not chosen.downloadable
        self.ui.downloadModelButton.enabled = idle and chosen is not None and chosen.downloadable
        self.ui.importModelButton.enabled = idle and bool(self.ui.importModelPathLineEdit.currentPath)
        self.ui.trainButton.enabled = idle and bool(params and params.trainVolumes and params.trainModelName.strip())

    def updateMethodGroups(self, *args) -> None:
        method = self.ui.methodComboBox.currentText
        self.ui.thresholdGroupBox.visible = method == "threshold"
        self.ui.growingGroupBox.visible = method == "region growing"
        self.ui.snakeGroupBox.visible = method == "snake"

    # ---------------------------------------------------------------------------------------- semi-automatic
    def semiAutomaticJob(self, apply: bool = False):
        """The chosen method as a background job (preview, or with ``apply`` the result written)."""
        p = self._parameterNode
        core = self.logic.core()
        if p.method == "threshold":
            options = {"lower": p.lowerThreshold, "upper": p.upperThreshold}
        elif p.method == "region growing":
            options = {"mode": p.growingMode, "multiplier": p.multiplier, "competitors": p.competitorSeeds}
        else:
            options = {"iterations": p.snakeIterations, "expansion": p.snakeExpansion,
                       "smoothness": p.snakeSmoothness}
        seeds = p.seeds if p.method != "threshold" else None
        return core.semi_automatic_job(p.method, p.inputVolume, seeds, name=p.resultName, apply=apply,
                                       segmentation=p.outputSegmentation, overwrite=p.overwrite, **options)

    def semiAutomaticSettings(self) -> tuple:
        """What a semi-automatic result is computed from; the nodes' modification times count too, as moving a seed
        point changes no parameter."""
        p = self._parameterNode
        nodes = (p.inputVolume, p.seeds, p.competitorSeeds)
        return (p.method, p.resultName, p.lowerThreshold, p.upperThreshold, p.growingMode, p.multiplier,
                p.snakeExpansion, p.snakeSmoothness, p.snakeIterations,
                *((node.GetID(), node.GetMTime()) if node else None for node in nodes))

    def onPreview(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Preview failed."), waitCursor=True):
            settings = self.semiAutomaticSettings()
            self._previewSettings = None

            def remember(_labelMap) -> None:
                self._previewSettings = settings

            self.startJob(self.semiAutomaticJob(), onDone=remember)

    def onApply(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Segmentation failed."), waitCursor=True):
            p = self._parameterNode
            core = self.logic.core()
            if core.has_preview() and self._previewSettings == self.semiAutomaticSettings():
                p.outputSegmentation = core.output_segmentation(p.inputVolume, p.outputSegmentation)
                core.apply_preview(p.outputSegmentation, overwrite=p.overwrite)
                return
            # no preview, or one computed before the method, a parameter, the volume or a seed changed
            self._previewSettings = None

            def showOutput(_segmentIds) -> None:
                p.outputSegmentation = core.last_output

            self.startJob(self.semiAutomaticJob(apply=True), onDone=showOutput)

    # --------------------------------------------------------------------------------------- measurements
    def onMeasure(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Measurement failed."), waitCursor=True):
            p = self._parameterNode
            p.measurementTable = self.logic.core().measure(p.outputSegmentation, p.inputVolume, p.measurementTable)
            self.logic.showTable(p.measurementTable)
            cutOff = self.logic.core().cut_off_segments(p.measurementTable)
            if cutOff:  # the table's warning column says the same per segment
                slicer.util.showStatusMessage(_("{names}: touches the scan's edge: the volume is a lower bound").format(
                    names=", ".join(cutOff)), 10000)

    def onExportCsv(self) -> None:
        path = qt.QFileDialog.getSaveFileName(self.parent, _("Export measurements"), "measurements.csv",
                                              _("CSV files (*.csv)"))
        if path:
            with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
                self.logic.core().export_table_csv(self._parameterNode.measurementTable, path)


    # ---------------------------------------------------------------------------------------------- atlas
    def updatePairLists(self) -> None:
        p = self._parameterNode
        for listWidget, volumes, segmentations in (
                (self.ui.atlasListWidget, p.atlasVolumes, p.atlasSegmentations),
                (self.ui.trainingListWidget, p.trainVolumes, p.trainSegmentations)):
            listWidget.clear()
            for volume, segmentation in zip(volumes, segmentations):
                names = [node.GetName() if node is not None else _("(deleted)") for node in (volume, segmentation)]
                listWidget.addItem("  +  ".join(names))
        if self.ui.atlasFolderPathLineEdit.currentPath != p.atlasFolder:
            self.ui.atlasFolderPathLineEdit.currentPath = p.atlasFolder

    def onAddAtlas(self) -> None:
        self._addPair(self.ui.atlasVolumeSelector, self.ui.atlasSegmentationSelector, "atlasVolumes",
                      "atlasSegmentations")

    def onRemoveAtlas(self) -> None:
        self._removePair(self.ui.atlasListWidget, "atlasVolumes", "atlasSegmentations")

    def onAddTrainingPair(self) -> None:
        self._addPair(self.ui.trainVolumeSelector, self.ui.trainSegmentationSelector, "trainVolumes",
                      "trainSegmentations")

    def onRemoveTrainingPair(self) -> None:
        self._removePair(self.ui.trainingListWidget, "trainVolumes", "trainSegmentations")

    def _addPair(self, volumeSelector, segmentationSelector, volumesName: str, segmentationsName: str) -> None:
        volume, segmentation = volumeSelector.currentNode(), segmentationSelector.currentNode()
        if volume is None or segmentation is None:
            slicer.util.errorDisplay(_("Select both a volume and its segmentation first."))
            return
        p = self._parameterNode
        setattr(p, volumesName, list(getattr(p, volumesName)) + [volume])
        setattr(p, segmentationsName, list(getattr(p, segmentationsName)) + [segmentation])
        self.updatePairLists()
        self.updateButtons()

    def _removePair(self, listWidget, volumesName: str, segmentationsName: str) -> None:
        row = listWidget.currentRow
        p = self._parameterNode
        volumes, segmentations = list(getattr(p, volumesName)), list(getattr(p, segmentationsName))
        if 0 <= row < len(volumes):
            del volumes[row], segmentations[row]
            setattr(p, volumesName, volumes)
            setattr(p, segmentationsName, segmentations)
        self.updatePairLists()
        self.updateButtons()

    def onAtlasFolderChanged(self, path: str) -> None:
        if self._parameterNode:
            self._parameterNode.atlasFolder = path

    def onApplyAtlas(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Atlas segmentation failed."), waitCursor=True):
            core = self.logic.core()
            p.outputSegmentation = core.output_segmentation(p.inputVolume, p.outputSegmentation)
            job = core.atlas_job(
                p.inputVolume, list(zip(p.atlasVolumes, p.atlasSegmentations)), p.outputSegmentation,
                folder=p.atlasFolder or None, transform=p.atlasTransform, preset=p.atlasPreset, fusion=p.atlasFusion,
                mask_margin_mm=p.atlasMaskMargin or "auto", overwrite=p.overwrite)
            self.startJob(job)

    # ----------------------------------------------------------------------------------------------- deep
    def modelsFolder(self) -> str:
        return self.ui.modelsFolderPathLineEdit.currentPath

    def onModelsFolderChanged(self, path: str) -> None:
        qt.QSettings().setValue(MODELS_FOLDER_SETTING, path)
        self.updateModelList()

    def updateModelList(self, *args) -> None:
        """Fill the model list (installed + trained here), keeping the chosen model when it is still there."""
        from SegToolkitSlicerLib.logic import find_models, store_models

        folders = [self.modelsFolder()] if self.modelsFolder() and os.path.isdir(self.modelsFolder()) else []
        models = find_models([*folders, *self.logic.trainedModels()])
        try:
            models += store_models()
        except Exception as error:  # a damaged store must not hide the other models
            logging.warning(f"model store: {error}")
        self._modelInfos = {str(model.folder): model for model in models}
        chosen = self._parameterNode.deepModel if self._parameterNode else ""
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for model in models:
            title = model.name + (_(" (download)") if model.downloadable else _(" (store)") if model.store_name
                                  else "")
            combo.addItem(title, str(model.folder))
            combo.setItemData(combo.count - 1, f"{len(model.labels)} classes: " + ", ".join(model.labels),
                              qt.Qt.ToolTipRole)
        index = combo.findData(chosen)
        combo.setCurrentIndex(index if index >= 0 else 0)
        combo.blockSignals(wasBlocked)
        self.onModelChanged()

    def onModelChanged(self, *args) -> None:
        if self._parameterNode and self.ui.modelComboBox.count:
            self._parameterNode.deepModel = self.ui.modelComboBox.currentData
        self.updateButtons()

    def chosenModelInfo(self):
        """The listed model chosen in the combo box (None when the list is empty)."""
        if not self.ui.modelComboBox.count:
            return None
        return self._modelInfos.get(self.ui.modelComboBox.currentData)

    def onApplyDeep(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Deep learning segmentation failed."), waitCursor=True):
            if not self.logic.ensureDeepDependencies():
                return
            core = self.logic.core()
            p.outputSegmentation = core.output_segmentation(p.inputVolume, p.outputSegmentation)
            classes = [name.strip() for name in p.deepClasses.split(",") if name.strip()] or None
            job = core.predict_job(p.inputVolume, p.deepModel, p.outputSegmentation, device=p.deepDevice,
                                   tta=p.deepAccurate, largest_component=p.deepLargestComponent,
                                   overwrite=p.overwrite, classes=classes)
            self.startJob(job)

    def onDownloadModel(self) -> None:
        chosen = self.chosenModelInfo()
        if chosen is None or not chosen.downloadable:
            return
        from SegToolkitLib.methods.deep.catalog import CATALOG

        entry = CATALOG[chosen.store_name]
        question = _("Download {name} ({size} MB)?\n\nLicence: {licence}").format(
            name=chosen.store_name, size=sum(part["size_mb"] for part in entry["parts"]), licence=entry["licence"])
        if not slicer.util.confirmOkCancelDisplay(question):
            return
        with slicer.util.tryWithErrorDisplay(_("Download failed to start."), waitCursor=True):
            if not self.logic.ensureDeepDependencies():
                return
            self.startJob(self.logic.core().download_model_job(chosen.store_name), onDone=self.onModelStored)

    def onImportModel(self) -> None:
        path = self.ui.importModelPathLineEdit.currentPath
        with slicer.util.tryWithErrorDisplay(_("Import failed to start."), waitCursor=True):
            if not self.logic.ensureDeepDependencies():
                return
            self.startJob(self.logic.core().import_model_job(path), onDone=self.onModelStored)

    def onModelStored(self, folder) -> None:
        if self._parameterNode:
            self._parameterNode.deepModel = str(folder)
        self.updateModelList()
        slicer.util.infoDisplay(_("Model {name} is in the model store and selected.").format(
            name=Path(folder).name))

    def onTrain(self) -> None:
        p = self._parameterNode
        if not self.modelsFolder():
            slicer.util.errorDisplay(_("Choose a models folder first: the trained model is saved there."))
            return
        with slicer.util.tryWithErrorDisplay(_("Training failed to start."), waitCursor=True):
            if not self.logic.ensureDeepDependencies():
                return
            outputDir = os.path.join(self.modelsFolder(), p.trainModelName.strip())
            job = self.logic.core().train_job(list(zip(p.trainVolumes, p.trainSegmentations)), outputDir,
                                              p.trainMinutes, modality="CT" if p.trainIsCT else "",
                                              device=p.deepDevice)
            self.startJob(job, onDone=self.onTrainingDone)

    def onTrainingDone(self, model) -> None:
        if self._parameterNode:  # None when the scene was closed while the model trained
            self._parameterNode.deepModel = str(model.folder)
        self.updateModelList()
        slicer.util.infoDisplay(_("Model {name} trained; it is now in the model list.").format(name=model.name))

    # ------------------------------------------------------------------------------------------- jobs
    def startJob(self, job, onDone=None) -> None:
        """Run a job's computation on a worker thread; the timer polls it and finishes it on this thread."""
        from SegToolkitSlicerLib.jobs import JobRunner

        if self.runner is not None and not self.runner.done:
            raise RuntimeError(_("Another computation is running; wait for it or cancel it."))
        self._onJobDone = onDone
        self.runner = JobRunner(job).start()
        self.showJobState(self.runner)
        self.updateButtons()
        self.jobTimer.start()

    def onJobTimer(self) -> None:
        runner = self.runner
        if runner is None:
            self.jobTimer.stop()
            return
        finished = runner.poll()  # runs the job's finish (MRML writes) here, on the main thread, once
        self.showJobState(runner)
        if not finished:
            return
        self.jobTimer.stop()
        self.updateButtons()
        if runner.error is not None:
            slicer.util.errorDisplay(_("{title} failed: {error}").format(title=runner.job.title, error=runner.error))
        elif not runner.cancelled and self._onJobDone is not None:
            self._onJobDone(runner.result)

    def onCancelJob(self) -> None:
        if self.runner is not None and not self.runner.done:
            self.runner.cancel()
            self.ui.jobStageLabel.text = _("cancelling...")

    def showJobState(self, runner) -> None:
        running = runner is not None and not runner.done
        self.ui.cancelJobButton.enabled = running
        self.ui.jobProgressBar.visible = running
        if runner is None:
            self.ui.jobStageLabel.text = ""
            return
        self.ui.jobProgressBar.value = int(round(100 * runner.fraction))
        self.ui.jobStageLabel.text = f"{runner.job.title}: {runner.message}"


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
        return os.path.join(os.path.dirname(slicer.modules.segtoolkit.path), "Resources", relativePath)

    def ensureDependencies(self) -> bool:
        from SegToolkitSlicerLib.dependencies import ensure_requirements

        return ensure_requirements(self.requirementsPath())

    def ensureDeepDependencies(self) -> bool:
        """torch through the PyTorch extension, then MONAI & co. through pip, each after the user agrees."""
        from SegToolkitSlicerLib.dependencies import ensure_deep

        return ensure_deep(self.requirementsPath())

    def trainedModels(self) -> list:
        """Model folders trained in this session (kept by the Qt-free logic)."""
        return list(self._core.trained_models) if self._core is not None else []

    @staticmethod
    def defaultModelsFolder() -> str:
        """Per-user folder for installed and trained models (the models-folder setting overrides it)."""
        return os.path.join(qt.QStandardPaths.writableLocation(qt.QStandardPaths.AppDataLocation), "SegToolkit",
                            "models")

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
        self.setUp()
        self.test_atlas_job_from_the_scene()

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

    def test_atlas_job_from_the_scene(self) -> None:
        self.delayDisplay("Atlas segmentation as a background job")
        from SegToolkitSlicerLib.jobs import JobRunner

        atlasVolume, ball = self._ballVolume()
        core = SegToolkitLogic().core()
        atlasSegmentation = core.output_segmentation(atlasVolume)
        core.write(core.threshold_labels(atlasVolume, 50, 150, name="Ball"), atlasVolume, atlasSegmentation)
        target, _targetBall = self._ballVolume()
        target.SetName("target")
        runner = JobRunner(core.atlas_job(target, [(atlasVolume, atlasSegmentation)], transform="rigid",
                                          preset="fast")).start()
        while not runner.poll():
            slicer.app.processEvents()
        self.assertIsNone(runner.error)
        segmentation = slicer.mrmlScene.GetFirstNodeByName("target segmentation")
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, runner.result[0], target).astype(bool)
        self.assertEqual(segmentation.GetSegmentation().GetSegment(runner.result[0]).GetName(), "Ball")
        self.assertGreater(2 * (mask & ball).sum() / (mask.sum() + ball.sum()), 0.9)
        self.delayDisplay("Test passed")
