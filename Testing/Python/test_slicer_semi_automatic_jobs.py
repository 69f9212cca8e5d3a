"""Threshold, region growing and snake of the SegToolkit panel run as background jobs (Preview and Apply with
Cancel), on real MRML nodes: the job gives the same voxels as the direct call and cancelling leaves the scene as it
was."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "SegToolkit" / "SegToolkit"))

import SimpleITK as sitk  # noqa: E402
from SegToolkitSlicerLib.jobs import JobRunner  # noqa: E402
from SegToolkitSlicerLib.logic import PREVIEW_NODE_NAME, SegToolkitSlicerLogic  # noqa: E402
from test_slicer_logic import ball_image, markups_at_voxels, scene_volume  # noqa: E402

METHODS = [("threshold", {"lower": 50.0, "upper": 150.0}),
           ("region growing", {"mode": "confidence", "multiplier": 2.5}),
           ("snake", {"iterations": 60})]


@pytest.mark.parametrize("method, options", METHODS, ids=[m for m, _ in METHODS])
def test_preview_job_matches_the_direct_call_and_apply_writes_it(mrml, method, options):
    image, _, inside = ball_image()
    volume = scene_volume(mrml.scene, image, "plain")
    seeds = markups_at_voxels(mrml.scene, volume, [inside]) if method != "threshold" else None
    logic = SegToolkitSlicerLogic(mrml.scene)
    runner = JobRunner(logic.semi_automatic_job(method, volume, seeds, name="Ball", **options)).start().wait()
    assert runner.error is None and not runner.cancelled
    if method == "threshold":
        direct = logic.threshold_labels(volume, options["lower"], options["upper"], name="Ball")
    elif method == "snake":
        direct = logic.snake_labels(volume, seeds, name="Ball", **options)
    else:
        direct = logic.region_growing_labels(volume, seeds, name="Ball", **options)
    assert np.array_equal(sitk.GetArrayFromImage(runner.result.image), sitk.GetArrayFromImage(direct.image))
    assert logic.has_preview()
    applied = JobRunner(logic.semi_automatic_job(method, volume, seeds, name="Ball", apply=True, **options))
    applied.start().wait()
    assert applied.error is None and len(applied.result) == 1
    assert logic.last_output.GetSegmentation().GetSegment(applied.result[0]).GetName() == "Ball"
    assert mrml.scene.GetFirstNodeByName(PREVIEW_NODE_NAME) is None  # the preview became the result


def test_cancelled_job_changes_nothing(mrml):
    image, _, inside = ball_image()
    volume = scene_volume(mrml.scene, image, "plain")
    seeds = markups_at_voxels(mrml.scene, volume, [inside])
    logic = SegToolkitSlicerLogic(mrml.scene)
    segmentations = mrml.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    runner = JobRunner(logic.semi_automatic_job("snake", volume, seeds, apply=True, iterations=100000))
    runner.cancel()  # before the first progress check
    runner.start().wait()
    assert runner.cancelled and runner.error is None
    assert not logic.has_preview()
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == segmentations
