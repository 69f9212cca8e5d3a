"""MRML <-> SegToolkitLib adapter: volume nodes, segmentations, markups and tables as SimpleITK images, label maps,
LPS points and report rows.

Coordinates: Slicer nodes store RAS in their own (parent-transform) frame; SimpleITK images are LPS. Every image
handed to SegToolkitLib is in *world* LPS: the node's linear parent transforms are folded into the image
geometry, so markups read in world coordinates land on the right voxels whatever transforms the nodes sit
under. Results go back through the inverse of the target node's parent transform, so a volume and its
segmentation under the same transform round-trip voxel-exactly. Non-linear transforms must be hardened first.

This module imports only ``slicer``, ``vtk``, numpy and SimpleITK (never ``qt``), so it runs with the
``slicer-core`` wheel outside the application.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from SegToolkitLib.errors import InputError
from SegToolkitLib.io import LabelMap, LabelTable

from .terminology import terminology_for

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
BINARY_LABELMAP = "Binary labelmap"


# ---------------------------------------------------------------------------------------------------------------
# Matrices and transforms
# ---------------------------------------------------------------------------------------------------------------
def vtk_to_numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def numpy_to_vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def node_to_world(node) -> np.ndarray:
    """4x4 matrix from the node's coordinate frame to world RAS (identity when it has no parent transform).

    Raises :class:`InputError` for a non-linear parent transform, which cannot be folded into image geometry.
    """
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    matrix = vtk.vtkMatrix4x4()
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(parent, None, matrix):
        raise InputError(f"{node.GetName()}: its parent transform {parent.GetName()!r} is not linear; harden the "
                         "transform (Data module, right-click > Harden transform) and try again")
    return vtk_to_numpy_matrix(matrix)


def ijk_to_world_ras(volume_node) -> np.ndarray:
    """4x4 matrix from voxel index (i, j, k) to world RAS, parent transforms included."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return node_to_world(volume_node) @ vtk_to_numpy_matrix(matrix)


def ijk_to_lps_matrix(image: sitk.Image) -> np.ndarray:
    """4x4 matrix from voxel index to LPS millimetres of a 3D SimpleITK image."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def ijk_to_world_ras_of_image(image: sitk.Image) -> np.ndarray:
    matrix = ijk_to_lps_matrix(image)
    matrix[:3] = LPS_TO_RAS @ matrix[:3]
    return matrix


def _set_sitk_geometry(image: sitk.Image, ijk_to_ras: np.ndarray, name: str) -> None:
    axes = LPS_TO_RAS @ ijk_to_ras[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    direction = axes / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError(f"{name}: its voxel axes are sheared (a shearing or non-uniform scaling transform); harden "
                         "the transform with resampling (Resample Scalar/Vector/DWI Volume) and try again")
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.ravel().tolist())
    image.SetOrigin((LPS_TO_RAS @ ijk_to_ras[:3, 3]).tolist())


def _as_3d(image: sitk.Image, name: str) -> sitk.Image:
    if image.GetDimension() == 2:
        return sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise InputError(f"{name}: expected a 2D or 3D image, got {image.GetDimension()}D")
    return image


# ---------------------------------------------------------------------------------------------------------------
# Volumes
# ---------------------------------------------------------------------------------------------------------------
def volume_to_sitk(volume_node) -> sitk.Image:
    """A scalar volume node as a SimpleITK image in world LPS (voxels copied, parent transforms folded in)."""
    if volume_node is None or volume_node.GetImageData() is None:
        name = volume_node.GetName() if volume_node is not None else "input volume"
        raise InputError(f"{name}: no image data; select a loaded volume")
    array = slicer.util.arrayFromVolume(volume_node)
    if array.ndim != 3:
        raise InputError(f"{volume_node.GetName()}: has {array.shape[-1]} components per voxel; select a scalar "
                         "(grayscale) volume")
    image = sitk.GetImageFromArray(array.copy())
    _set_sitk_geometry(image, ijk_to_world_ras(volume_node), volume_node.GetName())
    return image


def update_volume_from_sitk(volume_node, image: sitk.Image) -> None:
    """Fill ``volume_node`` with ``image`` (world LPS), keeping the node under its current parent transform."""
    image = _as_3d(image, volume_node.GetName())
    node_ijk_to_ras = np.linalg.inv(node_to_world(volume_node)) @ ijk_to_world_ras_of_image(image)
    volume_node.SetIJKToRASMatrix(numpy_to_vtk_matrix(node_ijk_to_ras))
    slicer.util.updateVolumeFromArray(volume_node, sitk.GetArrayFromImage(image))


def add_volume_from_sitk(scene, image: sitk.Image, name: str, class_name: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node (no parent transform) holding ``image``."""
    node = scene.AddNewNodeByClass(class_name, name)
    update_volume_from_sitk(node, image)
    node.CreateDefaultDisplayNodes()
    return node


