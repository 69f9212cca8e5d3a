"""DICOM SEG, RTSTRUCT and SR out, DICOM SEG in: geometry proven against the SEG's own per-frame positions, files
validated by tools we did not write (dciodvfy, highdicom, pydicom), bad inputs refused with nothing written."""

from __future__ import annotations

import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_synthetic import AXIAL, CORONAL, NEGATED, SAGITTAL, make_volume, oblique, write_series

from SegToolkitLib.errors import InputError, OutputError
from SegToolkitLib.interfaces.cli import main
from SegToolkitLib.io import LabelMap, LabelTable, read_image, read_label_map, write_image, write_label_map
from SegToolkitLib.io.dicom_seg import DicomOutput, read_dicom_seg_layers
from SegToolkitLib.io.images import read_label_layers
from SegToolkitLib.io.rtstruct import read_rtstruct

ORIENTATIONS = {"axial": AXIAL, "sagittal": SAGITTAL, "coronal": CORONAL, "negated rows/columns": NEGATED,
                "oblique": oblique()}


def dciodvfy_errors(path) -> list[str]:
    """Errors dciodvfy (Debian dicom3tools) reports for a file; the test is skipped where it is not installed."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed; install it to validate DICOM output")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def organ_labels(reference: sitk.Image) -> LabelMap:
    """Two organ-like shapes: an ellipsoid 'liver' with a hole, and a 'kidney_left' of two islands per slice."""
    k, j, i = np.indices(sitk.GetArrayViewFromImage(reference).shape)
    array = np.zeros(k.shape, dtype=np.uint8)
    liver = ((i - 11) / 8.0) ** 2 + ((j - 13) / 9.0) ** 2 + ((k - 6) / 4.5) ** 2 <= 1
    hole = ((i - 11) / 2.5) ** 2 + ((j - 13) / 2.5) ** 2 <= 1
    array[liver & ~hole] = 1
    islands = ((((i - 25) / 3.5) ** 2 + ((j - 8) / 3.5) ** 2 <= 1) | (((i - 25) / 3.0) ** 2 + ((j - 24) / 4.0) ** 2
                                                                     <= 1)) & (k >= 2) & (k <= 9)
    array[islands] = 2
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return LabelMap(image, LabelTable.from_names({1: "liver", 2: "kidney_left"}))


def series_and_labels(folder, direction=AXIAL):
    write_series(folder, make_volume(direction=direction, seed=4), shuffle=True)
    ct = read_image(folder)
    return ct, organ_labels(ct)


def centroids_from_seg_frames(path) -> dict[int, np.ndarray]:
    """Each segment's centroid (LPS mm) computed from the SEG file alone: per-frame positions, orientation and
    pixel spacing as pydicom reads them (none of SegToolkit's reading code)."""
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    shared = ds.SharedFunctionalGroupsSequence[0]
    orientation = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for frame, group in zip(frames, ds.PerFrameFunctionalGroupsSequence):
        identification = group.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        number = int(identification[0].ReferencedSegmentNumber)
        position = np.array(group.PlanePositionSequence[0].ImagePositionPatient, float)
        rows, columns = np.nonzero(frame)
        points = position + np.outer(columns * column_spacing, orientation[:3]) + \
            np.outer(rows * row_spacing, orientation[3:])
        sums[number] = sums.get(number, 0) + points.sum(axis=0)
        counts[number] = counts.get(number, 0) + len(points)
    return {number: sums[number] / counts[number] for number in sums}


def mask_centroid(label_map: LabelMap, value: int) -> np.ndarray:
    k, j, i = np.nonzero(sitk.GetArrayViewFromImage(label_map.image) == value)
    points = [label_map.image.TransformContinuousIndexToPhysicalPoint((float(a), float(b), float(c)))
              for a, b, c in zip(i, j, k)]
    return np.mean(points, axis=0)


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_seg_centroids_from_frame_geometry_match_the_mask(tmp_path, orientation):
    ct, labels = series_and_labels(tmp_path / "ct", ORIENTATIONS[orientation])
    path = write_label_map(labels, tmp_path / "seg.dcm", DicomOutput(tmp_path / "ct", method="threshold"))

    centroids = centroids_from_seg_frames(path)
    half_voxel = 0.5 * min(ct.GetSpacing())
    for value in (1, 2):
        assert np.linalg.norm(centroids[value] - mask_centroid(labels, value)) < half_voxel
    assert dciodvfy_errors(path) == []


@pytest.mark.parametrize("seg_type", ["binary", "labelmap"])
def test_seg_to_label_map_to_seg_is_voxel_exact(tmp_path, seg_type):
    ct, labels = series_and_labels(tmp_path / "ct", oblique())
    options = DicomOutput(tmp_path / "ct", seg_type=seg_type, method="threshold", compress=seg_type == "labelmap")
    first = write_label_map(labels, tmp_path / "first.dcm", options)

    back = read_label_map(first, reference=ct)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back.image), sitk.GetArrayFromImage(labels.image))
    assert [label.name for label in back.labels] == ["liver", "kidney_left"]
    second = write_label_map(back, tmp_path / "second.dcm", options)

    a, b = hd.seg.segread(first), hd.seg.segread(second)
    for number in (1, 2):
        np.testing.assert_array_equal(_segment_mask(first, ct, number), _segment_mask(second, ct, number))
    assert a.SOPInstanceUID != b.SOPInstanceUID and a.SeriesInstanceUID != b.SeriesInstanceUID
    if seg_type == "labelmap":
        assert str(pydicom.dcmread(first).file_meta.TransferSyntaxUID) == pydicom.uid.RLELossless
    errors = dciodvfy_errors(first)
    if seg_type == "labelmap" and "Error - Information Object Not found" in errors:
        pytest.skip("this dciodvfy predates the LABELMAP Segmentation IOD (DICOM 2024c); BINARY is validated")
    assert errors == []


