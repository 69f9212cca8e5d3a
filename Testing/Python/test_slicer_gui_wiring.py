"""Static checks of the Slicer extension's GUI wiring, run without the Slicer application.

The widget and effect code under ``SegToolkit/`` only runs inside Slicer (PythonQt, ``qt``/``ctk`` modules), so these
tests read it instead of running it, with ``ast`` and ``xml.etree``:

* every Python file compiles, and what the modules import when Slicer loads them exists in a fresh Slicer;
* ``SegToolkit.ui`` is a well-formed Designer file: unique names, widget classes that are Qt classes or declared
  Slicer/CTK custom widgets, properties those classes have, valid connections, every MRML widget gets the scene;
* in the module and effect code every ``self.ui.<name>`` exists in the .ui, every signal passed to ``connect()``
  exists on the widget's class, every property set or read and every method called exists, and calls into the
  Qt-free logic, ``slicer.util`` and the module's own methods fit their signatures;
* the ``SlicerParameterName`` bindings match the ``parameterNodeWrapper`` fields (names, widget/type pairs the
  wrapper's GUI connectors accept, node types, value ranges);
* each module's ``CMakeLists.txt`` lists exactly the files of its folder and registers its self-test, the top-level
  one adds every module; every module has its ``ScriptedLoadableModuleTest`` and each effect the hooks Slicer calls.

The Qt/CTK/Slicer API table below was written from these sources (only what the extension uses, plus neighbours):

* Slicer ``main`` at 583e9b37d50e (v5.12.0-87, Aug 2026): ``Libs/MRML/Widgets/qMRMLNodeComboBox.h``,
  ``qMRMLWidget.h``, ``Base/QTGUI/qSlicerWidget.h``, ``Modules/Loadable/Markups/Widgets/qSlicerMarkupsPlaceWidget.h``,
  ``Modules/Loadable/Segmentations/EditorEffects/qSlicerSegmentEditor{Abstract,Scripted}Effect.h`` and ``.cxx``
  (the Python hooks the adaptor calls), ``Base/Python/slicer/parameterNodeWrapper/guiConnectors.py`` (which widget
  represents which type), ``Base/Python/slicer/ScriptedLoadableModule.py``, ``AbstractScriptedSegmentEditorEffect.py``.
* CTK ``master`` at 868d56c72d28 (Aug 2026): ``Libs/Widgets/ctkCollapsibleButton.h``, ``ctkPathLineEdit.h``,
  ``ctkSliderWidget.h``.
* Qt 5.15 ``qcombobox.h`` and ``qspinbox.h`` (signals deprecated in 5.14/5.15 and removed in Qt 6 are left out on
  purpose); the other Qt classes (QObject, QWidget, buttons, labels, line edit, list widget, progress bar, timer,
  layouts) from the Qt 5.15 class reference. Slicer's PythonQt exposes a CTK/Slicer class's properties, signals,
  slots and ``Q_INVOKABLE`` methods only, so only those are listed for them.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import unittest
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXTENSION_DIR = REPO / "SegToolkit"
PANEL_DIR = EXTENSION_DIR / "SegToolkit"
PANEL_SCRIPT = PANEL_DIR / "SegToolkit.py"
PANEL_UI = PANEL_DIR / "Resources" / "UI" / "SegToolkit.ui"
SLICER_LIB = "SegToolkitSlicerLib"
SLICER_LIB_DIR = PANEL_DIR / SLICER_LIB
CORE_LIB = "SegToolkitLib"

# =====================================================================================================================
# Qt / CTK / Slicer API table (sources in the module docstring)
# =====================================================================================================================


@dataclass(frozen=True)
class QtClass:
    """What Python may use on a class: properties (attributes), signals (normalised signatures), methods
    (slots, Q_INVOKABLE, and for Qt's own classes the public methods PythonQt wraps) and enum values."""

    base: str | None
    properties: frozenset[str]
    read_only: frozenset[str]
    signals: frozenset[str]
    methods: frozenset[str]
    enums: frozenset[str]


def _cls(base: str | None, properties: str = "", read_only: str = "", signals: str = "", methods: str = "",
         enums: str = "") -> QtClass:
    def words(text: str) -> frozenset[str]:
        return frozenset(text.split())

    return QtClass(base, words(properties) | words(read_only), words(read_only), words(signals), words(methods),
                   words(enums))


QT_API: dict[str, QtClass] = {
    # ---------------------------------------------------------------------------------------------- Qt 5.15
    "QObject": _cls(
        None, "objectName", signals="destroyed() destroyed(QObject*) objectNameChanged(QString)",
        methods="connect disconnect blockSignals signalsBlocked setProperty property findChild findChildren children "
                "parent setParent deleteLater className inherits isWidgetType installEventFilter removeEventFilter "
                "setObjectName dynamicPropertyNames"),
    "QWidget": _cls(
        "QObject",
        "windowModality enabled geometry pos size sizePolicy minimumSize maximumSize minimumWidth minimumHeight "
        "maximumWidth maximumHeight sizeIncrement baseSize palette font cursor mouseTracking focusPolicy "
        "contextMenuPolicy updatesEnabled visible acceptDrops windowTitle windowIcon windowOpacity windowModified "
        "toolTip toolTipDuration statusTip whatsThis accessibleName accessibleDescription layoutDirection "
        "autoFillBackground styleSheet locale inputMethodHints",
        read_only="modal frameGeometry normalGeometry x y frameSize width height rect childrenRect isActiveWindow "
                  "focus minimized maximized fullScreen sizeHint minimumSizeHint",
        signals="windowTitleChanged(QString) windowIconChanged(QIcon) customContextMenuRequested(QPoint)",
        methods="setEnabled setDisabled setVisible setHidden show hide showNormal showMaximized close raise_ lower "
                "update repaint setFocus setToolTip setStatusTip setStyleSheet setWindowTitle layout setLayout "
                "adjustSize resize move setFixedSize setFixedWidth setFixedHeight setMinimumWidth setMaximumWidth "
                "setMinimumHeight setMaximumHeight setSizePolicy isVisible isEnabled isHidden parentWidget window "
                "setFont setCursor unsetCursor grab"),
    "QFrame": _cls("QWidget", "frameShape frameShadow lineWidth midLineWidth frameRect", read_only="frameWidth",
                   methods="setFrameShape setFrameShadow setLineWidth setMidLineWidth"),
    "QLabel": _cls(
        "QFrame", "text textFormat pixmap scaledContents alignment wordWrap margin indent openExternalLinks "
                  "textInteractionFlags", read_only="hasSelectedText selectedText",
        signals="linkActivated(QString) linkHovered(QString)",
        methods="setText clear setNum setPixmap setBuddy buddy setWordWrap setAlignment setTextFormat "
                "setOpenExternalLinks setTextInteractionFlags setSelection"),
    "QAbstractButton": _cls(
        "QWidget", "text icon iconSize shortcut checkable checked autoRepeat autoExclusive autoRepeatDelay "
                   "autoRepeatInterval down",
        signals="pressed() released() clicked() clicked(bool) toggled(bool)",
        methods="setText setIcon setIconSize setCheckable setChecked click animateClick toggle isChecked isCheckable "
                "isDown setShortcut group"),
    "QPushButton": _cls("QAbstractButton", "autoDefault default flat",
                        methods="setMenu menu showMenu setDefault setAutoDefault setFlat"),
    "QCheckBox": _cls("QAbstractButton", "tristate", signals="stateChanged(int)",
                      methods="checkState setCheckState setTristate isTristate"),
    "QRadioButton": _cls("QAbstractButton"),
    "QToolButton": _cls("QAbstractButton", "popupMode toolButtonStyle arrowType autoRaise",
                        signals="triggered(QAction*)", methods="setDefaultAction setMenu showMenu"),
    "QLineEdit": _cls(
        "QWidget", "inputMask text maxLength frame echoMode cursorPosition alignment modified dragEnabled readOnly "
                   "placeholderText cursorMoveStyle clearButtonEnabled",
        read_only="displayText hasSelectedText selectedText undoAvailable redoAvailable acceptableInput",
        signals="textChanged(QString) textEdited(QString) cursorPositionChanged(int,int) returnPressed() "
                "editingFinished() selectionChanged() inputRejected()",
        methods="setText clear selectAll undo redo cut copy paste setPlaceholderText setReadOnly setValidator "
                "validator setCompleter setMaxLength insert setSelection"),
    "QComboBox": _cls(  # qcombobox.h, Qt 5.15
        "QWidget", "editable currentText currentIndex maxVisibleItems maxCount insertPolicy sizeAdjustPolicy "
                   "minimumContentsLength iconSize placeholderText duplicatesEnabled frame modelColumn",
        read_only="count currentData",
        signals="editTextChanged(QString) activated(int) textActivated(QString) highlighted(int) "
                "textHighlighted(QString) currentIndexChanged(int) currentTextChanged(QString)",
        methods="findText findData addItem addItems insertItem insertItems insertSeparator removeItem setItemText "
                "setItemIcon setItemData itemText itemData itemIcon clear clearEditText setEditText setCurrentIndex "
                "setCurrentText model setModel view setView lineEdit setEditable setMaxVisibleItems showPopup "
                "hidePopup"),
    "QAbstractSpinBox": _cls(
        "QWidget", "wrapping frame alignment readOnly buttonSymbols specialValueText accelerated correctionMode "
                   "keyboardTracking showGroupSeparator", read_only="text acceptableInput",
        signals="editingFinished()", methods="selectAll stepUp stepDown clear setReadOnly setAlignment"),
    "QSpinBox": _cls(  # qspinbox.h, Qt 5.15
        "QAbstractSpinBox", "suffix prefix minimum maximum singleStep stepType value displayIntegerBase",
        read_only="cleanText", signals="valueChanged(int) textChanged(QString)",
        methods="setValue setRange setMinimum setMaximum setSingleStep setSuffix setPrefix"),
    "QDoubleSpinBox": _cls(  # qspinbox.h, Qt 5.15
        "QAbstractSpinBox", "prefix suffix decimals minimum maximum singleStep stepType value",
        read_only="cleanText", signals="valueChanged(double) textChanged(QString)",
        methods="setValue setRange setMinimum setMaximum setSingleStep setDecimals setSuffix setPrefix"),
    "QGroupBox": _cls("QWidget", "title alignment flat checkable checked",
                      signals="clicked() clicked(bool) toggled(bool)",
                      methods="setTitle setChecked setCheckable setFlat setAlignment isChecked"),
    "QListWidget": _cls(  # with the QAbstractItemView properties
        "QFrame", "currentRow sortingEnabled autoScroll editTriggers tabKeyNavigation dragEnabled dragDropMode "
                  "alternatingRowColors selectionMode selectionBehavior iconSize textElideMode",
        read_only="count",
        signals="itemPressed(QListWidgetItem*) itemClicked(QListWidgetItem*) itemDoubleClicked(QListWidgetItem*) "
                "itemActivated(QListWidgetItem*) itemEntered(QListWidgetItem*) itemChanged(QListWidgetItem*) "
                "currentItemChanged(QListWidgetItem*,QListWidgetItem*) currentTextChanged(QString) "
                "currentRowChanged(int) itemSelectionChanged()",
        methods="item row insertItem insertItems addItem addItems takeItem currentItem setCurrentItem setCurrentRow "
                "findItems selectedItems clear scrollToItem sortItems editItem setItemWidget itemWidget"),
    "QProgressBar": _cls(
        "QWidget", "minimum maximum value alignment textVisible orientation invertedAppearance textDirection format",
        read_only="text", signals="valueChanged(int)",
        methods="reset setRange setMinimum setMaximum setValue setFormat setTextVisible resetFormat"),
    "QTimer": _cls("QObject", "singleShot interval timerType", read_only="remainingTime active",
                   signals="timeout()",
                   methods="start stop setInterval setSingleShot isActive isSingleShot singleShot timerId "
                           "setTimerType"),
    "QLayout": _cls("QObject", "spacing contentsMargins sizeConstraint",
                    methods="addWidget addItem removeWidget removeItem setContentsMargins setSpacing count itemAt "
                            "takeAt indexOf setAlignment parentWidget invalidate update activate"),
    "QBoxLayout": _cls("QLayout", methods="addLayout addStretch addSpacing addStrut insertWidget insertLayout "
                                          "insertStretch insertSpacing setStretch setStretchFactor setDirection"),
    "QHBoxLayout": _cls("QBoxLayout"),
    "QVBoxLayout": _cls("QBoxLayout"),
    "QFormLayout": _cls("QLayout", "fieldGrowthPolicy rowWrapPolicy labelAlignment formAlignment horizontalSpacing "
                                   "verticalSpacing",
                        methods="addRow insertRow removeRow setWidget labelForField rowCount"),
    "QGridLayout": _cls("QLayout", "horizontalSpacing verticalSpacing",
                        methods="addLayout setRowStretch setColumnStretch rowCount columnCount"),
    # ---------------------------------------------------------------------------------------------- CTK
    "ctkCollapsibleButton": _cls(
        "QAbstractButton", "collapsed collapsedHeight flat contentsFrameShape contentsFrameShadow contentsLineWidth "
                           "contentsMidLineWidth buttonTextAlignment indicatorAlignment",
        signals="contentsCollapsed(bool)"),
    "ctkPathLineEdit": _cls(
        "QWidget", "label filters currentPath options settingKey showBrowseButton showHistoryButton sizeAdjustPolicy "
                   "minimumContentsLength nameFilters",
        signals="validInputChanged(bool) currentPathChanged(QString)",
        methods="setCurrentPath browse retrieveHistory addCurrentPathToHistory",
        enums="Dirs Files Drives NoSymLinks AllEntries TypeMask Readable Writable Executable PermissionMask Modified "
              "Hidden System AccessMask AllDirs CaseSensitive NoDotAndDotDot NoDot NoDotDot NoFilter ShowDirsOnly "
              "DontResolveSymlinks DontConfirmOverwrite DontUseSheet DontUseNativeDialog ReadOnly "
              "HideNameFilterDetails AdjustToContents AdjustToContentsOnFirstShow AdjustToMinimumContentsLength"),
    "ctkSliderWidget": _cls(
        "QWidget", "decimals singleStep pageStep minimum maximum value prefix suffix tickInterval tickPosition "
                   "synchronizeSiblings spinBoxAlignment tracking spinBoxVisible popupSlider invertedAppearance "
                   "invertedControls",
        signals="valueChanged(double) valueIsChanging(double) decimalsChanged(int)",
        methods="reset setValue setSpinBoxVisible setDecimals"),
    # ---------------------------------------------------------------------------------------------- Slicer
    "qMRMLWidget": _cls("QWidget", signals="mrmlSceneChanged(vtkMRMLScene*)", methods="setMRMLScene mrmlScene"),
    "qSlicerWidget": _cls("QWidget", signals="mrmlSceneChanged(vtkMRMLScene*)", methods="setMRMLScene"),
    "qMRMLNodeComboBox": _cls(
        "QWidget", "currentNodeID currentNodeId nodeTypes showHidden showChildNodeTypes hideChildNodeTypes baseName "
                   "noneEnabled addEnabled removeEnabled editEnabled renameEnabled interactionNodeSingletonTag "
                   "selectNodeUponCreation noneDisplay sizeAdjustPolicy",
        signals="currentNodeChanged(vtkMRMLNode*) currentNodeIDChanged(QString) nodeActivated(vtkMRMLNode*) "
                "currentNodeChanged(bool) nodeAdded(vtkMRMLNode*) nodeAddedByUser(vtkMRMLNode*) "
                "nodeAboutToBeRemoved(vtkMRMLNode*) currentNodeRenamed(QString) nodeAboutToBeEdited(vtkMRMLNode*)",
        methods="setMRMLScene setCurrentNode setCurrentNodeID setCurrentNodeIndex removeCurrentNode editCurrentNode "
                "renameCurrentNode mrmlScene addAttribute removeAttribute setNodeTypeLabel nodeTypeLabel nodeCount "
                "nodeFromIndex currentNode currentNodeId sortFilterProxyModel addMenuAction"),
    "qSlicerMarkupsPlaceWidget": _cls(
        "qSlicerWidget", "buttonsVisible deleteAllControlPointsOptionVisible unsetLastControlPointOptionVisible "
                         "unsetAllControlPointsOptionVisible placeMultipleMarkups nodeColor defaultNodeColor "
                         "currentNodeActive placeModeEnabled placeModePersistency deleteAllMarkupsOptionVisible",
        signals="activeMarkupsPlaceModeChanged(bool) activeMarkupsFiducialPlaceModeChanged(bool)",
        methods="setMRMLScene setCurrentNode setCurrentNodeActive setInteractionNode setSelectionNode "
                "setDefaultNodeColor setNodeColor setPlaceModeEnabled setPlaceMultipleMarkups setButtonsVisible "
                "setDeleteAllControlPointsOptionVisible setUnsetLastControlPointOptionVisible "
                "setUnsetAllControlPointsOptionVisible setPlaceModePersistency modifyLastPoint deleteLastPoint "
                "deleteAllPoints unsetLastDefinedPoint unsetAllPoints currentNode currentMarkupsFiducialNode "
                "currentMarkupsNode",
        enums="ShowPlaceMultipleMarkupsOption HidePlaceMultipleMarkupsOption ForcePlaceSingleMarkup "
              "ForcePlaceMultipleMarkups"),
    "qSlicerSegmentEditorAbstractEffect": _cls(
        "QObject", "name title perSegment requireSegments showEffectCursorInSliceView showEffectCursorInThreeDView",
        methods="helpText activate deactivate active modifySelectedSegmentByLabelmap modifySegmentByLabelmap "
                "applyImageMask createCursor cleanup updateGUIFromMRML updateMRMLFromGUI parameterSetNode "
                "setParameterSetNode scene optionsFrame optionsLayout addActor2D removeActor2D addActor3D "
                "removeActor3D addOptionsWidget addLabeledOptionsWidget cursorOff cursorOn selectEffect parameter "
                "integerParameter doubleParameter nodeReference setParameter setParameterDefault setCommonParameter "
                "setCommonParameterDefault setNodeReference setCommonNodeReference parameterDefined "
                "commonParameterDefined confirmCurrentSegmentVisible modifierLabelmap defaultModifierLabelmap "
                "maskLabelmap selectedSegmentLabelmap referenceGeometryImage sourceVolumeImageData saveStateForUndo "
                "renderWindow renderer viewNode rasToXy xyzToRas xyToRas xyzToIjk xyToIjk forceRender scheduleRender "
                "sliceSpacing segmentationDisplayableInView",
        enums="ModificationModeSet ModificationModeAdd ModificationModeRemove ModificationModeRemoveAll NotConfirmed "
              "ConfirmedWithoutDialog ConfirmedWithDialog"),
    "qSlicerApplication": _cls(  # slicer.app: qSlicerApplication.h, qSlicerCoreApplication.h (QApplication methods)
        "QObject", signals="startupCompleted() renderPaused(bool) mrmlSceneChanged(vtkMRMLScene*) urlReceived(QString) "
                           "usageEventLogged(QString,QString)",
        methods="processEvents layoutManager applicationLogic moduleManager mrmlScene moduleLogic pythonManager "
                "ioManager userSettings settings"),
    "qSlicerSegmentEditorScriptedEffect": _cls("qSlicerSegmentEditorAbstractEffect",
                                               methods="pythonSource setPythonSource self"),
}

QT_LAYOUT_CLASSES = {"QHBoxLayout", "QVBoxLayout", "QFormLayout", "QGridLayout"}
# Python hooks qSlicerSegmentEditorScriptedEffect calls (name -> number of arguments after self)
EFFECT_HOOKS = {"icon": 0, "helpText": 0, "clone": 0, "activate": 0, "deactivate": 0, "setupOptionsFrame": 0,
                "createCursor": 1, "processInteractionEvents": 3, "processViewNodeEvents": 3, "setMRMLDefaults": 0,
                "referenceGeometryChanged": 0, "sourceVolumeNodeChanged": 0, "layoutChanged": 0,
                "interactionNodeModified": 1, "updateGUIFromMRML": 0, "updateMRMLFromGUI": 0, "cleanup": 0}
REQUIRED_EFFECT_HOOKS = ("icon", "helpText", "clone", "setupOptionsFrame", "setMRMLDefaults", "updateGUIFromMRML",
                         "updateMRMLFromGUI")
# Methods of the Slicer base classes the module classes derive from (ScriptedLoadableModule.py,
# AbstractScriptedSegmentEditorEffect.py, slicer.util.VTKObservationMixin)
BASE_METHODS = {
    "ScriptedLoadableModule": {"resourcePath", "getDefaultModuleDocumentationLink", "runTest"},
    "ScriptedLoadableModuleWidget": {"resourcePath", "cleanup", "setupDeveloperSection", "setup", "onReload",
                                     "onTest", "onReloadAndTest", "onEditSource", "enter", "exit"},
    "ScriptedLoadableModuleLogic": {"getParameterNode", "getAllParameterNodes", "createParameterNode"},
    "ScriptedLoadableModuleTest": {"delayDisplay", "takeScreenshot", "setUp", "tearDown", "runTest"}
    | {name for name in dir(unittest.TestCase) if not name.startswith("_")},
    "VTKObservationMixin": {"removeObservers", "addObserver", "removeObserver", "getObserver", "hasObserver",
                            "observer"},
    "AbstractScriptedSegmentEditorEffect": {"register", "cleanup", "rasToXy", "xyzToRas", "xyToRas", "xyzToIjk",
                                            "xyToIjk", "setWidgetMinMaxStepFromImageSpacing"},
}
# What parameterNodeWrapper adds to the wrapped class (wrapper.py _processClass; reserved as field names)
WRAPPER_API = {"connectGui", "disconnectGui", "connectParametersToGui", "parameterNode", "getValue", "setValue",
               "isCached", "dataType", "default", "allParameters", "StartModify", "EndModify", "AddObserver",
               "RemoveObserver", "Modified", "_is_parameter_node_wrapper"}
# parameterNodeWrapper GUI connectors (guiConnectors.py): widget class -> parameter types it represents.
# The connectors compare type(widget) exactly, so a subclass does not inherit a parent's connector.
FLOAT_WIDGETS = {"QDoubleSpinBox", "ctkSliderWidget", "qMRMLSliderWidget", "ctkDoubleSlider", "ctkDoubleSpinBox",
                 "qMRMLSpinBox"}
CONNECTOR_TYPES = {
    "QCheckBox": {"bool"}, "ctkCheckBox": {"bool"}, "QPushButton": {"bool"}, "ctkCheckablePushButton": {"bool"},
    "QSlider": {"int"}, "QSpinBox": {"int"},
    **{widget: {"int", "float"} for widget in FLOAT_WIDGETS},
    "QComboBox": {"int", "float", "str", "bool", "enum"}, "ctkComboBox": {"int", "float", "str", "bool", "enum"},
    "QLineEdit": {"str"}, "QLabel": {"str"}, "QTextEdit": {"str"},
    "ctkPathLineEdit": {"Path"}, "ctkDirectoryButton": {"Path"},
    "qMRMLNodeComboBox": {"node"},
}
UNBOUNDED_NOT_ALLOWED = {"ctkSliderWidget", "qMRMLSliderWidget"}  # the connector raises for an unbounded float
# Names the Slicer application's Python modules export (Base/Python/slicer/*.py, parameterNodeWrapper/__all__);
# slicer.util is read from the slicer-core wheel's copy, the MRML classes from the wheel itself
SLICER_PYTHON_EXPORTS = {
    "slicer.ScriptedLoadableModule": {"ScriptedLoadableModule", "ScriptedLoadableModuleWidget",
                                      "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest"},
    "slicer.i18n": {"tr", "translate", "getContext"},
    "slicer.parameterNodeWrapper": {
        "Default", "Decimals", "GuiConnector", "SingleStep", "SlicerPackParameterNamePropertyName",
        "createGuiConnector", "parameterNodeGuiConnector", "GuiCreator", "Label", "createGui",
        "parameterNodeGuiCreator", "isParameterPack", "nestedParameterNames", "parameterPack", "FloatRange", "Choice",
        "Exclude", "IsInstance", "Maximum", "Minimum", "NotNone", "RangeBounds", "Validator", "WithinRange",
        "SlicerParameterNamePropertyName", "findChildWidgetForParameter", "isParameterNodeWrapper",
        "parameterNodeWrapper", "findFirstAnnotation", "getNodeTypes", "isNodeOrUnionOfNodes", "splitAnnotations",
        "unannotatedType"},
    "SegmentEditorEffects": {f"AbstractScriptedSegmentEditor{kind}Effect" for kind in ("", "Label", "Paint",
                                                                                         "AutoComplete")},
}
# Modules a fresh Slicer has when it loads the extension's modules (before any pip install)
SLICER_BUNDLED = {"numpy", "SimpleITK", "vtk", "vtkmodules", "slicer", "qt", "ctk", "sitkUtils",
                  "SegmentEditorEffects", "qSlicerSegmentationsEditorEffectsPythonQt"}


def lineage(class_name: str) -> list[QtClass]:
    chain = []
    while class_name is not None:
        api = QT_API[class_name]
        chain.append(api)
        class_name = api.base
    return chain


def api_set(class_name: str, kind: str) -> set[str]:
    return set().union(*(getattr(api, kind) for api in lineage(class_name)))


def signal_names(class_name: str) -> set[str]:
    return {signature.split("(")[0] for signature in api_set(class_name, "signals")}


def normalise_signature(signature: str) -> str:
    """Qt's normalised form: no spaces, no ``const``, no references (``currentPathChanged(const QString &)``
    -> ``currentPathChanged(QString)``)."""
    signature = re.sub(r"\bconst\s+", "", signature)
    return re.sub(r"\s+|&", "", signature)


# =====================================================================================================================
# Files
# =====================================================================================================================


def module_dirs() -> list[Path]:
    """Module folders: a folder of SegToolkit/ holding <folder>.py."""
    return sorted(path for path in EXTENSION_DIR.iterdir() if (path / f"{path.name}.py").is_file())


def effect_dirs() -> list[Path]:
    return [path for path in module_dirs() if (path / f"{path.name}Lib" / "SegmentEditorEffect.py").is_file()]


def extension_python_files() -> list[Path]:
    return sorted(path for path in EXTENSION_DIR.rglob("*.py") if "__pycache__" not in path.parts)


def gui_files() -> list[Path]:
    """The files that only run inside the application: module scripts, effects, and the effects' shared mixin."""
    effects = [path / f"{path.name}Lib" / "SegmentEditorEffect.py" for path in effect_dirs()]
    return [path / f"{path.name}.py" for path in module_dirs()] + effects + [SLICER_LIB_DIR / "effects.py"]


@cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def relative(path: Path) -> str:
    return str(path.relative_to(REPO))


def top_level(tree: ast.Module, kind: type) -> dict[str, ast.AST]:
    return {node.name: node for node in tree.body if isinstance(node, kind)}


def base_names(node: ast.ClassDef) -> list[str]:
    return [base.id if isinstance(base, ast.Name) else base.attr for base in node.bases
            if isinstance(base, (ast.Name, ast.Attribute))]


def terminal_name(node: ast.AST) -> str | None:
    """``a.b.C`` -> ``C``, ``C`` -> ``C``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


# =====================================================================================================================
# The .ui file
# =====================================================================================================================


@dataclass
class UiWidget:
    name: str
    cls: str
    element: ET.Element

    def properties(self) -> list[ET.Element]:
        return self.element.findall("property")

    def dynamic(self, name: str) -> str | None:
        for prop in self.properties():
            if prop.get("name") == name and prop.get("stdset") == "0":
                return prop.findtext("string")
        return None

    def value(self, name: str) -> ET.Element | None:
        for prop in self.properties():
            if prop.get("name") == name and prop.get("stdset") != "0":
                return prop[0]
        return None


@cache
def ui_root() -> ET.Element:
    return ET.parse(PANEL_UI).getroot()


def ui_widgets() -> dict[str, UiWidget]:
    return {element.get("name"): UiWidget(element.get("name"), element.get("class"), element)
            for element in ui_root().iter("widget")}


def ui_top_widget() -> UiWidget:
    element = ui_root().find("widget")
    return UiWidget(element.get("name"), element.get("class"), element)


def ui_custom_widgets() -> dict[str, ET.Element]:
    return {element.findtext("class"): element for element in ui_root().iter("customwidget")}


def ui_bindings() -> list[tuple[str, UiWidget]]:
    """(parameter name, widget) for every widget with a SlicerParameterName dynamic property."""
    return [(widget.dynamic("SlicerParameterName"), widget) for widget in ui_widgets().values()
            if widget.dynamic("SlicerParameterName")]


def number(element: ET.Element | None) -> float | None:
    return float(element.text) if element is not None and element.tag in ("double", "number") else None


# =====================================================================================================================
# The parameter node wrapper
# =====================================================================================================================


@dataclass
class Field:
    name: str
    type: str  # bool, int, float, str, Path, node (vtkMRML...), list, ...
    node_class: str | None = None
    choices: list | None = None
    within: tuple[float, float] | None = None
    default: object = None


def module_constants(tree: ast.Module) -> dict[str, object]:
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return constants


def _literal(node: ast.AST, constants: dict[str, object]) -> object:
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    if isinstance(node, ast.Call) and terminal_name(node.func) in ("list", "tuple") and len(node.args) == 1:
        return list(_literal(node.args[0], constants))
    return ast.literal_eval(node)


def wrapper_class(tree: ast.Module) -> ast.ClassDef | None:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(terminal_name(d) == "parameterNodeWrapper"
                                                  for d in node.decorator_list):
            return node
    return None


def wrapper_fields(tree: ast.Module) -> dict[str, Field]:
    constants = module_constants(tree)
    fields = {}
    for node in wrapper_class(tree).body:
        if not isinstance(node, ast.AnnAssign):
            continue
        annotation, validators = node.annotation, []
        if isinstance(annotation, ast.Subscript) and terminal_name(annotation.value) == "Annotated":
            annotation, *validators = annotation.slice.elts
        base = terminal_name(annotation.value if isinstance(annotation, ast.Subscript) else annotation)
        item = Field(node.target.id, base)
        if base and base.startswith("vtkMRML"):
            item.type, item.node_class = "node", base
        elif base in ("Path", "PurePath", "PosixPath"):
            item.type = "Path"
        for validator in validators:
            kind = terminal_name(validator.func) if isinstance(validator, ast.Call) else None
            if kind == "Choice":
                item.choices = _literal(validator.args[0], constants)
            elif kind == "WithinRange":
                item.within = tuple(float(_literal(arg, constants)) for arg in validator.args)
        if node.value is not None:
            item.default = _literal(node.value, constants)
        fields[item.name] = item
    return fields


# =====================================================================================================================
# Python code analysis: which expression is which widget / object
# =====================================================================================================================

PARAMS = "@params"  # the parameter node wrapper instance


@dataclass
class PyClass:
    name: str
    node: ast.ClassDef
    path: Path

    def methods(self) -> dict[str, ast.FunctionDef]:
        return {n.name: n for n in self.node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


@dataclass
class Use:
    """``<expr>.attr`` where ``<expr>`` is known to be of ``types``."""

    path: Path
    line: int
    types: frozenset
    attr: str
    kind: str  # call, load, store, class
    call: ast.Call | None = None

    def where(self) -> str:
        return f"{relative(self.path)}:{self.line}"


@dataclass
class Scope:
    """Names a file can see: its classes and functions, and those imported from SegToolkitSlicerLib."""

    path: Path
    classes: dict[str, PyClass] = field(default_factory=dict)
    functions: dict[str, ast.FunctionDef] = field(default_factory=dict)
    modules: dict[str, Path] = field(default_factory=dict)  # alias -> SegToolkitSlicerLib module file


def slicer_lib_module(dotted_name: str) -> Path | None:
    parts = dotted_name.split(".")
    if parts[0] != SLICER_LIB:
        return None
    path = PANEL_DIR.joinpath(*parts).with_suffix(".py")
    return path if path.is_file() else None


def file_scope(path: Path) -> Scope:
    tree = parse(path)
    scope = Scope(path)
    scope.classes = {name: PyClass(name, node, path) for name, node in top_level(tree, ast.ClassDef).items()}
    scope.functions = dict(top_level(tree, ast.FunctionDef))
    package = SLICER_LIB if path.parent == SLICER_LIB_DIR else None
    for node in ast.walk(tree):  # module-level and in-function imports
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level and package:
                module = f"{package}.{module}" if module else package
            for alias in node.names:
                submodule = slicer_lib_module(f"{module}.{alias.name}")
                if submodule is not None:
                    scope.modules[alias.asname or alias.name] = submodule
                    continue
                source = slicer_lib_module(module)
                if source is not None:
                    imported = parse(source)
                    if alias.name in top_level(imported, ast.ClassDef):
                        scope.classes[alias.asname or alias.name] = PyClass(
                            alias.name, top_level(imported, ast.ClassDef)[alias.name], source)
                    elif alias.name in top_level(imported, ast.FunctionDef):
                        scope.functions[alias.asname or alias.name] = top_level(imported, ast.FunctionDef)[alias.name]
    return scope


# Return types the code relies on that have no annotation: SegToolkitLogic.core() is the Qt-free logic
UNANNOTATED_RETURNS = {("SegToolkitLogic", "core"): (SLICER_LIB_DIR / "logic.py", "SegToolkitSlicerLogic")}


class Resolver:
    """Infers, for the expressions of one class, which Qt class / Python class / parameter node they are."""

    def __init__(self, scope: Scope, cls: PyClass, self_types: dict[str, set], ui: dict[str, str] | None,
                 wrapper_name: str | None) -> None:
        self.scope, self.cls, self.ui, self.wrapper_name = scope, cls, ui or {}, wrapper_name
        self.self_types = {name: set(types) for name, types in self_types.items()}
        self.param_types: dict[str, dict[str, set]] = {}
        for _ in range(2):  # self.x = <expr> may depend on another self.y
            for node in ast.walk(cls.node):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if isinstance(target, ast.Attribute) and dotted(target.value) == "self":
                            self.self_types.setdefault(target.attr, set()).update(self.resolve(node.value, {}))
        self.param_types = self._bind_call_arguments()

    def py_class(self, name: str, path: Path | None = None) -> PyClass | None:
        if path is not None:
            node = top_level(parse(path), ast.ClassDef).get(name)
            return PyClass(name, node, path) if node else None
        return self.scope.classes.get(name)

    def _class_type(self, name: str | None, path: Path | None = None):
        if name == self.wrapper_name:
            return PARAMS
        if name in QT_API:
            return name
        py = self.py_class(name, path) if name else None
        return ("py", py.path, py.name) if py else None

    def resolve(self, expr: ast.AST, env: dict[str, set]) -> set:
        if isinstance(expr, ast.Name):
            return set(env.get(expr.id, ()))
        if isinstance(expr, ast.Attribute):
            if dotted(expr) == "slicer.app":
                return {"qSlicerApplication"}
            if dotted(expr.value) == "self.ui" and expr.attr in self.ui:
                return {self.ui[expr.attr]}
            if dotted(expr.value) == "self":
                return set(self.self_types.get(expr.attr, ()))
            return set()
        if isinstance(expr, ast.NamedExpr):
            return self.resolve(expr.value, env)
        if not isinstance(expr, ast.Call):
            return set()
        func = expr.func
        if dotted(func) == "slicer.util.loadUI":
            return {ui_top_widget().cls}
        name = terminal_name(func)
        module = self.scope.modules.get(dotted(func.value)) if isinstance(func, ast.Attribute) else None
        if isinstance(func, ast.Name) or module or name in QT_API:
            constructed = self._class_type(name, module) if module else self._class_type(name)
            if constructed:
                return {constructed}
            function = (top_level(parse(module), ast.FunctionDef).get(name) if module
                        else self.scope.functions.get(name))
            return {self._annotated(function, module or self.scope.path)} - {None} if function else set()
        found = set()
        for owner in self.resolve(func.value, env):
            if isinstance(owner, tuple):
                py = self.py_class(owner[2], owner[1])
                method = py.methods().get(name) if py else None
                if (owner[2], name) in UNANNOTATED_RETURNS:
                    path, class_name = UNANNOTATED_RETURNS[owner[2], name]
                    found.add(("py", path, class_name))
                elif method is not None:
                    found.add(self._annotated(method, owner[1]))
        return found - {None}

    def _annotated(self, function: ast.FunctionDef, path: Path):
        returns = function.returns
        if isinstance(returns, ast.Constant) and isinstance(returns.value, str):
            name = returns.value
        else:
            name = terminal_name(returns) if returns is not None else None
        if name is None:
            return None
        if path == self.scope.path:
            return self._class_type(name)
        return self._class_type(name, path)

    def _bind_call_arguments(self) -> dict[str, dict[str, set]]:
        """Parameters of this class's methods bound to widgets at ``self.method(self.ui.x, ...)`` call sites."""
        methods = self.cls.methods()
        bound: dict[str, dict[str, set]] = {}
        for call in ast.walk(self.cls.node):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and dotted(call.func.value) == "self" and call.func.attr in methods):
                continue
            params = [arg.arg for arg in methods[call.func.attr].args.args[1:]]
            pairs = list(zip(params, call.args)) + [(k.arg, k.value) for k in call.keywords if k.arg]
            for param, value in pairs:
                types = self.resolve(value, {})
                bound.setdefault(call.func.attr, {}).setdefault(param, set()).update(types)
        return bound

    def environment(self, function: ast.FunctionDef) -> dict[str, set]:
        env = {name: set(types) for name, types in self.param_types.get(function.name, {}).items()}
        if function.args.args and function.name == "setParameterNode":
            env[function.args.args[1].arg] = {PARAMS}
        for _ in range(2):
            for node in ast.walk(function):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        self._bind(target, node.value, env)
                elif isinstance(node, ast.NamedExpr):
                    self._bind(node.target, node.value, env)
                elif isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.iter, (ast.Tuple, ast.List)):
                    for item in node.iter.elts:
                        self._bind(node.target, item, env)
        return env

    def _bind(self, target: ast.AST, value: ast.AST, env: dict[str, set]) -> None:
        if isinstance(target, ast.Name):
            types = self.resolve(value, env)
            if types:
                env.setdefault(target.id, set()).update(types)
        elif isinstance(target, ast.Tuple) and isinstance(value, (ast.Tuple, ast.List)) \
                and len(target.elts) == len(value.elts):
            for sub_target, sub_value in zip(target.elts, value.elts):
                self._bind(sub_target, sub_value, env)

    def uses(self) -> list[Use]:
        found = []
        for function in self.cls.methods().values():
            env = self.environment(function)
            called = {id(node.func): node for node in ast.walk(function) if isinstance(node, ast.Call)}
            for node in ast.walk(function):
                if not isinstance(node, ast.Attribute):
                    continue
                types = frozenset(self.resolve(node.value, env))
                if types:
                    kind = "store" if isinstance(node.ctx, ast.Store) else "call" if id(node) in called else "load"
                    found.append(Use(self.scope.path, node.lineno, types, node.attr, kind, called.get(id(node))))
                elif terminal_name(node.value) in QT_API and isinstance(node.value, ast.Attribute) \
                        and id(node) not in called:
                    found.append(Use(self.scope.path, node.lineno, frozenset({node.value.attr}), node.attr, "class"))
        return found


