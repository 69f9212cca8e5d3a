"""The :class:`LabelMap` type (an integer image and its label table) and checks on label images.

It lives below :mod:`.images` and the format modules (``.seg.nrrd``, DICOM SEG, RTSTRUCT) so that each of them can
build label maps without importing the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .labels import LabelTable


@dataclass
class LabelMap:
    """A label map (integer image, 0 = background) and the names and colours of its labels."""

    image: sitk.Image
    labels: LabelTable

    def present_values(self) -> list[int]:
        """Label values (> 0) that occur in the image."""
        return label_values(self.image)


def as_label_image(image: sitk.Image, name: str) -> sitk.Image:
    """Check ``image`` holds non-negative integers and return it with an unsigned integer pixel type."""
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise InputError(f"{name}: label map has non-integer values; give a label map with whole-number "
                             "labels (0 = background), not a probability or intensity image")
    if array.size and array.min() < 0:
        raise InputError(f"{name}: label map has negative values (minimum {array.min():g}); labels must be "
                         "0 (background) or positive integers")
    maximum = int(array.max()) if array.size else 0
    pixel_type = sitk.sitkUInt8 if maximum < 256 else sitk.sitkUInt16 if maximum < 65536 else sitk.sitkUInt32
    return sitk.Cast(image, pixel_type) if image.GetPixelID() != pixel_type else image


def label_values(image: sitk.Image) -> list[int]:
    """Sorted label values > 0 present in an integer image."""
    values = np.unique(sitk.GetArrayViewFromImage(image))
    return [int(v) for v in values if v > 0]


def merge_tables(primary: LabelTable, fallback: LabelTable) -> LabelTable:
    """``primary``'s labels, plus those of ``fallback`` that ``primary`` does not name."""
    merged = LabelTable(dict(fallback.labels))
    merged.labels.update(primary.labels)
    return merged


def merge_layers(layers: list[LabelMap], name: str) -> LabelMap:
    """One label map from several layers, renumbering labels 1..N in layer order.

    Raises :class:`InputError` when two segments share a voxel: that would lose voxels silently.
    """
    merged = np.zeros(sitk.GetArrayViewFromImage(layers[0].image).shape, dtype=np.uint16)
    owner: dict[int, str] = {}
    table = LabelTable()
    for layer in layers:
        array = sitk.GetArrayViewFromImage(layer.image)
        for label in layer.labels:
            mask = array == label.value
            new_value = len(table) + 1
            taken = merged[mask]
            if np.any(taken):
                other, count = owner[int(taken[taken > 0][0])], int(np.count_nonzero(taken))
                raise InputError(f"{name}: segments {other!r} and {label.name!r} overlap ({count} voxels); "
                                 "this command needs one label per voxel. Measure the layers with "
                                 "'segtoolkit measure', or remove the overlap (e.g. in Slicer's Segment Editor: "
                                 "Logical operators) and save again")
            merged[mask] = new_value
            owner[new_value] = label.name
            table.add(new_value, label.name, label.color)
    out = sitk.GetImageFromArray(merged)
    out.CopyInformation(layers[0].image)
    return LabelMap(as_label_image(out, name), table)
