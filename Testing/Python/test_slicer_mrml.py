"""The MRML adapter of the SegToolkit Slicer module on real MRML nodes (slicer-core wheel): volume <-> SimpleITK,
label map <-> segmentation, markups -> seeds, oblique and transformed volumes, tables."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer")

import SimpleITK as sitk  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "SegToolkit" / "SegToolkit"))

from SegToolkitSlicerLib import mrml as adapter  # noqa: E402
from SegToolkitSlicerLib.terminology import terminology_for  # noqa: E402

from SegToolkitLib.errors import InputError  # noqa: E402
from SegToolkitLib.io import LabelMap, LabelTable  # noqa: E402

SHAPE_KJI = (12, 14, 16)


def oblique_directions(angle_deg: float = 30.0) -> np.ndarray:
    """IJK axes in RAS: rotated about S and tilted about R (a genuinely oblique acquisition)."""
    a, b = np.radians(angle_deg), np.radians(angle_deg / 2)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rx @ rz @ np.diag([-1.0, -1.0, 1.0])


def add_volume(scene, voxels, spacing=(0.7, 0.8, 2.0), origin=(12.0, -30.0, 45.0), directions=None,
               name="ct", class_name="vtkMRMLScalarVolumeNode"):
    node = scene.AddNewNodeByClass(class_name, name)
    matrix = np.eye(4)
    matrix[:3, :3] = (np.diag([-1.0, -1.0, 1.0]) if directions is None else directions) @ np.diag(spacing)
    matrix[:3, 3] = origin
    node.SetIJKToRASMatrix(adapter.numpy_to_vtk_matrix(matrix))
    slicer.util.updateVolumeFromArray(node, voxels)
    node.CreateDefaultDisplayNodes()
    return node


def random_voxels(seed=0):
    return np.random.default_rng(seed).integers(-1000, 1000, SHAPE_KJI).astype(np.int16)


def add_linear_transform(scene, angle_deg=20.0, translation=(5.0, -7.0, 11.0)):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    transform = vtk.vtkTransform()
    transform.Translate(*translation)
    transform.RotateWXYZ(angle_deg, 0.3, 0.5, 0.8)
    node.SetMatrixTransformToParent(transform.GetMatrix())
    return node


def world_ras_of_voxel(volume_node, ijk) -> np.ndarray:
    return (adapter.ijk_to_world_ras(volume_node) @ np.r_[np.asarray(ijk, float), 1.0])[:3]


def segment_mask(segmentation_node, segment_id, volume_node) -> np.ndarray:
    label_map = adapter.segmentation_to_label_map(segmentation_node, volume_node, [segment_id])
    return sitk.GetArrayFromImage(label_map.image) > 0


def test_volume_to_sitk_matches_the_file_slicer_writes(mrml, tmp_path):
    voxels = random_voxels()
    volume = add_volume(mrml.scene, voxels, directions=oblique_directions())
    image = adapter.volume_to_sitk(volume)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(tmp_path / "ct.nrrd"))
    assert storage.WriteData(volume)
    from_file = sitk.ReadImage(str(tmp_path / "ct.nrrd"))
    np.testing.assert_allclose(image.GetOrigin(), from_file.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), from_file.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(image.GetSpacing(), from_file.GetSpacing(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), voxels)


def test_volume_round_trip_is_voxel_exact_for_an_oblique_volume(mrml):
    voxels = random_voxels(1)
    volume = add_volume(mrml.scene, voxels, directions=oblique_directions(35))
    image = adapter.volume_to_sitk(volume)
    back = adapter.add_volume_from_sitk(mrml.scene, image, "back")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(back), voxels)
    np.testing.assert_allclose(adapter.ijk_to_world_ras(back), adapter.ijk_to_world_ras(volume), atol=1e-9)
    # a physical point maps to the same voxel in SimpleITK as in Slicer
    ras = world_ras_of_voxel(volume, (3, 5, 7))
    index = image.TransformPhysicalPointToIndex((-ras[0], -ras[1], ras[2]))
    assert index == (3, 5, 7)


def test_volume_under_a_transform_is_in_world_coordinates(mrml):
    voxels = random_voxels(2)
    volume = add_volume(mrml.scene, voxels)
    transform = add_linear_transform(mrml.scene)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    image = adapter.volume_to_sitk(volume)
    ras = world_ras_of_voxel(volume, (9, 2, 4))
    untransformed = np.eye(4)
    volume.GetIJKToRASMatrix(m := vtk.vtkMatrix4x4())
    untransformed = adapter.vtk_to_numpy_matrix(m)
    assert not np.allclose(ras, (untransformed @ np.r_[9, 2, 4, 1.0])[:3], atol=1.0)  # the transform matters
    assert image.TransformPhysicalPointToIndex((-ras[0], -ras[1], ras[2])) == (9, 2, 4)
    # back into a node under the same transform: same node geometry, same voxels
    other = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "other")
    other.SetAndObserveTransformNodeID(transform.GetID())
    adapter.update_volume_from_sitk(other, image)
    other.GetIJKToRASMatrix(m2 := vtk.vtkMatrix4x4())
    np.testing.assert_allclose(adapter.vtk_to_numpy_matrix(m2), untransformed, atol=1e-9)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(other), voxels)


def test_non_linear_transform_is_refused_with_advice(mrml):
    volume = add_volume(mrml.scene, random_voxels())
    grid = mrml.scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    volume.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(InputError, match="not linear; harden"):
        adapter.volume_to_sitk(volume)


def test_vector_volume_and_empty_node_are_refused(mrml):
    rgb = mrml.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    slicer.util.updateVolumeFromArray(rgb, np.zeros((2, 3, 4, 3), np.uint8))
    with pytest.raises(InputError, match="rgb: has 3 components"):
        adapter.volume_to_sitk(rgb)
    empty = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="empty: no image data"):
        adapter.volume_to_sitk(empty)


def make_label_map(volume) -> LabelMap:
    image = adapter.volume_to_sitk(volume)
    labels = np.zeros(SHAPE_KJI, np.uint8)
    labels[2:6, 3:9, 4:10] = 1
    labels[7:11, 1:4, 10:15] = 3
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    table = LabelTable()
    table.add(1, "liver", (0.9, 0.5, 0.4))
    table.add(3, "right kidney", (0.6, 0.3, 0.3))
    return LabelMap(label_image, table)


@pytest.mark.parametrize("geometry", ["oblique", "transformed"])
def test_label_map_to_segments_round_trip(mrml, geometry):
    volume = add_volume(mrml.scene, random_voxels(), directions=oblique_directions())
    if geometry == "transformed":
        volume.SetAndObserveTransformNodeID(add_linear_transform(mrml.scene).GetID())
    label_map = make_label_map(volume)
    segmentation_node = adapter.new_segmentation(mrml.scene, volume)
    # the segmentation's grid is the volume's grid in the same (transformed) frame: no resampling anywhere
    geometry = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(segmentation_node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()), geometry, False)
    volume.GetIJKToRASMatrix(volume_matrix := vtk.vtkMatrix4x4())
    geometry.GetImageToWorldMatrix(geometry_matrix := vtk.vtkMatrix4x4())
    np.testing.assert_allclose(adapter.vtk_to_numpy_matrix(geometry_matrix),
                               adapter.vtk_to_numpy_matrix(volume_matrix), atol=1e-9)
    ids = adapter.label_map_to_segments(label_map, segmentation_node)
    segmentation = segmentation_node.GetSegmentation()
    assert [segmentation.GetSegment(i).GetName() for i in ids] == ["liver", "right kidney"]
    np.testing.assert_allclose(segmentation.GetSegment(ids[0]).GetColor(), (0.9, 0.5, 0.4))
    assert "SCT^24028007^Right" in segmentation.GetSegment(ids[1]).GetTerminology()
    truth = sitk.GetArrayFromImage(label_map.image)
    for value, segment_id in zip((1, 3), ids):
        np.testing.assert_array_equal(segment_mask(segmentation_node, segment_id, volume), truth == value)
    back = adapter.segmentation_to_label_map(segmentation_node, volume)
    assert [label.name for label in back.labels] == ["liver", "right kidney"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back.image), np.where(truth == 3, 2, truth))
    np.testing.assert_allclose(back.image.GetOrigin(), label_map.image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(back.image.GetDirection(), label_map.image.GetDirection(), atol=1e-9)


def test_label_map_into_a_new_segmentation_without_reference_geometry(mrml):
    volume = add_volume(mrml.scene, random_voxels(), directions=oblique_directions())
    label_map = make_label_map(volume)
    segmentation_node = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "bare")
    ids = adapter.label_map_to_segments(label_map, segmentation_node)
    truth = sitk.GetArrayFromImage(label_map.image)
    np.testing.assert_array_equal(segment_mask(segmentation_node, ids[0], volume), truth == 1)


def test_existing_segments_are_kept_unless_overwrite(mrml):
    volume = add_volume(mrml.scene, random_voxels())
    label_map = make_label_map(volume)
    segmentation_node = adapter.new_segmentation(mrml.scene, volume)
    first = adapter.label_map_to_segments(label_map, segmentation_node, values=[1])
    shifted = sitk.GetArrayFromImage(label_map.image)
    shifted = np.roll(shifted, 1, axis=0)
    moved = sitk.GetImageFromArray(shifted)
    moved.CopyInformation(label_map.image)
    second = adapter.label_map_to_segments(LabelMap(moved, label_map.labels), segmentation_node, values=[1])
    segmentation = segmentation_node.GetSegmentation()
    assert segmentation.GetSegment(second[0]).GetName() == "liver (2)"
    truth = sitk.GetArrayFromImage(label_map.image)
    np.testing.assert_array_equal(segment_mask(segmentation_node, first[0], volume), truth == 1)  # untouched
    np.testing.assert_array_equal(segment_mask(segmentation_node, second[0], volume), shifted == 1)
    third = adapter.label_map_to_segments(LabelMap(moved, label_map.labels), segmentation_node, values=[1],
                                       overwrite=True)
    assert third == first
    assert segmentation.GetNumberOfSegments() == 2
    np.testing.assert_array_equal(segment_mask(segmentation_node, first[0], volume), shifted == 1)


def test_markups_seeds_land_on_the_intended_voxel(mrml):
    volume = add_volume(mrml.scene, random_voxels(), directions=oblique_directions(25))
    transform = add_linear_transform(mrml.scene)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    image = adapter.volume_to_sitk(volume)
    wanted = [(3, 4, 5), (15, 13, 11), (0, 0, 0)]
    points = mrml.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seeds")
    # the markups sit under a different transform: their *world* position is what counts
    other = add_linear_transform(mrml.scene, angle_deg=-40, translation=(1, 2, 3))
    points.SetAndObserveTransformNodeID(other.GetID())
    to_world = adapter.node_to_world(points)
    for ijk in wanted:
        world = world_ras_of_voxel(volume, ijk)
        points.AddControlPoint((np.linalg.inv(to_world) @ np.r_[world, 1.0])[:3].tolist())
    assert adapter.lps_to_index(image, adapter.markups_to_lps(points)) == wanted


def test_seed_outside_the_volume_is_a_clear_error(mrml):
    volume = add_volume(mrml.scene, random_voxels())
    points = mrml.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seeds")
    points.AddControlPoint([500.0, 500.0, 500.0])
    with pytest.raises(InputError, match="outside the image"):
        adapter.lps_to_index(adapter.volume_to_sitk(volume), adapter.markups_to_lps(points))


def test_segment_editor_source_image_to_sitk(mrml):
    """The Segment Editor's source image (a vtkOrientedImageData with an extent offset) keeps its geometry."""
    voxels = random_voxels()
    volume = add_volume(mrml.scene, voxels, directions=oblique_directions())
    segmentation_node = adapter.new_segmentation(mrml.scene, volume)
    editor = slicer.vtkSlicerSegmentEditorLogic()
    editor.SetMRMLScene(mrml.scene)
    editor.SetSegmentEditorNode(mrml.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode"))
    editor.SetSegmentationNode(segmentation_node)
    editor.SetSourceVolumeNode(volume)
    assert editor.UpdateAlignedSourceVolume()
    source = editor.GetAlignedSourceVolume()  # what scriptedEffect.sourceVolumeImageData() returns
    image = adapter.oriented_image_to_sitk(source)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), voxels)
    reference = adapter.volume_to_sitk(volume)
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-9)
    # a cropped piece (non-zero extent start) still maps each voxel to the same place
    clip = vtk.vtkImageClip()
    clip.SetInputData(source)
    clip.SetOutputWholeExtent(2, 9, 3, 10, 4, 8)
    clip.ClipDataOn()
    clip.Update()
    cropped = slicer.vtkOrientedImageData()
    cropped.ShallowCopy(clip.GetOutput())
    cropped.CopyDirections(source)
    piece = adapter.oriented_image_to_sitk(cropped)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(piece), voxels[4:9, 3:11, 2:10])
    np.testing.assert_allclose(piece.GetOrigin(), reference.TransformIndexToPhysicalPoint((2, 3, 4)), atol=1e-6)


def test_rows_to_table_and_csv(mrml, tmp_path):
    rows = [{"segment": "liver", "volume_ml": 1.5, "voxels": 10}, {"segment": "spleen", "volume_ml": None,
                                                                    "voxels": 3}]
    table_node = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode", "t")
    adapter.rows_to_table(rows, table_node)
    back = adapter.table_to_rows(table_node)
    assert back[0] == {"segment": "liver", "volume_ml": 1.5, "voxels": 10.0}
    assert np.isnan(back[1]["volume_ml"])
    path = tmp_path / "t.csv"
    adapter.write_table_csv(table_node, str(path))
    with path.open(newline="") as handle:
        written = list(csv.reader(handle))
    assert written[0] == ["segment", "volume_ml", "voxels"]
    assert written[1] == ["liver", "1.5", "10"]
    with pytest.raises(InputError, match="cannot write the table"):
        adapter.write_table_csv(table_node, str(tmp_path / "missing" / "t.csv"))


def test_terminology_names():
    assert "SCT^10200004^Liver" in terminology_for("Liver")
    assert "SCT^7771000^Left" in terminology_for("kidney_left")
    assert terminology_for("vertebrae") is None
