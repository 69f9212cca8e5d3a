"""Evaluation metrics: agreement with MONAI, empty-label conventions, grids and resampling."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SegToolkitLib.errors import InputError
from SegToolkitLib.io import LabelMap, LabelTable
from SegToolkitLib.measurement.evaluation import COLUMNS, compare

SPACING = (0.8, 1.1, 2.5)
OBLIQUE = tuple(sitk.VersorTransform((0.3, 0.5, 0.2), 0.4).GetMatrix())
MONAI_DEPRECATION = "ignore:.*always_return_as_numpy.*"  # raised inside MONAI's own surface-distance code


def image_of(array: np.ndarray, spacing=SPACING, direction=None, origin=None) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing[:array.ndim])
    if direction is not None:
        image.SetDirection(direction)
    if origin is not None:
        image.SetOrigin(origin)
    return image


def labels_of(image: sitk.Image, names=None) -> LabelMap:
    values = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(image)) if v > 0]
    return LabelMap(image, LabelTable.from_names(names or {}).covering(values))


def two_ellipsoids(shape=(16, 30, 36)) -> tuple[np.ndarray, np.ndarray]:
    """Reference and prediction with labels 1 and 2 that overlap imperfectly (array order z, y, x)."""
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, SPACING[::-1])], indexing="ij")
    reference = np.zeros(shape, np.uint8)
    prediction = np.zeros(shape, np.uint8)
    reference[(x - 12) ** 2 / 64 + (y - 14) ** 2 / 49 + (z - 18) ** 2 / 150 <= 1] = 1
    prediction[(x - 13.5) ** 2 / 80 + (y - 13) ** 2 / 40 + (z - 15) ** 2 / 170 <= 1] = 1
    reference[(x - 20) ** 2 / 9 + (y - 25) ** 2 / 16 + (z - 20) ** 2 / 80 <= 1] = 2
    prediction[(x - 21) ** 2 / 12 + (y - 24) ** 2 / 9 + (z - 25) ** 2 / 60 <= 1] = 2
    prediction[0:2, 0:3, 30:33] = 2  # a distant false-positive island raises the distances
    return reference, prediction


@pytest.mark.filterwarnings(MONAI_DEPRECATION)
@pytest.mark.parametrize("direction", [None, OBLIQUE], ids=["axis-aligned", "oblique"])
def test_metrics_agree_with_monai(direction):
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("monai.metrics")
    reference, prediction = two_ellipsoids()
    rows = compare(labels_of(image_of(prediction, direction=direction)),
                   labels_of(image_of(reference, direction=direction)))

    for value in (1, 2):
        row = next(r for r in rows if r["label"] == value)
        predicted = torch.as_tensor(prediction == value)[None, None].float()
        target = torch.as_tensor(reference == value)[None, None].float()
        spacing = list(SPACING[::-1])  # MONAI takes spacing in array order
        dice = float(metrics.compute_dice(predicted, target)[0, 0])
        hd95 = float(metrics.compute_hausdorff_distance(predicted, target, percentile=95, spacing=spacing)[0, 0])
        assd = float(metrics.compute_average_surface_distance(predicted, target, symmetric=True,
                                                              spacing=spacing)[0, 0])
        assert row["status"] == "ok"
        assert row["dice"] == pytest.approx(dice, rel=1e-6)
        assert row["jaccard"] == pytest.approx(dice / (2 - dice), rel=1e-6)
        assert row["hd95_mm"] == pytest.approx(hd95, rel=1e-5)
        assert row["assd_mm"] == pytest.approx(assd, rel=1e-5)
        assert 0 < row["assd_mm"] < row["hd95_mm"]


@pytest.mark.filterwarnings(MONAI_DEPRECATION)
def test_two_dimensional_metrics_agree_with_monai():
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("monai.metrics")
    reference, prediction = (array[8] for array in two_ellipsoids())
    row = compare(labels_of(image_of(prediction)), labels_of(image_of(reference)), mean=False)[0]
    predicted = torch.as_tensor(prediction == 1)[None, None].float()
    target = torch.as_tensor(reference == 1)[None, None].float()
    spacing = list(SPACING[:2][::-1])
    assert row["hd95_mm"] == pytest.approx(float(metrics.compute_hausdorff_distance(
        predicted, target, percentile=95, spacing=spacing)[0, 0]), rel=1e-5)
    assert row["assd_mm"] == pytest.approx(float(metrics.compute_average_surface_distance(
        predicted, target, symmetric=True, spacing=spacing)[0, 0]), rel=1e-5)


def test_identical_and_shifted_boxes():
    reference = np.zeros((10, 12, 12), np.uint8)
    reference[2:8, 3:9, 3:9] = 1
    shifted = np.roll(reference, 1, axis=0)  # one slice (2.5 mm) up
    same = compare(labels_of(image_of(reference)), labels_of(image_of(reference)), mean=False)[0]
    moved = compare(labels_of(image_of(shifted)), labels_of(image_of(reference)), mean=False)[0]

    assert (same["dice"], same["jaccard"], same["hd95_mm"], same["assd_mm"]) == (1.0, 1.0, 0.0, 0.0)
    assert same["volume_difference_ml"] == 0.0 and same["relative_volume_difference_pct"] == 0.0
    assert moved["dice"] == pytest.approx(5 / 6)
    assert moved["jaccard"] == pytest.approx(5 / 7)
    assert moved["hd95_mm"] == pytest.approx(2.5)
    assert moved["volume_difference_ml"] == 0.0


def test_empty_labels_follow_the_documented_conventions():
    reference = np.zeros((8, 10, 10), np.uint8)
    prediction = np.zeros((8, 10, 10), np.uint8)
    reference[2:6, 2:6, 2:6] = 1             # label 1 agrees exactly
    reference[1:3, 7:9, 7:9] = 2             # label 2 missed by the prediction
    prediction[5:7, 7:9, 1:3] = 3            # label 3 only in the prediction
    prediction[2:6, 2:6, 2:6] = 1
    names = {1: "organ", 2: "lesion", 3: "node", 4: "cyst"}  # label 4 is absent from both
    rows = compare(labels_of(image_of(prediction), names), labels_of(image_of(reference), names))
    by_label = {row["label"]: row for row in rows}

    assert [row["label"] for row in rows] == [1, 2, 3, 4, "mean"]
    assert all(list(row) == list(COLUMNS) for row in rows)
    assert by_label[2]["status"] == "prediction_empty"
    assert (by_label[2]["dice"], by_label[2]["hd95_mm"], by_label[2]["assd_mm"]) == (0.0, None, None)
    assert by_label[2]["relative_volume_difference_pct"] == pytest.approx(-100.0)
    assert by_label[3]["status"] == "reference_empty"
    assert (by_label[3]["dice"], by_label[3]["hd95_mm"], by_label[3]["relative_volume_difference_pct"]) == \
        (0.0, None, None)
    assert by_label[3]["volume_difference_ml"] == pytest.approx(8 * 0.8 * 1.1 * 2.5 / 1000.0)
    assert by_label[4]["status"] == "both_empty" and by_label[4]["name"] == "cyst"
    assert (by_label[4]["dice"], by_label[4]["hd95_mm"], by_label[4]["assd_mm"]) == (1.0, 0.0, 0.0)
    mean = by_label["mean"]
    assert by_label[2]["volume_difference_ml"] == pytest.approx(-8 * 0.8 * 1.1 * 2.5 / 1000.0)  # signed
    assert mean["status"] == "mean" and mean["name"] == "mean of 2 labels"
    assert mean["dice"] == pytest.approx(1 / 2)     # labels 1-2: label 3 (absent from the reference) and 4 left out
    assert mean["hd95_mm"] == 0.0                   # distances only where defined (label 1)


def test_different_grids_need_resample_and_resampling_uses_the_reference_grid():
    reference = np.zeros((6, 9, 12), np.uint8)
    reference[1:5, 2:7, 3:10] = 1
    reference_image = image_of(reference, direction=OBLIQUE, origin=(5.0, -3.0, 2.0))
    # The same labels on a three times finer grid whose voxel 3i+1 sits on reference voxel i.
    fine = reference.repeat(3, axis=0).repeat(3, axis=1).repeat(3, axis=2)
    fine_image = image_of(fine, spacing=tuple(s / 3 for s in SPACING), direction=OBLIQUE)
    fine_image.SetOrigin(reference_image.TransformContinuousIndexToPhysicalPoint((-1 / 3, -1 / 3, -1 / 3)))

    with pytest.raises(InputError, match="--resample"):
        compare(labels_of(fine_image), labels_of(reference_image))
    row = compare(labels_of(fine_image), labels_of(reference_image), resample=True, mean=False)[0]
    assert (row["status"], row["dice"], row["hd95_mm"]) == ("ok", 1.0, 0.0)
    flat = image_of(reference[2])
    with pytest.raises(InputError, match="same dimension"):
        compare(labels_of(flat), labels_of(reference_image), resample=True)


def test_selected_labels_only():
    reference, prediction = two_ellipsoids()
    rows = compare(labels_of(image_of(prediction)), labels_of(image_of(reference)), labels=[2], mean=False)
    assert [row["label"] for row in rows] == [2]


def test_scoring_region_two_dimensional_areas_and_cut_off_warning():
    from SegToolkitLib.measurement.boundary import CUT_OFF_WARNING
    from SegToolkitLib.measurement.evaluation import COLUMNS_2D

    reference = np.zeros((6, 12, 12), np.uint8)
    reference[1:5, 3:9, 3:9] = 1
    prediction = reference.copy()
    prediction[1, 3:9, 3:9] = 0     # wrong only on slice 1
    prediction[3:5, 3:9, 9:12] = 1  # and too large on slices 3-4, up to the image's edge
    rows = compare(labels_of(image_of(prediction)), labels_of(image_of(reference)))
    assert rows[0]["dice"] < 0.9 and rows[0]["warning"] == CUT_OFF_WARNING
    region = np.zeros(reference.shape, bool)
    region[2] = True  # only slice 2 was annotated
    scored = compare(labels_of(image_of(prediction)), labels_of(image_of(reference)), region=region)
    assert scored[0]["dice"] == 1.0 and scored[0]["volume_difference_ml"] == 0.0
    with pytest.raises(InputError, match="empty"):
        compare(labels_of(image_of(prediction)), labels_of(image_of(reference)), region=np.zeros_like(region))
    flat = compare(labels_of(image_of(prediction[3])), labels_of(image_of(reference[3])))
    assert all(list(row) == list(COLUMNS_2D) for row in flat)
    area = 6 * 6 * SPACING[0] * SPACING[1]
    assert flat[0]["area_reference_mm2"] == pytest.approx(area)
    assert flat[0]["area_difference_mm2"] == pytest.approx(6 * 3 * SPACING[0] * SPACING[1])  # signed: larger
