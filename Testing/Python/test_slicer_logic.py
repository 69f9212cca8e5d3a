"""The SegToolkit module logic on real MRML nodes (slicer-core wheel): each method runs on a volume node (plain,
oblique, under a transform) with seeds from a markups node and writes segments on the same voxels as
SegToolkitLib called directly on the image."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer")

import SimpleITK as sitk  # noqa: E402
import vtk  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "SegToolkit" / "SegToolkit"))

from SegToolkitSlicerLib import mrml as adapter  # noqa: E402
from SegToolkitSlicerLib.jobs import Job, JobRunner, run_job  # noqa: E402
from SegToolkitSlicerLib.logic import PREVIEW_NODE_NAME, SegToolkitSlicerLogic, single_label  # noqa: E402

from SegToolkitLib.errors import InputError  # noqa: E402

GEOMETRIES = ["plain", "oblique", "transformed"]


def ball_image(direction=None) -> tuple[sitk.Image, np.ndarray, tuple[int, int, int]]:
    """A bright ellipsoid (100) in a dark noisy background, its truth mask and a voxel index inside it."""
    z, y, x = np.mgrid[:20, :36, :40]
    truth = ((x - 20) ** 2 + (y - 17) ** 2 + ((z - 10) * 2) ** 2) <= 9 ** 2
    voxels = np.where(truth, 100.0, 0.0) + np.random.default_rng(0).normal(0, 5, truth.shape)
    image = sitk.GetImageFromArray(voxels.astype(np.float32))
    image.SetSpacing((0.9, 1.0, 2.0))
    image.SetOrigin((5.0, -3.0, 10.0))
    if direction is not None:
        image.SetDirection(direction)
    return image, truth, (20, 17, 10)


def oblique_direction() -> tuple[float, ...]:
    transform = sitk.VersorTransform((0.2, 0.3, 0.9), np.radians(35))
    return transform.GetMatrix()


def scene_volume(scene, image: sitk.Image, geometry: str):
    """A volume node holding ``image``; for "transformed" it sits under a rotation + translation."""
    volume = adapter.add_volume_from_sitk(scene, image, "ball")
    if geometry == "transformed":
        node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
        transform = vtk.vtkTransform()
        transform.Translate(12.0, -4.0, 7.0)
        transform.RotateWXYZ(25, 0.1, 0.6, 0.8)
        node.SetMatrixTransformToParent(transform.GetMatrix())
        volume.SetAndObserveTransformNodeID(node.GetID())
    return volume


def markups_at_voxels(scene, volume, indices, name="seeds"):
    """A markups point list (no transform) with a point at the world position of each voxel index."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    for index in indices:
        node.AddControlPoint((adapter.ijk_to_world_ras(volume) @ np.r_[np.asarray(index, float), 1.0])[:3].tolist())
    return node


def segment_array(segmentation, segment_id, volume) -> np.ndarray:
    label_map = adapter.segmentation_to_label_map(segmentation, volume, [segment_id])
    return sitk.GetArrayFromImage(label_map.image) > 0


def make_case(mrml, geometry):
    image, truth, inside = ball_image(oblique_direction() if geometry == "oblique" else None)
    volume = scene_volume(mrml.scene, image, geometry)
    seeds = markups_at_voxels(mrml.scene, volume, [inside])
    return image, truth, inside, volume, seeds


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_snake_writes_the_segment_segtoolkitlib_computes(mrml, geometry):
    from SegToolkitLib.methods.classic.snakes import snake

    image, truth, inside, volume, seeds = make_case(mrml, geometry)
    logic = SegToolkitSlicerLogic(mrml.scene)
    ids = logic.snake(volume, seeds, iterations=200, name="Ball")
    segmentation = mrml.scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    assert segmentation.GetSegmentation().GetSegment(ids[0]).GetName() == "Ball"
    assert segmentation.GetParentTransformNode() is volume.GetParentTransformNode()
    result = segment_array(segmentation, ids[0], volume)
    direct = sitk.GetArrayFromImage(snake(image, [image.TransformIndexToPhysicalPoint(inside)], iterations=200)) > 0
    np.testing.assert_array_equal(result, direct)
    assert result[inside[::-1]]
    assert (result & truth).sum() > 0.9 * result.sum()  # grew inside the ball


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_threshold_segments_the_bright_voxels(mrml, geometry):
    image, truth, inside, volume, _ = make_case(mrml, geometry)
    logic = SegToolkitSlicerLogic(mrml.scene)
    ids = logic.threshold(volume, 50, None, name="Bright")
    segmentation = mrml.scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    expected = sitk.GetArrayFromImage(image) >= 50
    np.testing.assert_array_equal(segment_array(segmentation, ids[0], volume), expected)
    assert (expected == truth).mean() > 0.999  # the noise is far below the threshold
    with pytest.raises(InputError, match="lower threshold 9 is above upper threshold 1"):
        logic.threshold(volume, 9, 1)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("mode", ["connected", "confidence", "competitive"])
