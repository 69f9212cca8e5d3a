"""Qt-free core of the Snake and Region growing Segment Editor effects.

The effects work on the Segment Editor's source image (``scriptedEffect.sourceVolumeImageData()``, a
``vtkOrientedImageData`` already on the segmentation's grid) with seeds given as voxel indices (from
``xyToIjk`` clicks) or as existing segments, and hand back masks on that same grid for
``modifySelectedSegmentByLabelmap``. Everything stays in the segmentation's coordinate frame, so parent
transforms need no special care here.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from SegToolkitLib.errors import InputError

from . import mrml

Index = Sequence[int]


def source_image(oriented_image) -> sitk.Image:
    """The editor's source image as SimpleITK (segmentation frame, LPS)."""
    if oriented_image is None or oriented_image.GetPointData().GetScalars() is None:
        raise InputError("no source volume: select a source volume in the Segment Editor")
    return mrml.oriented_image_to_sitk(oriented_image)


def mask_to_oriented_image(mask: sitk.Image | np.ndarray, like) -> object:
    """A uint8 ``vtkOrientedImageData`` with the geometry and extent of ``like`` holding ``mask`` (0/1)."""
    array = sitk.GetArrayViewFromImage(mask) if isinstance(mask, sitk.Image) else np.asarray(mask)
    result = slicer.vtkOrientedImageData()
    result.SetExtent(like.GetExtent())
    result.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    dims = result.GetDimensions()
    if array.shape != (dims[2], dims[1], dims[0]):
        raise InputError(f"mask of shape {array.shape} does not fit the source image ({dims[::-1]})")
    numpy_support.vtk_to_numpy(result.GetPointData().GetScalars()).reshape(array.shape)[:] = array > 0
    matrix = vtk.vtkMatrix4x4()
    like.GetImageToWorldMatrix(matrix)
    result.SetImageToWorldMatrix(matrix)
    return result


def index_to_kji(ijk: Index, oriented_image) -> tuple[int, int, int]:
    """A voxel index of the oriented image (extent-based, from ``xyToIjk``) as a numpy [k, j, i] position."""
    extent = oriented_image.GetExtent()
    return int(ijk[2]) - extent[4], int(ijk[1]) - extent[2], int(ijk[0]) - extent[0]


def array_index(ijk: Index, oriented_image) -> tuple[int, int, int]:
    """A voxel index of the oriented image as an index (i, j, k) of :func:`source_image`'s array."""
    k, j, i = index_to_kji(ijk, oriented_image)
    return i, j, k


def segment_mask(segmentation_node, segment_id: str, like) -> np.ndarray:
    """A segment's voxels as a bool [k, j, i] array on the grid of ``like`` (the editor's source image)."""
    labelmap = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    resampled = slicer.vtkOrientedImageData()
    if labelmap.GetPointData().GetScalars() is None or not slicer.vtkOrientedImageDataResample \
            .ResampleOrientedImageToReferenceOrientedImage(labelmap, like, resampled, False, True):
        dims = like.GetDimensions()
        return np.zeros((dims[2], dims[1], dims[0]), bool)
    dims = resampled.GetDimensions()
    return numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars()).reshape(dims[::-1]) > 0


class SnakeEffectSession:
    """The Snake effect's state: bubbles (voxel indices), the contour's settings and the evolving contour.

    ``options`` are :class:`SegToolkitLib.methods.classic.SnakeSession` keywords (model, feature, shape, expansion,
    smoothness, edge_attraction, intensity_range, edge_strength); ``None`` values mean "automatic". Adding a bubble
    or changing a setting restarts the contour from the bubbles; :meth:`step` advances it.
    """

    def __init__(self, oriented_image, **options) -> None:
        self.oriented_image = oriented_image
        self.image = source_image(oriented_image)
        self.options = {name: value for name, value in options.items() if value is not None}
        self.bubbles: list[tuple[int, int, int]] = []
        self._session = None

    def add_bubble(self, ijk: Index) -> None:
        """Drop a bubble at a voxel index of the source image (as ``xyToIjk`` returns it)."""
        index = array_index(ijk, self.oriented_image)
        size = self.image.GetSize()
        if any(v < 0 or v >= s for v, s in zip(index, size)):
            raise InputError("the click is outside the source volume")
        self.bubbles.append(index)
        self._session = None

    def set_options(self, **options) -> None:
        """New settings (``None``: automatic); the contour restarts from the same bubbles."""
        self.options = {name: value for name, value in options.items() if value is not None}
        self._session = None

    @property
    def iteration(self) -> int:
        return self._session.iteration if self._session is not None else 0

    @property
    def converged(self) -> bool:
        return self._session is not None and self._session.converged

    def step(self, iterations: int = 5) -> sitk.Image:
        """Advance the contour; returns the current mask (uint8, source grid)."""
        return self._ensure_session().step(iterations)

    def mask(self) -> sitk.Image:
        return self._ensure_session().mask()

    def describe(self) -> dict:
        """What the contour uses: model, feature and why, intensity range or edge strength, forces."""
        return self._ensure_session().describe()

    def feature_image(self) -> sitk.Image:
        """The feature image the contour follows (edge map in [0, 1] or region probability in [-1, 1]), on the
        snake's working grid in the source image's frame: the preview the user adjusts the settings against."""
        return self._ensure_session().feature_image()

    def _ensure_session(self):
        from SegToolkitLib.methods.classic.snakes import SnakeSession

        if not self.bubbles:
            raise InputError("no bubbles: click inside the structure in a slice view first")
        if self._session is None:
            self._session = SnakeSession(self.image, seeds=self.bubbles, ijk=True, **self.options)
        return self._session


