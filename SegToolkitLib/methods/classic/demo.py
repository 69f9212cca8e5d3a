"""Demo step for ``segtoolkit demo``: thresholding, region growing and a snake on the built-in phantom."""

from __future__ import annotations

import time

import numpy as np
import SimpleITK as sitk

from ...io import LabelMap, LabelTable
from ...progress import ProgressCallback, report
from .region_growing import connected_threshold
from .snakes import snake
from .threshold import threshold

SPLEEN, KIDNEY_LEFT, BONE, LIVER = 2, 3, 5, 1
BONE_HU = 200.0


def demo_step(phantom, progress: ProgressCallback | None = None) -> list:
    """Spleen and left kidney by region growing from the phantom's seeds, bone by thresholding above 200 HU,
    liver by a region-driven snake from one seed; label values as in ``phantom.labels``."""
    from ...samples.demo_result import DemoResult

    image = phantom.image
    runs = (
        ("region growing", lambda: {SPLEEN: connected_threshold(image, [phantom.seeds[SPLEEN]]),
                                    KIDNEY_LEFT: connected_threshold(image, [phantom.seeds[KIDNEY_LEFT]])}),
        ("threshold", lambda: {BONE: threshold(image, lower=BONE_HU, min_island_ml=0.5)}),
        ("snake", lambda: {LIVER: snake(image, [phantom.seeds[LIVER]], feature="region", iterations=400)}),
    )
    results = []
    for number, (name, run) in enumerate(runs):
        report(progress, number / len(runs), name)
        start = time.perf_counter()
        masks = run()
        results.append(DemoResult(name, _label_map(image, masks, phantom.labels), time.perf_counter() - start))
    report(progress, 1.0, "classic methods done")
    return results


def _label_map(image: sitk.Image, masks: dict, names: LabelMap) -> LabelMap:
    array = np.zeros(sitk.GetArrayViewFromImage(image).shape, dtype=np.uint8)
    table = LabelTable()
    for value, mask in masks.items():
        array[sitk.GetArrayViewFromImage(mask) != 0] = value
        label = names.labels.get(value)
        table.add(value, label.name, label.color)
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(image)
    return LabelMap(labels, table)