def resolvers() -> list[Resolver]:
    """One resolver per class of the GUI files, seeded with what the Slicer base classes provide."""
    found = []
    panel_tree = parse(PANEL_SCRIPT)
    wrapper = wrapper_class(panel_tree)
    ui = {name: widget.cls for name, widget in ui_widgets().items()}
    for path in gui_files():
        scope = file_scope(path)
        for cls in top_level(parse(path), ast.ClassDef).values():
            py = PyClass(cls.name, cls, path)
            seeds: dict[str, set] = {}
            bases = base_names(cls)
            if "AbstractScriptedSegmentEditorEffect" in bases or "self.scriptedEffect" in ast.unparse(cls):
                seeds["scriptedEffect"] = {"qSlicerSegmentEditorScriptedEffect"}
            if path == PANEL_SCRIPT and "ScriptedLoadableModuleWidget" in bases:
                seeds["_parameterNode"] = {PARAMS}
            found.append(Resolver(scope, py, seeds, ui if path == PANEL_SCRIPT else None,
                                  wrapper.name if path == PANEL_SCRIPT and wrapper else None))
    return found


@cache
def all_uses() -> tuple[Use, ...]:
    return tuple(use for resolver in resolvers() for use in resolver.uses())


def signature_problem(function: ast.FunctionDef, call: ast.Call, bound: bool) -> str | None:
    """Why ``call`` cannot call ``function`` (None when it fits, or when * / ** arguments make it uncheckable);
    ``bound``: called on an instance or class, so ``self`` / ``cls`` is not passed (static methods excepted)."""
    if any(terminal_name(decorator) == "staticmethod" for decorator in function.decorator_list):
        bound = False
    if any(isinstance(arg, ast.Starred) for arg in call.args) or any(k.arg is None for k in call.keywords):
        return None
    args = function.args
    positional = [a.arg for a in args.posonlyargs + args.args]
    first_default = len(positional) - len(args.defaults)
    if bound:
        positional, first_default = positional[1:], first_default - 1
    if len(call.args) > len(positional) and args.vararg is None:
        return f"{len(call.args)} positional arguments for {len(positional)} parameters"
    given = set(positional[:len(call.args)])
    keyword_names = set(positional[len(call.args):]) | {a.arg for a in args.kwonlyargs}
    for keyword in call.keywords:
        if keyword.arg in given:
            return f"{keyword.arg!r} given twice"
        if keyword.arg not in keyword_names and args.kwarg is None:
            return f"unexpected keyword argument {keyword.arg!r}"
        given.add(keyword.arg)
    missing = [name for index, name in enumerate(positional) if index < first_default and name not in given]
    missing += [a.arg for a, default in zip(args.kwonlyargs, args.kw_defaults)
                if default is None and a.arg not in given]
    return f"missing argument(s) {', '.join(missing)}" if missing else None