def test_seg_carries_codes_algorithm_and_the_source_patient(tmp_path):
    ct, labels = series_and_labels(tmp_path / "ct")
    options = DicomOutput(tmp_path / "ct", method="predict", model_name="abdomen", model_hash="ab" * 32)
    seg = hd.seg.segread(write_label_map(labels, tmp_path / "seg.dcm", options))
    source = pydicom.dcmread(next((tmp_path / "ct").iterdir()))

    assert seg.SegmentationType == "BINARY"
    assert (seg.PatientID, seg.PatientName, seg.StudyInstanceUID) == (source.PatientID, source.PatientName,
                                                                      source.StudyInstanceUID)
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    liver, kidney = seg.get_segment_description(1), seg.get_segment_description(2)
    assert liver.segment_label == "liver"
    assert (liver.segmented_property_type.value, liver.segmented_property_type.scheme_designator) == \
        ("10200004", "SCT")
    assert kidney.segmented_property_type.value == "64033007"
    modifier = seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence
    assert modifier[0].CodeMeaning == "Left" and modifier[0].CodingSchemeDesignator == "SCT"
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "SegToolkit predict"
    parameters = algorithm.AlgorithmParameters
    assert "abdomen" in parameters and "ab" * 32 in parameters


def test_overlapping_segments_are_kept_as_layers_and_refused_where_one_label_per_voxel_is_needed(tmp_path):
    ct, labels = series_and_labels(tmp_path / "ct")
    bigger = sitk.BinaryDilate(labels.image == 1, [2, 2, 1])  # overlaps the liver and part of the kidney
    layers = [labels, LabelMap(sitk.Cast(bigger, sitk.sitkUInt8) * 3, LabelTable.from_names({3: "liver margin"}))]
    path = write_label_map(layers, tmp_path / "overlap.dcm", DicomOutput(tmp_path / "ct", method="grow"))
    assert dciodvfy_errors(path) == []

    read = read_label_layers(path, reference=ct)
    assert len(read) == 2
    margin = sitk.GetArrayViewFromImage(read[1].image) == 3
    np.testing.assert_array_equal(margin, sitk.GetArrayViewFromImage(bigger) > 0)
    with pytest.raises(InputError, match="overlap"):
        read_label_map(path, reference=ct)
    with pytest.raises(OutputError, match="overlap"):
        write_label_map(layers, tmp_path / "flat.nii.gz")


