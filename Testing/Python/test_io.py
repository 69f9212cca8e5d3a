"""Image and label-map input/output: formats, geometry, DICOM series, Slicer .seg.nrrd, atomic writes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SegToolkitLib.errors import InputError, OutputError
from SegToolkitLib.io import (
    LabelMap,
    LabelTable,
    check_same_grid,
    read_image,
    read_label_map,
    read_scalar_image,
    read_segmentation,
    write_image,
    write_label_map,
)

OBLIQUE = tuple(sitk.VersorTransform((0.2, 0.5, 0.3), 0.4).GetMatrix())


def make_image(shape=(6, 8, 10), spacing=(0.7, 0.8, 2.5), origin=(10.0, -5.0, 3.0), direction=OBLIQUE,
               dtype=np.int16, seed=0) -> sitk.Image:
    array = np.random.default_rng(seed).integers(-100, 100, size=shape).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def make_labels(shape=(6, 8, 10)) -> np.ndarray:
    array = np.zeros(shape, np.uint8)
    array[1:3, 2:5, 3:7] = 1
    array[4, 5:7, 1:3] = 3
    return array


def assert_same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_volume_round_trip_keeps_voxels_and_oblique_geometry(tmp_path, suffix):
    image = make_image()
    path = write_image(image, tmp_path / f"ct{suffix}")
    back = read_image(path)
    assert_same_geometry(back, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


def test_nhdr_and_mhd_headers_are_read(tmp_path):
    image = make_image()
    for suffix in (".nhdr", ".mhd"):
        sitk.WriteImage(image, str(tmp_path / f"detached{suffix}"))
        back = read_image(tmp_path / f"detached{suffix}")
        assert_same_geometry(back, image)


def test_two_dimensional_images_stay_two_dimensional(tmp_path):
    array = (np.arange(12 * 16).reshape(12, 16) % 251).astype(np.uint8)
    picture = sitk.GetImageFromArray(array)
    sitk.WriteImage(picture, str(tmp_path / "slice.png"))
    rgb = sitk.Compose([picture, picture, picture])
    sitk.WriteImage(rgb, str(tmp_path / "colour.png"))
    nifti = sitk.GetImageFromArray(array)
    nifti.SetSpacing((0.2, 0.3))
    sitk.WriteImage(nifti, str(tmp_path / "us.nii.gz"))

    grey = read_scalar_image(tmp_path / "slice.png")
    assert grey.GetDimension() == 2 and grey.GetSize() == (16, 12)
    colour = read_scalar_image(tmp_path / "colour.png")  # RGB pictures become grey values
    assert colour.GetNumberOfComponentsPerPixel() == 1
    np.testing.assert_allclose(sitk.GetArrayFromImage(colour), array, atol=0.51)
    us = read_scalar_image(tmp_path / "us.nii.gz")
    assert us.GetDimension() == 2 and us.GetSpacing() == pytest.approx((0.2, 0.3))


def write_dicom_series(folder: Path, image: sitk.Image, series_uid: str, shuffle_names: bool = True) -> None:
    """Write ``image`` as a CT DICOM series with the file names in scrambled order."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    orientation = "\\".join(f"{v:.6f}" for v in (direction[0], direction[3], direction[6], direction[1],
                                                  direction[4], direction[7]))
    count = image.GetDepth()
    names = np.random.default_rng(1).permutation(count) if shuffle_names else range(count)
    for k, name in zip(range(count), names):
        slice_image = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (("0020|000e", series_uid), ("0020|000d", "1.2.826.0.1.3680043.2.1125.1"),
                           ("0008|0060", "CT"), ("0020|0037", orientation),
                           ("0020|0032", "\\".join(f"{v:.6f}" for v in position)), ("0020|0013", str(k + 1)),
                           ("0018|0050", f"{image.GetSpacing()[2]:.6f}"),
                           ("0008|0018", f"{series_uid}.{k + 1}")):
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{series_uid[-3:]}_{int(name):04d}.dcm"))
        writer.Execute(slice_image)


def test_dicom_series_is_sorted_by_position_and_largest_series_is_chosen(tmp_path):
    direction = tuple(np.array(OBLIQUE).reshape(3, 3).ravel())
    big = make_image(shape=(7, 8, 9), spacing=(0.8, 0.8, 2.0), direction=direction, seed=3)
    small = make_image(shape=(3, 8, 9), spacing=(0.8, 0.8, 2.0), direction=direction, seed=4)
    write_dicom_series(tmp_path / "study", big, "1.2.3.4.100")
    write_dicom_series(tmp_path / "study", small, "1.2.3.4.200")

    chosen = read_image(tmp_path / "study")
    assert chosen.GetSize() == big.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(chosen), sitk.GetArrayFromImage(big))
    np.testing.assert_allclose(chosen.GetOrigin(), big.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(chosen.GetDirection(), big.GetDirection(), atol=1e-5)

    picked = read_image(tmp_path / "study", series_uid="1.2.3.4.200")
    assert picked.GetSize() == small.GetSize()
    with pytest.raises(InputError, match="no DICOM series with SeriesInstanceUID 9.9"):
        read_image(tmp_path / "study", series_uid="9.9")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path / "empty")