# =====================================================================================================================
# Tests: Python files
# =====================================================================================================================


@pytest.mark.parametrize("path", extension_python_files(), ids=relative)
def test_python_file_compiles(path):
    compile(path.read_text(encoding="utf-8"), str(path), "exec")


def load_time_imports(path: Path) -> set[str]:
    """Top-level modules imported when ``path`` is imported (module-level statements, ``if``/``try`` included;
    imports inside functions are lazy and not counted), following SegToolkit's own packages."""
    seen, found, todo = set(), set(), [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        package = ".".join(current.relative_to(PANEL_DIR if SLICER_LIB_DIR in current.parents else REPO)
                           .with_suffix("").parts[:-1])
        statements = list(parse(current).body)
        while statements:
            node = statements.pop()
            if isinstance(node, (ast.If, ast.Try)):
                if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                    continue
                statements += node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
                statements += [statement for handler in getattr(node, "handlers", []) for statement in handler.body]
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                found.add(parts[0])
                if parts[0] not in (CORE_LIB, SLICER_LIB):
                    continue
                for count in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py, a/b/__init__.py...
                    for root in (REPO, PANEL_DIR):
                        candidate = root.joinpath(*parts[:count])
                        todo += [source for source in (candidate.with_suffix(".py"), candidate / "__init__.py")
                                 if source.is_file()]
    return found


@pytest.mark.parametrize("path", gui_files(), ids=relative)
def test_modules_load_in_a_fresh_slicer(path):
    """Slicer imports the module and effect scripts at start-up, before SegToolkit has asked to pip-install
    anything: what they import at load time must be the standard library, Slicer's bundled packages or SegToolkit's
    own (whose load-time imports are followed)."""
    allowed = set(sys.stdlib_module_names) | SLICER_BUNDLED | {CORE_LIB, SLICER_LIB, "__future__"}
    allowed |= {f"{folder.name}Lib" for folder in module_dirs()}
    unexpected = sorted(load_time_imports(path) - allowed)
    assert not unexpected, f"{relative(path)} imports {unexpected} when Slicer loads it: import them lazily"


# =====================================================================================================================
# Tests: the .ui file
# =====================================================================================================================


def test_ui_is_a_designer_file_for_the_module():
    root = ui_root()
    top = ui_top_widget()
    assert root.tag == "ui" and root.get("version") == "4.0"
    assert root.findtext("class") == top.name == PANEL_DIR.name
    assert top.cls == "qMRMLWidget", "the top widget must be a qMRMLWidget (setup() calls uiWidget.setMRMLScene)"


def test_ui_names_are_unique():
    names = [element.get("name") for tag in ("widget", "layout", "spacer") for element in ui_root().iter(tag)]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert all(names) and not duplicates, f"unnamed or duplicate object names in the .ui: {duplicates}"


def test_ui_classes_are_qt_or_declared_slicer_widgets():
    custom = ui_custom_widgets()
    problems = []
    for name, element in custom.items():
        header, extends = element.findtext("header"), element.findtext("extends")
        if not re.fullmatch(r"(qMRML|qSlicer|ctk)\w+", name or ""):
            problems.append(f"custom widget {name!r} is not a Slicer (qMRML*/qSlicer*) or CTK (ctk*) class")
        if header != f"{name}.h":
            problems.append(f"custom widget {name}: header {header!r}, expected {name}.h")
        if extends not in QT_API and extends not in custom:
            problems.append(f"custom widget {name} extends unknown class {extends!r}")
        if name not in QT_API:
            problems.append(f"custom widget {name} is not in the verified API table of this test")
    used = {widget.cls for widget in ui_widgets().values()}
    extended = {element.findtext("extends") for element in custom.values()}
    problems += [f"custom widget {name} declared but unused" for name in custom if name not in used | extended]
    for widget in ui_widgets().values():
        if widget.cls.startswith("Q"):
            if widget.cls not in QT_API or widget.cls in custom:
                problems.append(f"{widget.name}: Qt class {widget.cls} unknown to the table or declared as custom")
        elif widget.cls not in custom:
            problems.append(f"{widget.name}: class {widget.cls} is not declared in <customwidgets>")
        elif widget.element.find("widget") is not None or widget.element.find("layout") is not None:
            if custom[widget.cls].findtext("container") != "1":
                problems.append(f"{widget.name}: {widget.cls} holds children but is not declared a container")
    problems += [f"layout {layout.get('name')}: unknown class {layout.get('class')}"
                 for layout in ui_root().iter("layout") if layout.get("class") not in QT_LAYOUT_CLASSES]
    assert not problems, "\n".join(problems)


def test_ui_properties_exist_on_their_classes():
    problems = []
    for widget in ui_widgets().values():
        if widget.cls not in QT_API:
            continue  # reported by the class test
        properties, read_only = api_set(widget.cls, "properties"), api_set(widget.cls, "read_only")
        for prop in widget.properties():
            name = prop.get("name")
            if prop.get("stdset") == "0":
                if name not in ("SlicerParameterName", "SlicerPackParameterName"):
                    problems.append(f"{widget.name}: unexpected dynamic property {name!r}")
                continue
            if name not in properties or name in read_only:
                problems.append(f"{widget.name}: {widget.cls} has no writable property {name!r}")
                continue
            for value in prop.iter():
                if value.tag in ("set", "enum"):
                    for item in value.text.split("|"):
                        owner, _, enum_value = item.strip().rpartition("::")
                        if owner in QT_API and enum_value not in api_set(owner, "enums"):
                            problems.append(f"{widget.name}.{name}: {owner} has no enum value {enum_value}")
    for spacer in ui_root().iter("spacer"):
        problems += [f"spacer {spacer.get('name')}: unknown property {prop.get('name')}"
                     for prop in spacer.findall("property")
                     if prop.get("name") not in ("orientation", "sizeType", "sizeHint")]
    assert not problems, "\n".join(problems)


def test_ui_layout_cells_do_not_overlap():
    problems = []
    for layout in ui_root().iter("layout"):
        cells = [(int(item.get("row")), column) for item in layout.findall("item") if item.get("row") is not None
                 for column in range(int(item.get("column")), int(item.get("column")) + int(item.get("colspan", 1)))]
        overlapping = sorted({cell for cell in cells if cells.count(cell) > 1})
        if overlapping:
            problems.append(f"layout {layout.get('name')}: several items in cells {overlapping}")
    assert not problems, "\n".join(problems)


def test_ui_connections_are_valid():
    widgets = ui_widgets()
    problems = []
    for connection in ui_root().iter("connection"):
        sender, receiver = widgets.get(connection.findtext("sender")), widgets.get(connection.findtext("receiver"))
        signal, slot = (normalise_signature(connection.findtext(tag)) for tag in ("signal", "slot"))
        if sender is None or receiver is None:
            problems.append(f"connection between missing widgets: {ET.tostring(connection, 'unicode')}")
            continue
        if signal not in api_set(sender.cls, "signals"):
            problems.append(f"{sender.name} ({sender.cls}) has no signal {signal}")
        if slot.split("(")[0] not in api_set(receiver.cls, "methods"):
            problems.append(f"{receiver.name} ({receiver.cls}) has no slot {slot}")
    assert not problems, "\n".join(problems)


def test_every_mrml_widget_gets_the_scene():
    """A node selector without a scene stays empty: each widget with a setMRMLScene slot must receive the top
    widget's mrmlSceneChanged(vtkMRMLScene*) (Slicer's module template does it this way)."""
    top = ui_top_widget()
    connected = {connection.findtext("receiver") for connection in ui_root().iter("connection")
                 if connection.findtext("sender") == top.name
                 and normalise_signature(connection.findtext("signal")) == "mrmlSceneChanged(vtkMRMLScene*)"
                 and normalise_signature(connection.findtext("slot")) == "setMRMLScene(vtkMRMLScene*)"}
    needing = {widget.name for widget in ui_widgets().values()
               if widget.name != top.name and widget.cls in QT_API and "setMRMLScene" in api_set(widget.cls, "methods")}
    assert needing, "expected MRML widgets in the .ui"
    assert needing <= connected, f"MRML widgets without the scene: {sorted(needing - connected)}"


# =====================================================================================================================
# Tests: Python <-> .ui and Qt API
# =====================================================================================================================


def test_every_ui_name_used_in_the_module_exists():
    names = {element.get("name") for tag in ("widget", "layout") for element in ui_root().iter(tag)}
    missing = [f"{relative(PANEL_SCRIPT)}:{node.lineno}: ui.{node.attr}" for node in ast.walk(parse(PANEL_SCRIPT))
               if isinstance(node, ast.Attribute) and terminal_name(node.value) == "ui" and node.attr not in names]
    assert not missing, "widgets missing from SegToolkit.ui:\n" + "\n".join(missing)


def test_the_analysis_sees_the_gui_code():
    """Guards the checks below against silently checking nothing."""
    uses = all_uses()
    connects = [use for use in uses if use.attr == "connect" and any(t in QT_API for t in use.types)]
    assert len(connects) >= 20, "the analysis found too few connect() calls"
    assert any(use.types == {"qSlicerSegmentEditorScriptedEffect"} for use in uses)
    assert any(use.types == {PARAMS} for use in uses)
    assert any(isinstance(t, tuple) and t[2] == "SegToolkitSlicerLogic" for use in uses for t in use.types)


def qt_use_problem(use: Use, class_name: str) -> str | None:
    if use.kind == "class":
        ok = use.attr in api_set(class_name, "enums") | api_set(class_name, "methods")
        return None if ok else f"{class_name} has no enum value or static method {use.attr}"
    if use.kind == "call" and use.attr in ("connect", "disconnect") and use.call.args:
        signal = use.call.args[0]
        if isinstance(signal, ast.Constant) and isinstance(signal.value, str):
            normalised = normalise_signature(signal.value)
            if normalised not in api_set(class_name, "signals"):
                return f"{class_name} has no signal {normalised}"
        return None
    if use.kind == "call":
        return None if use.attr in api_set(class_name, "methods") else f"{class_name} has no method {use.attr}()"
    if use.kind == "store":
        writable = api_set(class_name, "properties") - api_set(class_name, "read_only")
        return None if use.attr in writable else f"{class_name} has no writable property {use.attr}"
    readable = api_set(class_name, "properties") | api_set(class_name, "methods") | signal_names(class_name)
    return None if use.attr in readable else f"{class_name} has no property, method or signal {use.attr}"


def test_signals_properties_and_methods_used_exist():
    """connect("signal(args)"), property reads/writes and method calls on widgets, timers and the scripted effect
    must exist on the class (for every class the expression can be)."""
    problems = []
    for use in all_uses():
        for class_name in use.types:
            if class_name in QT_API:
                problem = qt_use_problem(use, class_name)
                if problem:
                    problems.append(f"{use.where()}: .{use.attr}: {problem}")
    assert not problems, "\n".join(problems)


def test_calls_into_python_classes_fit_their_signatures():
    """Calls on the Qt-free logic (SegToolkitSlicerLogic, JobRunner...), the module's own logic, and functions of
    SegToolkitSlicerLib imported by the GUI code exist and accept the arguments given."""
    problems = []
    for use in all_uses():
        for owner in use.types:
            if not isinstance(owner, tuple) or use.kind != "call":
                continue
            cls = PyClass(owner[2], top_level(parse(owner[1]), ast.ClassDef)[owner[2]], owner[1])
            method = cls.methods().get(use.attr)
            inherited = set().union(*(BASE_METHODS.get(base, set()) for base in base_names(cls.node)))
            if method is None:
                if use.attr not in inherited:
                    problems.append(f"{use.where()}: {cls.name} has no method {use.attr}")
                continue
            problem = signature_problem(method, use.call, bound=True)
            if problem:
                problems.append(f"{use.where()}: {cls.name}.{use.attr}(): {problem}")
    for resolver in resolvers():
        problems += own_call_problems(resolver)
    assert not problems, "\n".join(problems)


def own_call_problems(resolver: Resolver) -> list[str]:
    """self.method(...) inside a class, and module functions / classes of SegToolkitSlicerLib called by name."""
    problems = []
    cls, scope = resolver.cls, resolver.scope
    methods = dict(cls.methods())
    # a mixin for Segment Editor effects relies on AbstractScriptedSegmentEditorEffect's methods
    inherited = BASE_METHODS["AbstractScriptedSegmentEditorEffect"] if "scriptedEffect" in resolver.self_types \
        else set()
    for base in base_names(cls.node):
        if base in scope.classes:
            methods = {**scope.classes[base].methods(), **methods}
        elif base in BASE_METHODS:
            inherited |= BASE_METHODS[base]
        else:
            for module in scope.modules.values():  # e.g. effects.EffectResultMixin
                node = top_level(parse(module), ast.ClassDef).get(base)
                if node is not None:
                    methods = {**PyClass(base, node, module).methods(), **methods}
    for call in ast.walk(cls.node):
        if not isinstance(call, ast.Call):
            continue
        where = f"{relative(scope.path)}:{call.lineno}"
        func = call.func
        if isinstance(func, ast.Attribute) and dotted(func.value) == "self":
            if func.attr in methods:
                problem = signature_problem(methods[func.attr], call, bound=True)
                if problem:
                    problems.append(f"{where}: self.{func.attr}(): {problem}")
            elif func.attr not in inherited and func.attr not in resolver.self_types and func.attr != "layout":
                problems.append(f"{where}: {cls.name} has no method {func.attr}")
        elif isinstance(func, ast.Attribute) and dotted(func.value) in scope.modules and func.attr not in QT_API:
            module = scope.modules[dotted(func.value)]
            tree = parse(module)
            target = top_level(tree, ast.FunctionDef).get(func.attr)
            klass = top_level(tree, ast.ClassDef).get(func.attr)
            if klass is not None:
                target = PyClass(func.attr, klass, module).methods().get("__init__")
            if target is None and klass is None:
                problems.append(f"{where}: {relative(module)} has no {func.attr}")
            elif target is not None:
                problem = signature_problem(target, call, bound=klass is not None)
                if problem:
                    problems.append(f"{where}: {func.attr}(): {problem}")
        elif isinstance(func, ast.Name) and func.id in scope.functions:
            problem = signature_problem(scope.functions[func.id], call, bound=False)
            if problem:
                problems.append(f"{where}: {func.id}(): {problem}")
        elif isinstance(func, ast.Name) and func.id in scope.classes:
            init = scope.classes[func.id].methods().get("__init__")
            problem = signature_problem(init, call, bound=True) if init else None
            if problem:
                problems.append(f"{where}: {func.id}(): {problem}")
    return problems


def slicer_util_source() -> Path | None:
    spec = importlib.util.find_spec("slicer")  # locates the slicer-core wheel without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "util.py"
    return path if path.is_file() else None


def test_slicer_util_calls_exist_and_fit():
    """slicer.util.X(...) in the GUI code against the slicer.util shipped with the slicer-core wheel (a copy of the
    application's Base/Python/slicer/util.py of the same Slicer version)."""
    source = slicer_util_source()
    if source is None:
        pytest.skip("slicer-core wheel not installed")
    functions = top_level(parse(source), ast.FunctionDef)
    classes = top_level(parse(source), ast.ClassDef)
    problems = []
    for path in gui_files() + sorted(SLICER_LIB_DIR.glob("*.py")):
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Attribute) and dotted(node.value) == "slicer.util":
                if node.attr not in functions and node.attr not in classes:
                    problems.append(f"{relative(path)}:{node.lineno}: slicer.util has no {node.attr}")
            if isinstance(node, ast.Call) and dotted(node.func).startswith("slicer.util.") \
                    and node.func.attr in functions:
                problem = signature_problem(functions[node.func.attr], node, bound=False)
                if problem:
                    problems.append(f"{relative(path)}:{node.lineno}: slicer.util.{node.func.attr}(): {problem}")
    assert not problems, "\n".join(problems)