def test_rtstruct_contours_rasterise_back_to_the_organs(tmp_path):
    ct, labels = series_and_labels(tmp_path / "ct", oblique())
    path = write_label_map(labels, tmp_path / "organs.rtstruct.dcm", DicomOutput(tmp_path / "ct", method="atlas"))

    ds = pydicom.dcmread(path)
    assert ds.Modality == "RTSTRUCT" and [roi.ROIName for roi in ds.StructureSetROISequence] == ["liver",
                                                                                                 "kidney_left"]
    kidney_contours = ds.ROIContourSequence[1].ContourSequence
    assert len(kidney_contours) == 2 * 8  # two islands on each of the 8 slices
    back = read_rtstruct(path, ct)
    for value in (1, 2):
        expected = sitk.GetArrayViewFromImage(labels.image) == value
        got = sitk.GetArrayViewFromImage(back.image) == value
        dice = 2 * np.count_nonzero(expected & got) / (np.count_nonzero(expected) + np.count_nonzero(got))
        assert dice >= 0.98
    assert not np.any(sitk.GetArrayViewFromImage(back.image)[6, 13, 11])  # the hole stays a hole
    assert dciodvfy_errors(path) == []


def test_measure_writes_a_tid1500_report_referencing_the_seg(tmp_path, capsys):
    ct, labels = series_and_labels(tmp_path / "ct")
    renumbered = sitk.ChangeLabel(labels.image, {1: 4, 2: 9})  # label values 4 and 9 are segments 1 and 2
    labels = LabelMap(renumbered, LabelTable.from_names({4: "liver", 9: "kidney_left"}))
    seg_path = write_label_map(labels, tmp_path / "seg.dcm", DicomOutput(tmp_path / "ct", method="threshold"))

    assert main(["measure", str(seg_path), "--image", str(tmp_path / "ct"), "--dicom-sr", str(tmp_path / "sr.dcm"),
                 "--format", "json"]) == 0
    import json

    measured = {row["label"]: row for row in json.loads(capsys.readouterr().out)["labels"]}
    sr = hd.sr.srread(tmp_path / "sr.dcm")
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    volumes = {}
    for group in groups:
        segment = group.referenced_segment
        assert segment.referenced_sop_instance_uid == hd.seg.segread(seg_path).SOPInstanceUID
        volume = next(m for m in group.get_measurements() if m.name.meaning == "Volume")
        volumes[segment.referenced_segment_numbers[0]] = volume.value
    for number, value in ((1, 4), (2, 9)):
        assert volumes[number] == pytest.approx(measured[value]["volume_ml"] * 1000, rel=1e-6)
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []


def test_commands_write_dicom_seg_from_a_dicom_input_or_a_given_reference(tmp_path, capsys):
    ct, _ = series_and_labels(tmp_path / "ct")
    out = tmp_path / "mask.dcm"
    assert main(["threshold", str(tmp_path / "ct"), "--lower", "45", "-o", str(out)]) == 0
    assert hd.seg.segread(out).get_segment_description(1).segment_label == "threshold"

    write_image(ct, tmp_path / "ct.nii.gz")
    refused = tmp_path / "refused.dcm"
    assert main(["threshold", str(tmp_path / "ct.nii.gz"), "--lower", "45", "-o", str(refused)]) == 2
    assert "--dicom-reference" in capsys.readouterr().err and not refused.exists()
    assert main(["threshold", str(tmp_path / "ct.nii.gz"), "--lower", "45", "-o", str(tmp_path / "r.rtstruct.dcm"),
                 "--dicom-reference", str(tmp_path / "ct")]) == 0
    assert pydicom.dcmread(tmp_path / "r.rtstruct.dcm").Modality == "RTSTRUCT"

    # the SEG is accepted where a label map is: compare against the NIfTI of the same mask, grow's --mask
    nifti = tmp_path / "mask.nii.gz"
    assert main(["threshold", str(tmp_path / "ct.nii.gz"), "--lower", "45", "-o", str(nifti)]) == 0
    capsys.readouterr()
    assert main(["compare", str(out), str(nifti), "--format", "json"]) == 0
    assert '"dice": 1.0' in capsys.readouterr().out
    assert main(["grow", str(tmp_path / "ct"), "--seed", "16,16,6", "--ijk", "--mask", str(out),
                 "-o", str(tmp_path / "grown.nii.gz")]) == 0