# ---------------------------------------------------------------------------------------------------------------
# Markups
# ---------------------------------------------------------------------------------------------------------------
def markups_to_lps(markups_node) -> list[tuple[float, float, float]]:
    """The control points of a markups node as world LPS points (parent transforms applied)."""
    if markups_node is None:
        return []
    points = slicer.util.arrayFromMarkupsControlPoints(markups_node, world=True)
    return [tuple(float(v) for v in LPS_TO_RAS @ np.asarray(p, float)) for p in np.reshape(points, (-1, 3))]


def lps_to_index(image: sitk.Image, points: Iterable[Sequence[float]], what: str = "seed") -> list[tuple[int, ...]]:
    """Nearest voxel index of each LPS point, with a clear error for points outside the image."""
    from SegToolkitLib.geometry import seeds_to_indices

    return seeds_to_indices(image, points, what=what)


# ---------------------------------------------------------------------------------------------------------------
# Segmentations
# ---------------------------------------------------------------------------------------------------------------
def oriented_image_from_mask(mask_kji: np.ndarray, ijk_to_ras: np.ndarray):
    """A ``vtkOrientedImageData`` (uint8) holding a [k, j, i] mask with the given voxel-to-RAS matrix."""
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*reversed(mask_kji.shape))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(mask_kji.shape)[:] = mask_kji
    image.SetImageToWorldMatrix(numpy_to_vtk_matrix(ijk_to_ras))
    return image


def oriented_image_to_sitk(oriented_image, frame_to_world: np.ndarray | None = None) -> sitk.Image:
    """A ``vtkOrientedImageData`` (e.g. the Segment Editor's source image) as a SimpleITK image in world LPS.

    ``frame_to_world`` maps the image's RAS frame to world (the segmentation's parent transform).
    """
    dims = oriented_image.GetDimensions()
    array = numpy_support.vtk_to_numpy(oriented_image.GetPointData().GetScalars())
    array = array.reshape(dims[2], dims[1], dims[0], -1)[..., 0].copy()
    # the image data's own origin/spacing are folded into the image-to-world matrix by vtkOrientedImageData
    matrix = vtk.vtkMatrix4x4()
    oriented_image.GetImageToWorldMatrix(matrix)
    extent = oriented_image.GetExtent()
    ijk_to_ras = vtk_to_numpy_matrix(matrix)
    ijk_to_ras[:3, 3] = (ijk_to_ras @ np.array([extent[0], extent[2], extent[4], 1.0]))[:3]
    if frame_to_world is not None:
        ijk_to_ras = frame_to_world @ ijk_to_ras
    image = sitk.GetImageFromArray(array)
    _set_sitk_geometry(image, ijk_to_ras, "source volume")
    return image


def new_segmentation(scene, reference_volume=None, name: str = "Segmentation"):
    """A segmentation node with display nodes, on the reference volume's grid and under its parent transform."""
    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation_node.CreateDefaultDisplayNodes()
    if reference_volume is not None:
        # transform first: the reference geometry is stored relative to the segmentation's own parent transform
        segmentation_node.SetAndObserveTransformNodeID(reference_volume.GetTransformNodeID())
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    return segmentation_node


def unique_segment_name(segmentation, name: str) -> str:
    """``name``, or ``name (2)``, ``name (3)``... when a segment already has that name."""
    taken = {segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())}
    if name not in taken:
        return name
    number = 2
    while f"{name} ({number})" in taken:
        number += 1
    return f"{name} ({number})"


def _has_reference_geometry(segmentation) -> bool:
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    return bool(segmentation.GetConversionParameter(name))


def label_map_to_segments(label_map: LabelMap, segmentation_node, overwrite: bool = False,
                          values: Sequence[int] | None = None, name_prefix: str = "") -> list[str]:
    """Write each label of ``label_map`` (world LPS) as a segment named and coloured from its label table.

    Labels present in the image are written (or only ``values``). A segment whose name already exists is left
    alone and the new one gets a numbered name, unless ``overwrite`` is set: then the existing segment's content
    is replaced. Returns the segment ids written, in label order.
    """
    image = _as_3d(label_map.image, "label map")
    array = sitk.GetArrayViewFromImage(image)
    present = [int(v) for v in np.unique(array) if v > 0]
    values = present if values is None else [int(v) for v in values]
    world_ijk_to_ras = ijk_to_world_ras_of_image(image)
    frame_ijk_to_ras = np.linalg.inv(node_to_world(segmentation_node)) @ world_ijk_to_ras
    segmentation = segmentation_node.GetSegmentation()
    if not _has_reference_geometry(segmentation):
        geometry = slicer.vtkOrientedImageData()
        geometry.SetDimensions(*image.GetSize())
        geometry.SetImageToWorldMatrix(numpy_to_vtk_matrix(frame_ijk_to_ras))
        segmentation.SetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
            slicer.vtkSegmentationConverter.SerializeImageGeometry(geometry))
    segment_ids = []
    for value in values:
        label = label_map.labels.get(value)
        name = name_prefix + label.name
        segment_id = segmentation.GetSegmentIdBySegmentName(name) if overwrite else ""
        if not segment_id:
            segment_id = segmentation.AddEmptySegment("", unique_segment_name(segmentation, name), list(label.color))
        segment = segmentation.GetSegment(segment_id)
        segment.SetColor(*label.color)
        term = terminology_for(label.name)
        if term:
            segment.SetTerminology(term)
        mask = oriented_image_from_mask((array == value).astype(np.uint8), frame_ijk_to_ras)
        if not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                mask, segmentation_node, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE):
            raise InputError(f"{segmentation_node.GetName()}: could not write segment {name!r}")
        segment_ids.append(segment_id)
    return segment_ids