def test_names_imported_from_slicer_exist():
    """``from slicer.X import name`` in the GUI code: a typo here breaks loading the module in the application."""
    slicer = pytest.importorskip("slicer")  # the slicer-core wheel: MRML classes and slicer.util
    util = slicer_util_source()
    exports = {**SLICER_PYTHON_EXPORTS, "slicer.util": set(top_level(parse(util), ast.FunctionDef))
               | set(top_level(parse(util), ast.ClassDef))}
    problems = []
    for path in gui_files():
        for node in ast.walk(parse(path)):
            if not isinstance(node, ast.ImportFrom) or node.level:
                continue
            for alias in node.names:
                if node.module == "slicer":
                    ok = alias.name in exports or f"slicer.{alias.name}" in exports or hasattr(slicer, alias.name)
                elif node.module in exports:
                    ok = alias.name in exports[node.module]
                else:
                    continue
                if not ok:
                    problems.append(f"{relative(path)}:{node.lineno}: {node.module} has no {alias.name}")
    assert not problems, "\n".join(problems)


# =====================================================================================================================
# Tests: parameter node bindings
# =====================================================================================================================


def test_bound_parameter_names_are_wrapper_fields():
    fields = wrapper_fields(parse(PANEL_SCRIPT))
    names = [name for name, _widget in ui_bindings()]
    unknown = sorted(set(names) - set(fields))
    duplicates = sorted({name for name in names if names.count(name) > 1})  # connectGui would keep only one
    assert not unknown, f"SlicerParameterName values that are not parameter node fields: {unknown}"
    assert not duplicates, f"parameters bound to several widgets: {duplicates}"