def test_bad_dicom_inputs_are_refused_and_nothing_is_written(tmp_path):
    ct, labels = series_and_labels(tmp_path / "ct")
    other = make_volume(seed=9)
    write_series(tmp_path / "other", other)
    other_ct = read_image(tmp_path / "other")
    seg_path = write_label_map(labels, tmp_path / "seg.dcm", DicomOutput(tmp_path / "ct", method="threshold"))

    with pytest.raises(InputError, match="references series"):  # a SEG made for another series
        read_label_map(seg_path, reference=other_ct)
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(seg_path.read_bytes()[: len(seg_path.read_bytes()) // 2])
    with pytest.raises(InputError):
        read_label_map(corrupt, reference=ct)
    empty = pydicom.dcmread(seg_path)
    empty.SegmentSequence = []
    empty.save_as(tmp_path / "empty.dcm")
    with pytest.raises(InputError, match="no segments"):
        read_dicom_seg_layers(tmp_path / "empty.dcm", ct)

    flat = LabelMap(labels.image[:, :, 5], labels.labels)
    with pytest.raises(OutputError, match="2D"):
        write_label_map(flat, tmp_path / "flat.rtstruct.dcm", DicomOutput(tmp_path / "ct"))
    shifted = sitk.Image(labels.image)
    shifted.SetOrigin(tuple(np.array(ct.GetOrigin()) + (0, 0, 5.0)))
    with pytest.raises(InputError, match="not on the voxel grid of the reference series"):
        write_label_map(LabelMap(shifted, labels.labels), tmp_path / "moved.dcm", DicomOutput(tmp_path / "ct"))
    with pytest.raises(OutputError, match="--dicom-reference"):
        write_label_map(labels, tmp_path / "noref.dcm")
    with pytest.raises(OutputError, match="empty"):
        write_label_map(LabelMap(labels.image * 0, labels.labels), tmp_path / "none.dcm", DicomOutput(tmp_path / "ct"))
    written = {p.name for p in tmp_path.iterdir() if p.is_file()}
    assert written == {"seg.dcm", "corrupt.dcm", "empty.dcm"}  # no output, no temporary file left


def _segment_mask(path, reference, number) -> np.ndarray:
    layers = read_dicom_seg_layers(path, reference)
    return np.any([sitk.GetArrayViewFromImage(layer.image) == number for layer in layers], axis=0)


@pytest.mark.shared_data
def test_real_anonymised_series_without_uids_is_refused_before_any_work(shared_data, tmp_path, capsys):
    folder = shared_data / "totalsegmentator_ct_examples" / "dicom" / "ct_dicom_example"
    assert main(["threshold", str(folder), "--lower", "300", "-o", str(tmp_path / "bone.dcm")]) == 2
    assert "has no SOPClassUID" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_structure_names_get_standard_sct_codes_and_unknown_names_the_generic_one():
    from pydicom.sr.codedict import codes

    from SegToolkitLib.io.dicom_codes import STRUCTURES, code_for

    for name in STRUCTURES:  # every entry names a code the DICOM dictionary has (nothing typed by hand)
        coded = code_for(name)
        assert coded.known and coded.type.scheme_designator == "SCT"
    for name in ("kidney_left", "Left Kidney", "rib_left_6"):
        coded = code_for(name)
        assert coded.modifier == codes.cid244.Left
    assert code_for("vertebrae_T12").type.meaning == "T12 vertebra"
    unknown = code_for("threshold 3")
    assert not unknown.known and unknown.type == codes.SCT.Tissue and unknown.category == codes.cid7150.Tissue


def test_info_and_snake_take_a_seg(tmp_path, capsys):
    ct, labels = series_and_labels(tmp_path / "ct")
    seg_path = write_label_map(labels, tmp_path / "seg.dcm", DicomOutput(tmp_path / "ct", method="threshold"))
    assert main(["info", str(seg_path)]) == 0
    assert "1: liver (Liver SCT 10200004)" in capsys.readouterr().out
    assert main(["snake", str(tmp_path / "ct"), "--init", str(seg_path), "--iterations", "5",
                 "-o", str(tmp_path / "snake.seg.nrrd")]) == 0


def test_two_segs_with_different_frames_are_compared_on_one_grid_and_a_seg_serves_as_atlas(tmp_path, capsys):
    import json

    from SegToolkitLib.methods.atlas.multi_atlas import load_atlas

    ct, labels = series_and_labels(tmp_path / "ct", SAGITTAL)
    both = write_label_map(labels, tmp_path / "both.dcm", DicomOutput(tmp_path / "ct"))
    kidney_only = LabelMap(sitk.Cast(labels.image == 2, sitk.sitkUInt8) * 2, labels.labels)
    only = write_label_map(kidney_only, tmp_path / "kidney.dcm", DicomOutput(tmp_path / "ct"))
    assert pydicom.dcmread(only).NumberOfFrames < pydicom.dcmread(both).NumberOfFrames  # empty frames left out

    assert main(["compare", str(only), str(both), "--format", "json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["labels"]}
    assert rows["kidney_left"]["dice"] == 1.0 and rows["liver"]["dice"] == 0.0

    atlas = load_atlas(tmp_path / "ct", both)  # atlas labels as a SEG, placed on the atlas image
    np.testing.assert_array_equal(sitk.GetArrayFromImage(atlas.labels.image), sitk.GetArrayFromImage(labels.image))


def test_seg_of_an_enhanced_multiframe_series_with_frames_out_of_order(tmp_path):
    from test_dicom_series import _write_multiframe

    (tmp_path / "mf").mkdir()
    _write_multiframe(tmp_path / "mf" / "ct.dcm", make_volume(direction=oblique(), seed=5),
                      order=[7, 2, 11, 0, 5, 9, 1, 4, 10, 3, 8, 6], slope=1.0, intercept=0.0)
    ct = read_image(tmp_path / "mf")
    labels = organ_labels(ct)
    path = write_label_map(labels, tmp_path / "seg.dcm", DicomOutput(tmp_path / "mf"))

    centroids = centroids_from_seg_frames(path)
    for value in (1, 2):
        assert np.linalg.norm(centroids[value] - mask_centroid(labels, value)) < 0.5 * min(ct.GetSpacing())
    back = read_label_map(path, reference=ct)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back.image), sitk.GetArrayFromImage(labels.image))
    assert dciodvfy_errors(path) == []


def test_series_option_picks_the_input_series_and_the_seg_references_it(tmp_path):
    big_uid = write_series(tmp_path / "study", make_volume(seed=1))
    small_uid = write_series(tmp_path / "study", make_volume(shape=(5, 32, 32), origin=(0, 0, 200), seed=2))
    out = tmp_path / "small.dcm"
    assert main(["threshold", str(tmp_path / "study"), "--series", small_uid, "--lower", "45", "-o", str(out)]) == 0
    seg = hd.seg.segread(out)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == small_uid != big_uid