def segment_ids(segmentation_node, ids: Sequence[str] | None = None) -> list[str]:
    """The given segment ids, or all segments of the node, checked to exist."""
    segmentation = segmentation_node.GetSegmentation()
    if ids is None:
        return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    for segment_id in ids:
        if segmentation.GetSegment(segment_id) is None:
            raise InputError(f"{segmentation_node.GetName()}: has no segment {segment_id!r}")
    return list(ids)


def segmentation_to_label_map(segmentation_node, reference_volume=None,
                              ids: Sequence[str] | None = None) -> LabelMap:
    """Segments as one label map in world LPS: value ``n`` is the ``n``-th segment (1-based) with its name and
    colour. The grid is the reference volume's (or the segmentation's own reference geometry); overlapping
    voxels go to the segment listed last."""
    ids = segment_ids(segmentation_node, ids)
    if not ids:
        raise InputError(f"{segmentation_node.GetName()}: has no segments; add or create a segment first")
    scene = segmentation_node.GetScene()
    labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__segtoolkit_export__")
    try:
        labels = None
        table = LabelTable()
        for value, segment_id in enumerate(ids, start=1):
            id_array = vtk.vtkStringArray()
            id_array.InsertNextValue(segment_id)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                    segmentation_node, id_array, labelmap_node, reference_volume,
                    slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
                raise InputError(f"{segmentation_node.GetName()}: could not export segment {segment_id!r}")
            mask = slicer.util.arrayFromVolume(labelmap_node) > 0
            labels = np.zeros(mask.shape, np.uint16) if labels is None else labels
            labels[mask] = value
            segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
            table.add(value, segment.GetName(), tuple(segment.GetColor()))
        frame = reference_volume if reference_volume is not None else segmentation_node
        matrix = vtk.vtkMatrix4x4()
        labelmap_node.GetIJKToRASMatrix(matrix)
        image = sitk.GetImageFromArray(labels.astype(np.uint8) if len(ids) < 256 else labels)
        _set_sitk_geometry(image, node_to_world(frame) @ vtk_to_numpy_matrix(matrix), segmentation_node.GetName())
        return LabelMap(image, table)
    finally:
        scene.RemoveNode(labelmap_node)


def segment_to_sitk_mask(segmentation_node, segment_id: str, reference_volume=None) -> sitk.Image:
    """One segment as a uint8 0/1 SimpleITK image in world LPS on the reference volume's grid."""
    label_map = segmentation_to_label_map(segmentation_node, reference_volume, [segment_id])
    return label_map.image


# ---------------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------------
def rows_to_table(rows: Sequence[dict], table_node, columns: Sequence[str] | None = None) -> None:
    """Fill a ``vtkMRMLTableNode`` from report rows (dicts): numbers become double columns, the rest strings."""
    columns = list(columns) if columns is not None else _column_names(rows)
    table = vtk.vtkTable()
    for column in columns:
        values = [row.get(column) for row in rows]
        numeric = all(_is_number(v) or v is None for v in values) and any(_is_number(v) for v in values)
        array = vtk.vtkDoubleArray() if numeric else vtk.vtkStringArray()
        array.SetName(column)
        for value in values:
            if numeric:
                array.InsertNextValue(float("nan") if value is None else float(value))
            else:
                array.InsertNextValue("" if value is None else str(value))
        table.AddColumn(array)
    with slicer.util.NodeModify(table_node):
        table_node.SetAndObserveTable(table)
        table_node.SetUseColumnTitleAsColumnHeader(True)
        table_node.SetLocked(True)


def table_to_rows(table_node) -> list[dict]:
    """A table node's rows as dicts (numbers as floats)."""
    table = table_node.GetTable()
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for c in range(table.GetNumberOfColumns()):
            column = table.GetColumn(c)
            value = table.GetValue(r, c)
            row[column.GetName()] = value.ToDouble() if isinstance(column, vtk.vtkDataArray) else value.ToString()
        rows.append(row)
    return rows


def write_table_csv(table_node, path: str) -> None:
    """Save a table node as CSV (or TSV by extension) through its storage node."""
    storage = slicer.vtkMRMLTableStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(table_node):
        raise InputError(f"{path}: cannot write the table; check the folder exists and is writable")


def _column_names(rows: Sequence[dict]) -> list[str]:
    names: list[str] = []
    for row in rows:
        names.extend(key for key in row if key not in names)
    return names


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