def test_wrapper_fields_do_not_use_reserved_names():
    reserved = sorted(set(wrapper_fields(parse(PANEL_SCRIPT))) & WRAPPER_API)
    assert not reserved, f"parameterNodeWrapper raises for reserved field names: {reserved}"


def test_every_wrapper_field_is_bound_or_used_by_the_code():
    fields = wrapper_fields(parse(PANEL_SCRIPT))
    bound = {name for name, _widget in ui_bindings()}
    used = {use.attr for use in all_uses() if PARAMS in use.types}
    strings = {node.value for node in ast.walk(parse(PANEL_SCRIPT))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)}  # getattr(p, "atlasVolumes")
    orphans = sorted(set(fields) - bound - used - strings)
    assert not orphans, f"parameter node fields neither bound in the .ui nor used in the module: {orphans}"


def test_parameter_node_attributes_used_exist():
    fields = wrapper_fields(parse(PANEL_SCRIPT))
    problems = [f"{use.where()}: parameter node has no {use.attr}" for use in all_uses()
                if PARAMS in use.types and use.attr not in fields and use.attr not in WRAPPER_API]
    assert not problems, "\n".join(problems)


def test_bound_widgets_can_represent_their_parameter():
    """The wrapper's GUI connectors (guiConnectors.py) accept only some widget/type pairs; connectGui raises for
    any other when the module is opened."""
    fields = wrapper_fields(parse(PANEL_SCRIPT))
    problems = []
    for name, widget in ui_bindings():
        item = fields.get(name)
        if item is None:
            continue
        accepted = CONNECTOR_TYPES.get(widget.cls, set())
        if item.type not in accepted:
            problems.append(f"{widget.name} ({widget.cls}) cannot represent {name}: {item.type}")
        elif widget.cls in ("QComboBox", "ctkComboBox") and item.type != "enum" and item.choices is None:
            problems.append(f"{widget.name}: a combo box bound to {name} needs a Choice(...) annotation")
        elif widget.cls in UNBOUNDED_NOT_ALLOWED and item.within is None:
            problems.append(f"{widget.name}: {widget.cls} bound to {name} needs a WithinRange(...) annotation")
        if item.choices is not None and item.default not in item.choices:
            problems.append(f"{name}: default {item.default!r} is not one of {item.choices}")
    assert not problems, "\n".join(problems)


