"""Multi-layer Slicer ``.seg.nrrd`` files: overlapping segments kept as layers or refused, never flattened silently;
damaged segment headers refused with a clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from SegToolkitLib.errors import InputError
from SegToolkitLib.interfaces.cli import main
from SegToolkitLib.io import read_label_map
from SegToolkitLib.io.images import read_label_layers


def write_layered(path, layers: list[np.ndarray], segments: list[tuple[str, int, int]],
                  broken: dict | None = None) -> None:
    """A .seg.nrrd as Slicer writes overlapping segments: one component per layer, SegmentN_* header fields."""
    image = sitk.Compose([sitk.GetImageFromArray(layer.astype(np.uint8)) for layer in layers])
    image.SetSpacing((0.8, 0.8, 2.0))
    for index, (name, value, layer) in enumerate(segments):
        fields = {"ID": f"Segment_{index}", "Name": name, "LabelValue": str(value), "Layer": str(layer),
                  "Color": "0.5 0.5 0.5"}
        fields.update((broken or {}).get(index, {}))
        for key, text in fields.items():
            image.SetMetaData(f"Segment{index}_{key}", text)
    sitk.WriteImage(image, str(path), useCompression=True, imageIO="NrrdImageIO")


def two_boxes(overlap: bool) -> list[np.ndarray]:
    first, second = np.zeros((6, 12, 12), np.uint8), np.zeros((6, 12, 12), np.uint8)
    first[1:5, 2:7, 2:7] = 1
    second[1:5, (5 if overlap else 8):11, 2:7] = 1
    return [first, second]


def test_overlapping_layers_are_refused_where_one_label_per_voxel_is_needed_and_measured_as_layers(tmp_path, capsys):
    path = tmp_path / "overlap.seg.nrrd"
    write_layered(path, two_boxes(overlap=True), [("liver", 1, 0), ("tumour", 1, 1)])

    with pytest.raises(InputError, match="'liver' and 'tumour' overlap"):
        read_label_map(path)
    layers = read_label_layers(path)
    assert [[label.name for label in layer.labels] for layer in layers] == [["liver"], ["tumour"]]

    assert main(["measure", str(path), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["labels"]
    volumes = {row["name"]: row["volume_ml"] for row in rows}
    voxel_ml = 0.8 * 0.8 * 2.0 / 1000
    assert volumes == pytest.approx({"liver": 100 * voxel_ml, "tumour": 120 * voxel_ml})  # shared voxels in both


def test_layers_without_overlap_merge_without_losing_voxels(tmp_path):
    path = tmp_path / "layers.seg.nrrd"
    write_layered(path, two_boxes(overlap=False), [("liver", 1, 0), ("tumour", 1, 1)])
    label_map = read_label_map(path)
    counts = {label.name: int(np.count_nonzero(sitk.GetArrayViewFromImage(label_map.image) == label.value))
              for label in label_map.labels}
    assert counts == {"liver": 100, "tumour": 60}


@pytest.mark.parametrize("broken, message", [({"LabelValue": "abc"}, "not a whole number"),
                                             ({"Layer": "7"}, "layer 7 but the file has 2"),
                                             ({"LabelValue": "-3"}, "label values start at 1")])
def test_damaged_segment_headers_are_clear_errors(tmp_path, broken, message):
    path = tmp_path / "broken.seg.nrrd"
    write_layered(path, two_boxes(overlap=False), [("liver", 1, 0), ("tumour", 1, 1)], {1: broken})
    with pytest.raises(InputError, match=message):
        read_label_map(path)
    assert main(["measure", str(path)]) == 2