def test_region_growing_writes_the_segment_segtoolkitlib_computes(mrml, geometry, mode):
    from SegToolkitLib.methods.classic import region_growing as growing

    image, truth, inside, volume, seeds = make_case(mrml, geometry)
    outside = (3, 3, 3)
    competitors = markups_at_voxels(mrml.scene, volume, [outside], "background")
    logic = SegToolkitSlicerLogic(mrml.scene)
    ids = logic.region_growing(volume, seeds, mode=mode, name="Ball", competitors=competitors)
    segmentation = mrml.scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    result = segment_array(segmentation, ids[0], volume)
    seed = [image.TransformIndexToPhysicalPoint(inside)]
    direct = {"connected": lambda: growing.connected_threshold(image, seed),
              "confidence": lambda: growing.confidence_connected(image, seed),
              "competitive": lambda: growing.competitive_growing(
                  image, {1: seed, 0: [image.TransformIndexToPhysicalPoint(outside)]})}[mode]()
    np.testing.assert_array_equal(result, sitk.GetArrayFromImage(direct) > 0)
    dice = 2 * (result & truth).sum() / (result.sum() + truth.sum())
    assert dice > 0.8  # the method itself is tested in test_region_growing; here: wiring and geometry


def test_competitive_growing_needs_competitors(mrml):
    _, _, _, volume, seeds = make_case(mrml, "plain")
    with pytest.raises(InputError, match="competing seeds"):
        SegToolkitSlicerLogic(mrml.scene).region_growing(volume, seeds, mode="competitive")


def test_snake_session_steps_from_markups(mrml):
    image, truth, inside, volume, seeds = make_case(mrml, "transformed")
    session = SegToolkitSlicerLogic(mrml.scene).snake_session(volume, seeds)
    first = sitk.GetArrayFromImage(session.step(1)).astype(bool)
    later = sitk.GetArrayFromImage(session.step(30)).astype(bool)
    assert first[inside[::-1]] and later.sum() > first.sum()


def test_no_seeds_is_a_clear_error(mrml):
    image, truth, inside, volume, _ = make_case(mrml, "plain")
    empty = mrml.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "empty seeds")
    with pytest.raises(InputError, match="empty seeds: has no control points"):
        SegToolkitSlicerLogic(mrml.scene).snake(volume, empty)


def test_preview_then_apply_keeps_existing_segments(mrml):
    image, truth, inside, volume, _ = make_case(mrml, "oblique")
    logic = SegToolkitSlicerLogic(mrml.scene)
    output = logic.output_segmentation(volume)
    mask = sitk.GetImageFromArray(truth.astype(np.uint8))
    mask.CopyInformation(image)
    first = logic.write(single_label(mask, "Ball"), volume, output)
    preview = logic.show_preview(single_label(mask, "Ball"), volume)
    assert preview.GetName() == PREVIEW_NODE_NAME and preview.GetSegmentation().GetNumberOfSegments() == 1
    second = logic.apply_preview(output)
    assert mrml.scene.GetFirstNodeByName(PREVIEW_NODE_NAME) is None
    names = [output.GetSegmentation().GetSegment(i).GetName() for i in first + second]
    assert names == ["Ball", "Ball (2)"]
    np.testing.assert_array_equal(segment_array(output, second[0], volume), truth)
    with pytest.raises(InputError, match="press Preview first"):
        logic.apply_preview(output)