# GUI choice lists that mirror SegToolkitLib constants (copied because the module must load before its packages are
# installed): (GUI file, constant) -> (SegToolkitLib file, constant)
MIRRORED_CHOICES = {
    (PANEL_SCRIPT, "ATLAS_TRANSFORMS"): ("methods/atlas/strategy.py", "ATLAS_TRANSFORMS"),
    (PANEL_SCRIPT, "ATLAS_PRESETS"): ("methods/atlas/registration.py", "PRESETS"),
    (PANEL_SCRIPT, "FUSION_METHODS"): ("methods/atlas/strategy.py", "ATLAS_FUSIONS"),
    (PANEL_SCRIPT, "GROWING_MODES"): ("methods/classic/region_growing.py", "METHODS"),
    (EXTENSION_DIR / "SegmentEditorRegionGrowing" / "SegmentEditorRegionGrowingLib" / "SegmentEditorEffect.py",
     "MODES"): ("methods/classic/region_growing.py", "METHODS"),
    (EXTENSION_DIR / "SegmentEditorSnake" / "SegmentEditorSnakeLib" / "SegmentEditorEffect.py", "MODELS"):
        ("methods/classic/snakes.py", "MODELS"),
    (EXTENSION_DIR / "SegmentEditorSnake" / "SegmentEditorSnakeLib" / "SegmentEditorEffect.py", "FEATURES"):
        ("methods/classic/snakes.py", "FEATURES"),
    (EXTENSION_DIR / "SegmentEditorSnake" / "SegmentEditorSnakeLib" / "SegmentEditorEffect.py", "SHAPES"):
        ("methods/classic/snakes.py", "SHAPES"),
}