def grow_from_clicks(oriented_image, clicks: Sequence[Index], mode: str = "confidence",
                     multiplier: float = 2.5) -> sitk.Image:
    """Connected or confidence region growing from clicked voxels (uint8 mask on the source grid)."""
    from SegToolkitLib.methods.classic import region_growing as growing

    if not clicks:
        raise InputError("no seeds: click inside the structure in a slice view first")
    image = source_image(oriented_image)
    seeds = [array_index(ijk, oriented_image) for ijk in clicks]
    if mode == "connected":
        return growing.connected_threshold(image, seeds, ijk=True)
    if mode == "confidence":
        return growing.confidence_connected(image, seeds, multiplier=multiplier, ijk=True)
    raise InputError(f"growing from clicks: mode {mode!r} must be connected or confidence")


def grow_from_segments(oriented_image, segmentation_node, segment_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Competitive growing with each segment's voxels as its seeds; the new [k, j, i] mask of every segment."""
    from SegToolkitLib.methods.classic.region_growing import competitive_growing

    if len(segment_ids) < 2:
        raise InputError("competitive growing needs at least two segments with seeds (e.g. the structure and "
                         "its surroundings)")
    image = source_image(oriented_image)
    seed_map = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint16)
    for value, segment_id in enumerate(segment_ids, start=1):
        seed_map[segment_mask(segmentation_node, segment_id, oriented_image)] = value
    seeds = sitk.GetImageFromArray(seed_map)
    seeds.CopyInformation(image)
    labels = sitk.GetArrayFromImage(competitive_growing(image, seed_map=seeds))
    return {segment_id: labels == value for value, segment_id in enumerate(segment_ids, start=1)}


class EffectResultMixin:
    """Shared by the Snake and Region growing effects: clicks to voxels, a live preview node, undoable Apply.

    Needs ``self.scriptedEffect``, ``self.xyToIjk`` (from AbstractScriptedSegmentEditorEffect) and a class
    attribute ``previewName``; uses only MRML, so it imports no Qt.
    """

    previewName = "SegToolkit preview"
    previewNode = None

    def sourceImage(self):
        return self.scriptedEffect.sourceVolumeImageData()

    def dependenciesReady(self) -> bool:
        """SegToolkit's core Python packages (scikit-image...), installed on first use after the user agrees
        (in the application only: the installer shows dialogs)."""
        from .dependencies import ensure_requirements, requirements_path

        return ensure_requirements(requirements_path())

    def clickedIjk(self, callerInteractor, viewWidget):
        segmentationNode = self.scriptedEffect.parameterSetNode().GetSegmentationNode()
        xy = callerInteractor.GetEventPosition()
        return self.xyToIjk(xy, viewWidget, self.sourceImage(), segmentationNode.GetParentTransformNode())

    def showPreview(self, mask) -> None:
        """Show a mask (source grid) in a temporary segmentation node drawn over the slice views."""
        segmentationNode = self.scriptedEffect.parameterSetNode().GetSegmentationNode()
        scene = segmentationNode.GetScene()
        if self.previewNode is None or self.previewNode.GetScene() is None:
            self.previewNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", self.previewName)
            self.previewNode.CreateDefaultDisplayNodes()
            self.previewNode.SetHideFromEditors(True)
            self.previewNode.GetDisplayNode().SetOpacity2DFill(0.3)
            self.previewNode.GetSegmentation().AddEmptySegment("preview", "preview", [1.0, 0.9, 0.1])
        self.previewNode.SetAndObserveTransformNodeID(segmentationNode.GetTransformNodeID())
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            mask_to_oriented_image(mask, self.sourceImage()), self.previewNode, "preview",
            slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)

    def removePreview(self) -> None:
        if self.previewNode is not None and self.previewNode.GetScene() is not None:
            self.previewNode.GetScene().RemoveNode(self.previewNode)
        self.previewNode = None

    def applyMask(self, mask) -> None:
        """Add the mask to the selected segment, undoably (masking and overwrite settings apply)."""
        self.scriptedEffect.saveStateForUndo()
        modifier = self.scriptedEffect.defaultModifierLabelmap()
        modifier.DeepCopy(mask_to_oriented_image(mask, self.sourceImage()))
        self.scriptedEffect.modifySelectedSegmentByLabelmap(
            modifier, slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd)