def test_job_runner_finishes_on_the_polling_thread():
    threads = {}

    def compute(progress, cancel):
        threads["compute"] = threading.current_thread()
        progress(0.5, "half way")
        return 21

    def finish(value):
        threads["finish"] = threading.current_thread()
        return value * 2

    runner = JobRunner(Job("double", compute, finish)).start().wait()
    assert runner.result == 42 and runner.error is None and not runner.cancelled
    assert threads["finish"] is threading.current_thread() is not threads["compute"]
    assert run_job(Job("double", compute, finish)) == 42


def test_job_runner_cancel_and_errors():
    started = threading.Event()

    def slow(progress, cancel):
        started.set()
        while True:
            progress(0.1, "working")  # raises CancelledError once cancelled

    finished = []
    runner = JobRunner(Job("slow", slow, finished.append)).start()
    started.wait(5)
    runner.cancel()
    runner.wait()
    assert runner.cancelled and not finished and runner.message == "cancelled"

    def broken(progress, cancel):
        raise InputError("bad input")

    runner = JobRunner(Job("broken", broken, finished.append)).start().wait()
    assert isinstance(runner.error, InputError) and not finished and "bad input" in runner.message


@pytest.mark.parametrize("geometry", ["oblique", "transformed"])
def test_measurement_table_matches_segtoolkitlib(mrml, geometry, tmp_path):
    from SegToolkitLib.io import LabelMap, LabelTable
    from SegToolkitLib.measurement.shape import measure

    _, truth, inside, volume, _ = make_case(mrml, geometry)
    image = adapter.volume_to_sitk(volume)  # world LPS: what the logic reads and writes
    labels = truth.astype(np.uint8)
    labels[:, :, :6] = 2  # a slab as a second structure
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    table = LabelTable()
    table.add(1, "liver")
    table.add(2, "slab")
    logic = SegToolkitSlicerLogic(mrml.scene)
    ids = logic.write(LabelMap(label_image, table), volume)
    segmentation = mrml.scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    table_node = logic.measure(segmentation, volume)
    rows = adapter.table_to_rows(table_node)
    expected = measure(LabelMap(label_image, table), image).rows()
    assert [row["segment_id"] for row in rows] == ids
    assert [row["name"] for row in rows] == ["liver", "slab"]
    for row, want in zip(rows, expected):
        for column in ("voxel_count", "volume_ml", "feret_diameter_mm", "recist_long_mm", "recist_short_mm",
                       "ellipsoid_volume_ml", "intensity_mean", "intensity_sd", "intensity_max"):
            assert row[column] == pytest.approx(want[column], rel=1e-6), column
    assert rows[0]["volume_ml"] == pytest.approx(truth.sum() * 0.9 * 1.0 * 2.0 / 1000)
    # centroids are reported in world coordinates (where Slicer shows the segment)
    centre_ras = adapter.ijk_to_world_ras(volume) @ np.r_[np.argwhere(truth).mean(axis=0)[::-1], 1.0]
    assert [rows[0][f"centroid_ras_{axis}_mm"] for axis in "xyz"] == pytest.approx(centre_ras[:3], abs=1e-3)
    # the slab lies on the image's first i face: cut off by the scan, flagged with the shared words
    from SegToolkitLib.measurement.boundary import CUT_OFF_WARNING

    assert rows[1]["warning"] == CUT_OFF_WARNING and not rows[0]["warning"]
    assert logic.cut_off_segments(table_node) == ["slab"]
    path = tmp_path / "measurements.csv"
    logic.export_table_csv(table_node, str(path))
    assert "recist_long_mm" in path.read_text().splitlines()[0]


def test_requirements_never_touch_slicers_own_packages(tmp_path):
    from SegToolkitSlicerLib.dependencies import missing, read_requirements, requirements_path

    shipped = Path(__file__).resolve().parents[2] / "SegToolkit/SegToolkit/Resources/requirements.txt"
    assert requirements_path() == shipped  # what the Segment Editor effects install from
    assert "scikit-image>=0.22" in read_requirements(shipped)
    path = tmp_path / "requirements.txt"
    path.write_text("numpy>=2\nSimpleITK\ntorch>=2  # from the PyTorch extension\nscipy>=1.10\nno-such-pkg-xyz\n")
    assert read_requirements(path) == ["scipy>=1.10", "no-such-pkg-xyz"]
    assert missing(read_requirements(path)) == ["no-such-pkg-xyz"]