def test_gui_choices_match_the_core_library():
    problems = []
    for (gui_path, gui_name), (core_path, core_name) in MIRRORED_CHOICES.items():
        gui = module_constants(parse(gui_path)).get(gui_name)
        core = module_constants(parse(REPO / CORE_LIB / core_path)).get(core_name)
        if gui is None or core is None or tuple(gui) != tuple(core):
            problems.append(f"{relative(gui_path)} {gui_name}={gui} but {CORE_LIB}/{core_path} {core_name}={core}")
    assert not problems, "\n".join(problems)


def test_bound_node_selectors_show_the_parameter_node_type():
    """The connector sets nodeTypes to the field's class; the .ui must agree (or it lies at design time)."""
    fields = wrapper_fields(parse(PANEL_SCRIPT))
    problems = []
    for name, widget in ui_bindings():
        item = fields.get(name)
        if widget.cls == "qMRMLNodeComboBox" and item is not None:
            value = widget.value("nodeTypes")
            types = [s.text for s in value.iter("string")] if value is not None else []
            if types != [item.node_class]:
                problems.append(f"{widget.name}: nodeTypes {types} but {name} is a {item.node_class}")
    assert not problems, "\n".join(problems)


def test_bound_numeric_ranges_agree_with_the_parameter_node():
    """connectGui overwrites a spin box's or slider's range with the field's WithinRange (or -inf..inf when there is
    none), so a range set in the .ui must be the field's, and the default must lie in it."""
    fields = wrapper_fields(parse(PANEL_SCRIPT))
    problems = []
    for name, widget in ui_bindings():
        item = fields.get(name)
        if item is None or item.type not in ("int", "float") or widget.cls not in FLOAT_WIDGETS | {"QSpinBox"}:
            continue
        ui_range = (number(widget.value("minimum")), number(widget.value("maximum")))
        if ui_range != (None, None) and ui_range != item.within:
            problems.append(f"{widget.name}: .ui range {ui_range} but {name} has WithinRange {item.within}")
        if item.within and not item.within[0] <= item.default <= item.within[1]:
            problems.append(f"{name}: default {item.default} outside {item.within}")
    assert not problems, "\n".join(problems)


