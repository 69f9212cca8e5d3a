"""A Slicer application context without Qt: MRML scene and module logics from the ``slicer-core`` wheel.

Mirrors the application's start-up order: each logic gets the application logic, then the scene (which
registers node classes and, for Segmentations, the converter rules), then is registered by name so C++ code
that asks for ``GetModuleLogic("Colors")`` finds it.
"""

from __future__ import annotations

import contextlib
import types

import slicer


class SlicerCoreContext:
    """Scene plus the Colors, Data, SubjectHierarchy, Volumes, Segmentations and Markups logics."""

    def __init__(self) -> None:
        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.colors = self._register(slicer.vtkMRMLColorLogic(), "Colors")
        self.data = self._register(slicer.vtkSlicerDataModuleLogic(), "Data")
        self.subject_hierarchy = self._register(slicer.vtkSlicerSubjectHierarchyModuleLogic(), "SubjectHierarchy")
        self.volumes = self._register(slicer.vtkSlicerVolumesLogic(), "Volumes")
        self.segmentations = self._register(slicer.vtkSlicerSegmentationsModuleLogic(), "Segmentations")
        self.markups = self._register(slicer.vtkSlicerMarkupsLogic(), "Markups")
        _dedupe_converter_rules()

    def _register(self, logic, name: str):
        logic.SetMRMLApplicationLogic(self.app_logic)
        logic.SetMRMLScene(self.scene)
        self.app_logic.SetModuleLogic(name, logic)
        return logic

    @contextlib.contextmanager
    def slicer_globals(self):
        """Provide ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()`` for the duration of a block."""

        def module(logic):
            return types.SimpleNamespace(logic=lambda: logic)

        saved = {key: getattr(slicer, key) for key in ("mrmlScene", "modules") if hasattr(slicer, key)}
        slicer.mrmlScene = self.scene
        slicer.modules = types.SimpleNamespace(
            volumes=module(self.volumes), segmentations=module(self.segmentations), markups=module(self.markups),
            colors=module(self.colors), subjecthierarchy=module(self.subject_hierarchy))
        try:
            yield
        finally:
            for key in ("mrmlScene", "modules"):
                if key in saved:
                    setattr(slicer, key, saved[key])
                elif hasattr(slicer, key):
                    delattr(slicer, key)


def _dedupe_converter_rules() -> None:
    """Every SetMRMLScene on a segmentations logic registers the converter rules again; keep one of each."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    seen: set[str] = set()
    for rule in list(factory.GetConverterRules()):
        if rule.GetName() in seen:
            factory.UnregisterConverterRule(rule)
        else:
            seen.add(rule.GetName())
