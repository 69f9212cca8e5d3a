"""A DICOM SEG written by SegToolkit loads into a Slicer segmentation node (real MRML of the slicer-core wheel)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer")

import SimpleITK as sitk  # noqa: E402
from dicom_synthetic import make_volume, oblique, write_series  # noqa: E402
from test_dicom_seg import organ_labels  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "SegToolkit" / "SegToolkit"))

from SegToolkitSlicerLib import mrml as adapter  # noqa: E402
from SegToolkitSlicerLib.logic import SegToolkitSlicerLogic  # noqa: E402

from SegToolkitLib.io import LabelMap, LabelTable, read_image, write_label_map  # noqa: E402
from SegToolkitLib.io.dicom_seg import DicomOutput  # noqa: E402


def test_seg_we_write_loads_as_segments_on_the_volume(mrml, tmp_path):
    write_series(tmp_path / "ct", make_volume(direction=oblique(), seed=6))
    ct = read_image(tmp_path / "ct")
    labels = organ_labels(ct)
    margin = sitk.Cast(sitk.BinaryDilate(labels.image == 1, [1, 1, 1]), sitk.sitkUInt8) * 3  # overlaps the liver
    layers = [labels, LabelMap(margin, LabelTable.from_names({3: "margin"}))]
    path = write_label_map(layers, tmp_path / "seg.dcm", DicomOutput(tmp_path / "ct", method="threshold"))
    volume = adapter.add_volume_from_sitk(mrml.scene, ct, "ct")

    ids = SegToolkitSlicerLogic(mrml.scene).import_dicom_seg(path, volume)

    segmentation = mrml.scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    names = [segmentation.GetSegmentation().GetSegment(i).GetName() for i in ids]
    assert names == ["liver", "kidney_left", "margin"]
    for segment_id, expected in zip(ids, [labels.image == 1, labels.image == 2, margin > 0]):
        got = adapter.segmentation_to_label_map(segmentation, volume, [segment_id]).image
        np.testing.assert_array_equal(sitk.GetArrayFromImage(got) > 0, sitk.GetArrayFromImage(expected) > 0)