# =====================================================================================================================
# Tests: CMake and self-tests
# =====================================================================================================================


def cmake_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(command, arguments) of a CMakeLists.txt, comments removed (enough for the flat files of this extension)."""
    text = re.sub(r'"[^"]*"', '""', path.read_text(encoding="utf-8"))  # strings may hold parentheses
    text = re.sub(r"#[^\n]*", "", text)
    return [(name.lower(), args.split()) for name, args in re.findall(r"(\w+)\s*\(([^()]*)\)", text)]


def cmake_set(commands: list[tuple[str, list[str]]], variable: str) -> list[str]:
    for name, args in commands:
        if name == "set" and args and args[0] == variable:
            return args[1:]
    return []


def module_files(module_dir: Path) -> set[str]:
    return {str(path.relative_to(module_dir)) for path in module_dir.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.name != "CMakeLists.txt"
            and "Testing" not in path.relative_to(module_dir).parts}


@pytest.mark.parametrize("module_dir", module_dirs(), ids=lambda path: path.name)
def test_module_cmake_lists_exactly_its_files(module_dir):
    commands = cmake_commands(module_dir / "CMakeLists.txt")
    assert cmake_set(commands, "MODULE_NAME") == [module_dir.name]

    def expand(items):
        return {item.replace("${MODULE_NAME}", module_dir.name) for item in items}

    scripts, resources = expand(cmake_set(commands, "MODULE_PYTHON_SCRIPTS")), \
        expand(cmake_set(commands, "MODULE_PYTHON_RESOURCES"))
    files = module_files(module_dir)
    assert scripts == {name for name in files if name.endswith(".py")}, "MODULE_PYTHON_SCRIPTS vs the .py files"
    assert resources == {name for name in files if not name.endswith(".py")}, "MODULE_PYTHON_RESOURCES vs files"
    build = [args for name, args in commands if name == "slicermacrobuildscriptedmodule"]
    assert build and build[0][:6] == ["NAME", "${MODULE_NAME}", "SCRIPTS", "${MODULE_PYTHON_SCRIPTS}", "RESOURCES",
                                      "${MODULE_PYTHON_RESOURCES}"]


@pytest.mark.parametrize("module_dir", module_dirs(), ids=lambda path: path.name)
def test_module_self_test_is_registered_with_ctest(module_dir):
    text = re.sub(r"#[^\n]*", "", (module_dir / "CMakeLists.txt").read_text(encoding="utf-8"))
    testing = re.search(r"if\s*\(\s*BUILD_TESTING\s*\)(.*?)endif\s*\(", text, re.S)
    assert testing, "no if(BUILD_TESTING) block"
    assert re.search(r"slicer_add_python_unittest\s*\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)", testing.group(1))


def test_top_level_cmake_adds_every_module():
    commands = cmake_commands(REPO / "CMakeLists.txt")
    names = [name for name, _args in commands]
    added = {args[0] for name, args in commands if name == "add_subdirectory"}
    expected = {str(path.relative_to(REPO)) for path in module_dirs()}
    assert added == expected
    assert ("project", ["SegToolkit"]) in commands
    assert names.index("find_package") < names.index("add_subdirectory")
    includes = [args[0] for name, args in commands if name == "include"]
    assert includes[-2:] == ["${Slicer_EXTENSION_GENERATE_CONFIG}", "${Slicer_EXTENSION_CPACK}"]
    unlisted = [path for path in (REPO / CORE_LIB).rglob("*") if path.is_file() and "__pycache__" not in path.parts
                and path.suffix not in (".py", ".json")]
    assert not unlisted, f"SegToolkitLib files the extension does not install (only *.py and *.json): {unlisted}"


@pytest.mark.parametrize("module_dir", module_dirs(), ids=lambda path: path.name)
def test_module_classes_and_self_test(module_dir):
    """ScriptedLoadableModule.runTest looks for <Module>Test; CTest runs its test_* methods through unittest and
    Reload and Test runs runTest(), so runTest must call every test_* method."""
    name = module_dir.name
    classes = top_level(parse(module_dir / f"{name}.py"), ast.ClassDef)
    assert "ScriptedLoadableModule" in base_names(classes[name])
    for suffix, base in (("Widget", "ScriptedLoadableModuleWidget"), ("Logic", "ScriptedLoadableModuleLogic")):
        if name + suffix in classes:
            assert base in base_names(classes[name + suffix])
    test = classes.get(f"{name}Test")
    assert test is not None and "ScriptedLoadableModuleTest" in base_names(test)
    methods = PyClass(test.name, test, module_dir).methods()
    tests = {method for method in methods if method.startswith("test_")}
    assert tests, f"{name}Test has no test_* method"
    if "runTest" in methods:
        called = {node.func.attr for node in ast.walk(methods["runTest"])
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
        assert tests <= called, f"runTest() does not run {sorted(tests - called)}"


@pytest.mark.parametrize("module_dir", effect_dirs(), ids=lambda path: path.name)
def test_effect_module_registers_a_complete_effect(module_dir):
    module = module_dir / f"{module_dir.name}.py"
    source = module.read_text(encoding="utf-8")
    module_class = PyClass(module_dir.name, top_level(parse(module), ast.ClassDef)[module_dir.name], module)
    init = module_class.methods()["__init__"]
    assert any(isinstance(node, ast.Call) and dotted(node.func) == "slicer.app.connect"
               and ast.literal_eval(node.args[0]) == "startupCompleted()"
               and dotted(node.args[1]) == "self.registerEditorEffect" for node in ast.walk(init)), \
        "the effect must be registered once the application has started (startupCompleted())"
    assert any(isinstance(node, ast.Assign) and dotted(node.targets[0]) == "self.parent.hidden"
               and node.value.value is True for node in ast.walk(init)), "an effect-registering module is hidden"
    register = ast.unparse(module_class.methods()["registerEditorEffect"])
    assert all(part in register for part in ("setPythonSource(", "'Lib'", "'SegmentEditorEffect.py'", "register()"))
    effect_path = module_dir / f"{module_dir.name}Lib" / "SegmentEditorEffect.py"
    assert (effect_path.parent / "SegmentEditorEffect.png").is_file()
    # the adaptor instantiates the class named after the file (qSlicerSegmentEditorScriptedEffect::setPythonSource)
    effect = top_level(parse(effect_path), ast.ClassDef).get("SegmentEditorEffect")
    assert effect is not None and "AbstractScriptedSegmentEditorEffect" in base_names(effect)
    methods = PyClass(effect.name, effect, effect_path).methods()
    mixins = [PyClass(base, node, SLICER_LIB_DIR / "effects.py").methods()
              for base in base_names(effect)
              if (node := top_level(parse(SLICER_LIB_DIR / "effects.py"), ast.ClassDef).get(base)) is not None]
    missing = [hook for hook in REQUIRED_EFFECT_HOOKS if hook not in methods and not any(hook in m for m in mixins)]
    assert not missing, f"effect lacks {missing}"
    for hook, count in EFFECT_HOOKS.items():
        if hook in methods:
            args = methods[hook].args
            assert len(args.args) - 1 == count or (args.vararg and len(args.args) - 1 <= count), \
                f"{hook} takes {len(args.args) - 1} arguments, Slicer passes {count}"
    clone = ast.unparse(methods["clone"])
    assert "setPythonSource(__file__" in clone, "clone() must create the same effect from this file"
    names = [node.value.value for node in ast.walk(methods["__init__"])
             if isinstance(node, ast.Assign) and dotted(node.targets[0]) == "scriptedEffect.name"
             and isinstance(node.value, ast.Constant)]
    assert len(names) == 1, "__init__ must set scriptedEffect.name"
    assert f'setActiveEffectByName("{names[0]}")' in source, "the self-test must activate the effect by its name"