@pytest.mark.shared_data
def test_real_dicom_series_matches_its_nifti(shared_data):
    folder = shared_data / "totalsegmentator_ct_examples"
    dicom = read_image(folder / "dicom" / "ct_dicom_example")
    nifti_path = next((folder / "images").glob("*.nii.gz"))
    nifti = read_image(nifti_path)
    assert_same_geometry(dicom, nifti)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(dicom), sitk.GetArrayFromImage(nifti))


def test_label_map_table_and_validation(tmp_path):
    image = sitk.GetImageFromArray(make_labels().astype(np.float32))
    write_image(image, tmp_path / "labels.nii.gz")
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumour": 3}}))
    label_map = read_label_map(tmp_path / "labels.nii.gz", LabelTable.from_json(names))
    assert label_map.image.GetPixelID() == sitk.sitkUInt8
    assert label_map.present_values() == [1, 3]
    assert [label.name for label in label_map.labels] == ["liver", "tumour"]


@pytest.mark.parametrize("values,message", [
    (np.array([0.0, 0.5, 1.0]), "non-integer values"),
    (np.array([0, -1, 2]), "negative values"),
])
def test_bad_label_maps_are_rejected(tmp_path, values, message):
    array = np.zeros((2, 3, 3), np.float32 if values.dtype.kind == "f" else np.int16)
    array.flat[: values.size] = values
    write_image(sitk.GetImageFromArray(array), tmp_path / "bad.nii.gz")
    with pytest.raises(InputError, match=message) as error:
        read_label_map(tmp_path / "bad.nii.gz")
    assert "bad.nii.gz" in str(error.value)


def test_bad_image_files_give_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_image(tmp_path / "missing.nii.gz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unsupported file type .txt"):
        read_image(tmp_path / "notes.txt")
    good = write_image(make_image(), tmp_path / "good.nii.gz")
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(InputError, match="incomplete") as error:
        read_image(truncated)
    assert "\n" not in str(error.value)
    damaged = bytearray(good.read_bytes())
    middle = len(damaged) // 2
    damaged[middle:middle + 16] = bytes(b ^ 0x5A for b in damaged[middle:middle + 16])
    (tmp_path / "damaged.nii.gz").write_bytes(damaged)  # ITK alone reads such a file without a word
    with pytest.raises(InputError, match="damaged.nii.gz: file is damaged or incomplete"):
        read_image(tmp_path / "damaged.nii.gz")
    plain = write_image(make_image(), tmp_path / "plain.nii", compress=False)
    (tmp_path / "cut.nii").write_bytes(plain.read_bytes()[:-10])
    with pytest.raises(InputError, match=r"cut.nii: file is incomplete \(\d+ of \d+ bytes\)"):
        read_image(tmp_path / "cut.nii")
    garbage = tmp_path / "garbage.nrrd"
    garbage.write_bytes(gzip.compress(b"not an image"))
    with pytest.raises(InputError, match="garbage.nrrd"):
        read_image(garbage)


def test_vector_and_4d_images_are_refused_where_scalar_needed(tmp_path):
    scalar = make_image(direction=tuple(np.eye(3).ravel()))
    write_image(sitk.Compose([scalar, scalar]), tmp_path / "vector.nrrd")
    with pytest.raises(InputError, match="2 values per voxel"):
        read_scalar_image(tmp_path / "vector.nrrd")
    series = sitk.JoinSeries([scalar, scalar, scalar])
    write_image(series, tmp_path / "series.nii.gz")
    with pytest.raises(InputError, match="is a 4D image"):
        read_scalar_image(tmp_path / "series.nii.gz")


def test_grid_mismatch_is_explained():
    image = make_image()
    other = make_image(spacing=(0.7, 0.8, 3.0))
    check_same_grid(image, make_image(seed=5), "a.nii", "b.nii")
    with pytest.raises(InputError, match=r"a.nii: not on the same voxel grid as b.nii \(spacing"):
        check_same_grid(other, image, "a.nii", "b.nii")


def test_output_errors_and_nothing_half_written(tmp_path, monkeypatch):
    image = make_image()
    with pytest.raises(OutputError, match="does not exist"):
        write_image(image, tmp_path / "no" / "such" / "dir" / "out.nii.gz")
    with pytest.raises(OutputError, match="cannot write .png"):
        write_image(image, tmp_path / "out.png")
    existing = write_image(image, tmp_path / "out.nii.gz")
    before = existing.read_bytes()

    def failing_write(*args, **kwargs):
        Path(str(args[1])).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", failing_write)
    with pytest.raises(OutputError, match="disk full"):
        write_image(make_image(seed=9), existing)
    assert existing.read_bytes() == before  # the old output is intact
    assert existing.stat().st_mode & 0o644 == 0o644  # readable by others, like any plain file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]  # no temporary left


def test_seg_nrrd_round_trip_keeps_names_colours_and_geometry(tmp_path):
    image = sitk.GetImageFromArray(make_labels())
    image.CopyInformation(make_image())
    table = LabelTable()
    table.add(1, "Liver", (0.8, 0.4, 0.2))
    table.add(3, "Lesion", (0.0, 0.0, 1.0))
    write_label_map(LabelMap(image, table), tmp_path / "result.seg.nrrd")
    back = read_segmentation(tmp_path / "result.seg.nrrd")
    assert_same_geometry(back.image, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back.image), make_labels())
    assert [(label.value, label.name) for label in back.labels] == [(1, "Liver"), (3, "Lesion")]
    assert back.labels.get(1).color == pytest.approx((0.8, 0.4, 0.2))


# --- Slicer's own reader and writer (slicer-core MRML) -------------------------------------------------------

def _reference_volume_node(scene, image: sitk.Image):
    """A volume node with ``image``'s geometry (LPS -> RAS), used as the export grid."""
    import slicer
    import vtk

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "reference")
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    matrix = np.eye(4)
    matrix[:3, :3] = lps_to_ras @ np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    matrix[:3, 3] = lps_to_ras @ np.array(image.GetOrigin())
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))
    slicer.util.updateVolumeFromArray(node, np.zeros(sitk.GetArrayViewFromImage(image).shape, np.int16))
    assert isinstance(node.GetImageData(), vtk.vtkImageData)
    return node


def _segment_array(segmentation_node, segment_id, reference):
    import slicer
    import vtk

    scene = segmentation_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__export__")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap,
                                                                                reference)
    array = slicer.util.arrayFromVolume(labelmap).copy()
    scene.RemoveNode(labelmap)
    return array


def test_slicer_reads_our_seg_nrrd_with_names_colours_and_voxels(mrml, tmp_path):
    import slicer

    image = sitk.GetImageFromArray(make_labels())
    image.CopyInformation(make_image())
    table = LabelTable()
    table.add(1, "Liver", (0.8, 0.4, 0.2))
    table.add(2, "Spleen", (0.1, 0.9, 0.1))  # declared but absent: still a (empty) segment in Slicer
    table.add(3, "Lesion", (0.0, 0.0, 1.0))
    write_label_map(LabelMap(image, table), tmp_path / "ours.seg.nrrd")

    node = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "ours")
    reader = slicer.vtkMRMLSegmentationStorageNode()
    reader.SetFileName(str(tmp_path / "ours.seg.nrrd"))
    assert reader.ReadData(node)
    segmentation = node.GetSegmentation()
    segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
    assert [s.GetName() for s in segments] == ["Liver", "Spleen", "Lesion"]
    assert segments[0].GetColor() == pytest.approx((0.8, 0.4, 0.2))
    reference = _reference_volume_node(mrml.scene, image)
    for value, segment_id in ((1, segmentation.GetNthSegmentID(0)), (3, segmentation.GetNthSegmentID(2))):
        np.testing.assert_array_equal(_segment_array(node, segment_id, reference) > 0, make_labels() == value)


def test_we_read_seg_nrrd_written_by_slicer(mrml, tmp_path):
    import slicer
    import vtk
    from vtkmodules.util import numpy_support

    image = make_image()
    reference = _reference_volume_node(mrml.scene, image)
    node = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "slicer")
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    expected = make_labels()
    ijk_to_ras = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(ijk_to_ras)
    for value, name, colour in ((1, "Kidney", (0.2, 0.3, 0.9)), (3, "Cyst", (0.9, 0.9, 0.1))):
        segment_id = node.GetSegmentation().AddEmptySegment("", name, colour)
        mask = slicer.vtkOrientedImageData()
        mask.SetDimensions(*reversed(expected.shape))
        mask.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        numpy_support.vtk_to_numpy(mask.GetPointData().GetScalars()).reshape(expected.shape)[:] = expected == value
        mask.SetImageToWorldMatrix(ijk_to_ras)
        assert slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            mask, node, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    writer = node.CreateDefaultStorageNode()
    writer.SetFileName(str(tmp_path / "slicer.seg.nrrd"))
    assert writer.WriteData(node)

    label_map = read_label_map(tmp_path / "slicer.seg.nrrd")
    names = {label.name: label.value for label in label_map.labels}
    assert set(names) == {"Kidney", "Cyst"}
    assert label_map.labels.get(names["Cyst"]).color == pytest.approx((0.9, 0.9, 0.1))
    # Slicer stores the effective extent only: compare in physical space on the reference grid
    resampled = sitk.Resample(label_map.image, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    array = sitk.GetArrayFromImage(resampled)
    np.testing.assert_array_equal(array == names["Kidney"], expected == 1)
    np.testing.assert_array_equal(array == names["Cyst"], expected == 3)
