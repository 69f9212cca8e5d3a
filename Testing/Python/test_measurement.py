"""Label measurements against analytic shapes, SimpleITK and real data (anisotropic, oblique, 2D, absent labels)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from SegToolkitLib.errors import InputError
from SegToolkitLib.io import LabelMap, LabelTable, read_label_map, read_scalar_image
from SegToolkitLib.measurement.shape import COLUMNS_2D, COLUMNS_3D, INTENSITY_COLUMNS, SCHEMA_VERSION, measure

ANISOTROPIC = (0.7, 0.9, 2.0)
# A rotation of about 23 degrees around a tilted axis: index axis k stays closest to LPS z.
OBLIQUE = tuple(sitk.VersorTransform((0.3, 0.5, 0.2), 0.4).GetMatrix())
CENTRE = np.array([12.0, -30.0, 45.0])


def grid_image(size, spacing, direction=None, origin=None) -> sitk.Image:
    """An empty uint8 image whose physical centre is CENTRE (or a given origin)."""
    image = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    image.SetSpacing(spacing)
    if direction is not None:
        image.SetDirection(direction)
    if origin is None:
        middle = np.array(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in size]))
        origin = CENTRE[:len(size)] - (middle - np.array(image.GetOrigin()))
    image.SetOrigin(tuple(float(v) for v in origin))
    return image


def physical_points(image: sitk.Image) -> np.ndarray:
    """LPS coordinates of every voxel centre, shaped like the numpy array plus a last axis."""
    dimension = image.GetDimension()
    index = np.stack(np.meshgrid(*[np.arange(n) for n in image.GetSize()[::-1]], indexing="ij"), axis=-1)[..., ::-1]
    matrix = np.array(image.GetDirection()).reshape(dimension, dimension) @ np.diag(image.GetSpacing())
    return index @ matrix.T + np.array(image.GetOrigin())


def rasterize(image: sitk.Image, inside) -> sitk.Image:
    """Label 1 where ``inside(points relative to CENTRE)`` is true."""
    points = physical_points(image) - CENTRE[:image.GetDimension()]
    label = sitk.GetImageFromArray(inside(points).astype(np.uint8))
    label.CopyInformation(image)
    return label


def ellipsoid(a, b, c, rotation=np.eye(3)):
    """Points inside an ellipsoid with semi-axes a, b, c (mm) along the columns of ``rotation``."""
    def inside(points):
        local = points @ rotation
        return (local[..., 0] / a) ** 2 + (local[..., 1] / b) ** 2 + (local[..., 2] / c) ** 2 <= 1.0
    return inside


def label_map(image: sitk.Image, names=None) -> LabelMap:
    return LabelMap(image, LabelTable.from_names(names or {}).covering([1]))


def row_of(report, value=1) -> dict:
    return next(row for row in report.rows() if row["label"] == value)


def itk_shape(image: sitk.Image, value=1) -> tuple[float, tuple[float, ...], float]:
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.ComputeFeretDiameterOn()
    shape.Execute(image)
    return shape.GetPhysicalSize(value), shape.GetCentroid(value), shape.GetFeretDiameter(value)


@pytest.mark.parametrize("direction", [None, OBLIQUE], ids=["axis-aligned", "oblique"])
def test_sphere_on_anisotropic_grid_matches_analytic_values(direction):
    radius = 15.0
    image = rasterize(grid_image((56, 48, 20), ANISOTROPIC, direction), ellipsoid(radius, radius, radius))
    row = row_of(measure(label_map(image)))
    itk_volume, itk_centroid, _ = itk_shape(image)

    assert row["present"] is True
    assert row["volume_ml"] == pytest.approx(itk_volume / 1000.0, rel=1e-9)
    assert row["volume_ml"] == pytest.approx(4 / 3 * math.pi * radius ** 3 / 1000.0, rel=0.02)
    assert row["surface_area_mm2"] == pytest.approx(4 * math.pi * radius ** 2, rel=0.08)
    assert row["feret_diameter_mm"] == pytest.approx(2 * radius, abs=1.5)
    assert row["recist_long_mm"] == pytest.approx(2 * radius, abs=1.0)
    assert row["recist_short_mm"] == pytest.approx(2 * radius, abs=1.5)
    assert row["recist_slice"] in (9, 10)
    assert row["ellipsoid_volume_ml"] == pytest.approx(row["volume_ml"], rel=0.08)
    np.testing.assert_allclose([row[f"centroid_lps_{a}_mm"] for a in "xyz"], itk_centroid, atol=1e-6)
    np.testing.assert_allclose([row[f"centroid_lps_{a}_mm"] for a in "xyz"], CENTRE, atol=0.3)
    ras = [row[f"centroid_ras_{a}_mm"] for a in "xyz"]
    assert ras == pytest.approx([-CENTRE[0], -CENTRE[1], CENTRE[2]], abs=0.3)


def test_ellipsoid_diameters_recist_and_ellipsoid_estimate():
    a, b, c = 25.0, 15.0, 9.0  # x (left), y (posterior), z (superior)
    image = rasterize(grid_image((80, 40, 14), (0.8, 0.9, 1.5)), ellipsoid(a, b, c))
    row = row_of(measure(label_map(image)))

    true_volume_ml = 4 / 3 * math.pi * a * b * c / 1000.0
    assert row["volume_ml"] == pytest.approx(true_volume_ml, rel=0.03)
    assert row["feret_diameter_mm"] == pytest.approx(2 * a, abs=1.2)
    assert row["recist_long_mm"] == pytest.approx(2 * a, abs=1.0)
    assert row["recist_short_mm"] == pytest.approx(2 * b, abs=1.0)
    assert [row["ellipsoid_length_mm"], row["ellipsoid_width_mm"], row["ellipsoid_height_mm"]] == \
        pytest.approx([2 * a, 2 * b, 2 * c], abs=1.2)
    assert row["ellipsoid_volume_ml"] == pytest.approx(true_volume_ml, rel=0.08)
    p = 1.6075  # Knud Thomsen's approximation of an ellipsoid's surface
    area = 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)
    assert row["surface_area_mm2"] == pytest.approx(area, rel=0.08)


def test_recist_uses_the_index_plane_closest_to_the_patient_axial_plane():
    # Index axis i runs along LPS z (a sagittal-like acquisition); the ellipsoid is long craniocaudally.
    direction = (0.0, 0.0, 1.0,
                 0.0, 1.0, 0.0,
                 1.0, 0.0, 0.0)
    image = rasterize(grid_image((50, 30, 34), (1.5, 1.0, 0.8), direction), ellipsoid(12.0, 8.0, 30.0))
    row = row_of(measure(label_map(image)))

    assert row["feret_diameter_mm"] == pytest.approx(60.0, abs=1.5)
    assert row["recist_long_mm"] == pytest.approx(24.0, abs=1.0)
    assert row["recist_short_mm"] == pytest.approx(16.0, abs=1.0)
    assert abs(row["recist_slice"] - 24.5) <= 3  # along index axis i (the other axes centre at 14.5, 16.5)


def test_rotated_box_on_oblique_grid_gives_the_same_measurements():
    array = np.zeros((12, 30, 40), np.uint8)
    array[3:9, 5:25, 8:30] = 1
    straight = sitk.GetImageFromArray(array)
    straight.SetSpacing(ANISOTROPIC)
    rotated = sitk.GetImageFromArray(array)
    rotated.SetSpacing(ANISOTROPIC)
    rotated.SetDirection(OBLIQUE)
    rotated.SetOrigin((40.0, -12.0, 7.0))
    first, second = row_of(measure(label_map(straight))), row_of(measure(label_map(rotated)))

    for column in ("volume_ml", "surface_area_mm2", "feret_diameter_mm", "recist_long_mm", "recist_short_mm",
                   "ellipsoid_volume_ml"):
        assert second[column] == pytest.approx(first[column], rel=1e-9), column
    assert second["recist_slice"] == first["recist_slice"]
    extents = np.array([22 * 0.7, 20 * 0.9, 6 * 2.0])
    assert first["volume_ml"] == pytest.approx(np.prod(extents) / 1000.0)
    # Sharp edges are rounded by the smoothed mesh: a small box with thick slices loses up to ~10 % of its area.
    assert first["surface_area_mm2"] == pytest.approx(2 * (extents[0] * extents[1] + extents[0] * extents[2]
                                                           + extents[1] * extents[2]), rel=0.12)
    # The surface cuts the box's corners (between voxel centres): within one voxel diagonal of the true diagonal.
    assert first["feret_diameter_mm"] == pytest.approx(np.linalg.norm(extents), abs=np.linalg.norm(ANISOTROPIC))
    assert first["recist_long_mm"] == pytest.approx(np.linalg.norm(extents[:2]), abs=1.0)
    _, itk_centroid, _ = itk_shape(rotated)
    np.testing.assert_allclose([second[f"centroid_lps_{a}_mm"] for a in "xyz"], itk_centroid, atol=1e-6)


def test_mask_touching_the_border_is_closed_and_keeps_its_volume():
    inner = np.zeros((10, 20, 20), np.uint8)
    inner[3:7, 5:15, 5:15] = 1
    border = np.zeros((10, 20, 20), np.uint8)
    border[0:4, 0:10, 10:20] = 1  # touches three faces of the image
    rows = []
    for array in (inner, border):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(ANISOTROPIC)
        rows.append(row_of(measure(label_map(image))))

    assert rows[1]["volume_ml"] == pytest.approx(400 * 0.7 * 0.9 * 2.0 / 1000.0)
    for column in ("volume_ml", "surface_area_mm2", "feret_diameter_mm", "recist_long_mm", "recist_short_mm"):
        assert rows[1][column] == pytest.approx(rows[0][column], rel=1e-9), column


def test_absent_requested_labels_are_reported_without_numbers():
    array = np.zeros((6, 8, 8), np.uint8)
    array[2:4, 2:5, 2:5] = 2
    image = sitk.GetImageFromArray(array)
    names = LabelTable.from_names({1: "liver", 2: "lesion"})
    report = measure(LabelMap(image, names))

    absent, present = report.rows()
    assert (absent["label"], absent["name"], absent["present"]) == (1, "liver", False)
    assert all(absent[column] is None for column in COLUMNS_3D[3:])
    assert present["present"] is True and present["voxel_count"] == 18
    picked = measure(LabelMap(image, names), labels=[2, 7]).rows()
    assert [(row["label"], row["present"]) for row in picked] == [(2, True), (7, False)]


def test_single_voxel_and_single_slice_labels_are_measured():
    array = np.zeros((5, 9, 9), np.uint8)
    array[2, 4, 4] = 1
    array[3, 1:8, 2:5] = 2  # one slice thick
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(ANISOTROPIC)
    rows = measure(LabelMap(image, LabelTable().covering([1, 2]))).rows()

    assert rows[0]["volume_ml"] == pytest.approx(0.7 * 0.9 * 2.0 / 1000.0)
    assert 0 < rows[0]["feret_diameter_mm"] <= math.dist((0, 0, 0), ANISOTROPIC)
    assert rows[1]["recist_slice"] == 3
    assert rows[1]["recist_long_mm"] == pytest.approx(math.hypot(3 * 0.7, 7 * 0.9), abs=1.0)
    assert rows[1]["surface_area_mm2"] > 2 * (3 * 0.7) * (7 * 0.9)


def test_intensity_statistics_match_numpy_and_need_the_same_grid():
    array = np.zeros((6, 10, 12), np.uint8)
    array[1:5, 2:8, 3:10] = 1
    labels = sitk.GetImageFromArray(array)
    labels.SetSpacing(ANISOTROPIC)
    values = np.random.default_rng(3).normal(40.0, 15.0, size=array.shape).astype(np.float32)
    image = sitk.GetImageFromArray(values)
    image.CopyInformation(labels)
    report = measure(label_map(labels), image)
    row = row_of(report)

    inside = values[array == 1].astype(np.float64)
    assert set(INTENSITY_COLUMNS) <= set(report.columns())
    assert row["intensity_mean"] == pytest.approx(inside.mean())
    assert row["intensity_sd"] == pytest.approx(inside.std(ddof=1))
    assert (row["intensity_min"], row["intensity_max"]) == (pytest.approx(inside.min()), pytest.approx(inside.max()))
    assert [row["intensity_p5"], row["intensity_median"], row["intensity_p95"]] == \
        pytest.approx(np.percentile(inside, [5, 50, 95]))
    shifted = sitk.Image(image)
    shifted.SetOrigin((0.0, 0.0, 5.0))
    with pytest.raises(InputError, match="same voxel grid"):
        measure(label_map(labels), shifted)


def test_two_dimensional_label_map_reports_area_perimeter_and_diameters():
    radius = 20.0
    image = rasterize(grid_image((100, 60), (0.5, 0.8)), lambda p: p[..., 0] ** 2 + p[..., 1] ** 2 <= radius ** 2)
    report = measure(label_map(image))
    row = row_of(report)

    assert report.columns() == list(COLUMNS_2D)
    assert row["area_mm2"] == pytest.approx(math.pi * radius ** 2, rel=0.02)
    assert row["perimeter_mm"] == pytest.approx(2 * math.pi * radius, rel=0.05)
    assert row["feret_diameter_mm"] == pytest.approx(2 * radius, abs=0.8)
    assert row["recist_long_mm"] == pytest.approx(2 * radius, abs=0.8)
    assert row["recist_short_mm"] == pytest.approx(2 * radius, abs=0.8)
    assert [row["centroid_lps_x_mm"], row["centroid_lps_y_mm"]] == pytest.approx(CENTRE[:2], abs=0.2)
    assert "volume_ml" not in row


def test_recist_short_axis_is_the_longest_perpendicular_chord_of_a_non_convex_outline():
    # An L shape: 30 x 10 mm bar plus a 10 x 20 mm leg at one end (1 mm pixels, one slice).
    array = np.zeros((1, 40, 40), np.uint8)
    array[0, 5:15, 5:35] = 1
    array[0, 15:35, 5:15] = 1
    image = sitk.GetImageFromArray(array)
    row = row_of(measure(label_map(image)))

    assert row["recist_long_mm"] == pytest.approx(math.hypot(29.0, 29.0) + 1.0, abs=1.0)
    # Perpendicular to the long diagonal, the longest chord crosses the corner square: about 10 * sqrt(2)
    # plus the half-pixel outline, far less than the 30 x 30 bounding box width the convex hull would give.
    assert 12.0 < row["recist_short_mm"] < 22.0


def test_report_json_document_follows_the_schema():
    image = rasterize(grid_image((20, 20, 8), ANISOTROPIC, OBLIQUE), ellipsoid(5.0, 4.0, 4.0))
    report = measure(LabelMap(image, LabelTable.from_names({1: "lesion", 2: "node"})))
    document = json.loads(report.to_json())

    assert document["schema"] == "segtoolkit.measurements"
    assert document["schema_version"] == SCHEMA_VERSION
    assert document["coordinate_system"] == "LPS"
    assert document["geometry"]["direction"] == pytest.approx(list(OBLIQUE))
    assert document["geometry"]["slice_axis"] == 2
    assert document["columns"] == list(COLUMNS_3D)
    lesion, node = document["labels"]
    assert lesion["name"] == "lesion" and lesion["volume_ml"] > 0
    assert node["present"] is False and node["volume_ml"] is None


@pytest.mark.shared_data
def test_msd_spleen_volume_matches_dataset_statistics_and_simpleitk(shared_data):
    folder = shared_data / "msd_spleen_ct_crop"
    case = json.loads((folder / "dataset.json").read_text())["cases"][0]
    labels = read_label_map(folder / case["label"])
    image = read_scalar_image(folder / case["image"])
    row = row_of(measure(labels, image))

    expected = case["label_stats"]["1"]
    assert row["voxel_count"] == expected["voxels"]
    assert row["volume_ml"] == pytest.approx(expected["volume_mm3"] / 1000.0, rel=1e-5)
    itk_volume, itk_centroid, itk_feret = itk_shape(labels.image)
    np.testing.assert_allclose([row[f"centroid_lps_{a}_mm"] for a in "xyz"], itk_centroid, atol=1e-4)
    # ITK measures between boundary voxel centres, we between surface points: within a slice thickness.
    assert abs(row["feret_diameter_mm"] - itk_feret) < case["spacing"][2]
    assert row["recist_long_mm"] <= row["feret_diameter_mm"] + 1e-6
    assert 0 <= row["recist_slice"] < case["size"][2]
    inside = sitk.GetArrayViewFromImage(image)[sitk.GetArrayViewFromImage(labels.image) == 1]
    assert row["intensity_mean"] == pytest.approx(float(inside.mean()))
    assert row["intensity_p95"] == pytest.approx(float(np.percentile(inside, 95)))


def test_two_dimensional_fitted_ellipse_on_an_oblique_grid():
    a, b, angle = 30.0, 18.0, math.radians(35.0)  # semi-axes (mm) and the major axis' angle to LPS x
    direction = (math.cos(0.3), -math.sin(0.3), math.sin(0.3), math.cos(0.3))

    def inside(p):
        u = p[..., 0] * math.cos(angle) + p[..., 1] * math.sin(angle)
        v = -p[..., 0] * math.sin(angle) + p[..., 1] * math.cos(angle)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0

    row = row_of(measure(label_map(rasterize(grid_image((180, 150), (0.45, 0.6), direction), inside))))
    h = ((a - b) / (a + b)) ** 2
    circumference = math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
    assert row["ellipse_semi_major_mm"] == pytest.approx(a, abs=0.2)
    assert row["ellipse_semi_minor_mm"] == pytest.approx(b, abs=0.2)
    assert row["ellipse_angle_deg"] == pytest.approx(35.0, abs=1.0)
    assert row["ellipse_circumference_mm"] == pytest.approx(circumference, abs=1.0)
    assert [row["ellipse_centre_lps_x_mm"], row["ellipse_centre_lps_y_mm"]] == pytest.approx(CENTRE[:2], abs=0.2)
    assert row["area_cm2"] == pytest.approx(row["area_mm2"] / 100.0)
    assert row["touches_edge"] is False and row["warning"] is None


def test_labels_touching_the_scan_edge_are_flagged_with_the_shared_words():
    from SegToolkitLib.measurement.boundary import CUT_OFF_WARNING, labels_touching_edge

    array = np.zeros((6, 12, 12), np.uint8)
    array[0:3, 4:8, 4:8] = 1   # cut by the first slice
    array[2:4, 5:7, 9:12] = 2  # cut by the last column
    array[2:4, 1:3, 1:3] = 3   # inside
    rows = {row["label"]: row for row in measure(label_map(sitk.GetImageFromArray(array))).rows()}
    assert [rows[v]["touches_edge"] for v in (1, 2, 3)] == [True, True, False]
    assert rows[1]["warning"] == CUT_OFF_WARNING and rows[3]["warning"] is None
    # a 2D image stored as a one-slice volume: the slice faces are no edge
    single = sitk.GetImageFromArray(array[2:3])
    assert set(labels_touching_edge(single)) == {2}
    assert labels_touching_edge(single)[2] == ["i-last"]


@pytest.mark.shared_data
def test_hc18_head_circumference_from_the_fitted_ellipse_and_cut_off_ct_organs(shared_data):
    folder = shared_data / "hc18_fetal_head_ultrasound"
    for case in json.loads((folder / "dataset.json").read_text())["cases"][::30]:
        row = row_of(measure(read_label_map(folder / case["label"])))
        # the reference masks include the drawn outline (about +1 mm); a jagged outline's perimeter reads longer
        assert row["ellipse_circumference_mm"] == pytest.approx(case["reference_head_circumference_mm"], abs=2.5)
    ct = shared_data / "totalsegmentator_ct_examples" / "labels" / "ct_dicom_example.nii.gz"
    rows = {row["label"]: row for row in measure(read_label_map(ct), labels=[1, 5]).rows()}
    assert rows[5]["touches_edge"] and rows[5]["warning"] == "touches the scan's edge: the volume is a lower bound"


def test_solidity_of_convex_bent_empty_and_line_regions():
    from SegToolkitLib.measurement.shape import solidity

    rows, columns = np.mgrid[:41, :41]
    for radius in (4, 10, 15):
        assert solidity(np.hypot(rows - 20, columns - 20) <= radius) > 0.99
    square = np.zeros((20, 20), bool)
    square[3:15, 3:15] = True
    assert solidity(square) == pytest.approx(1.0)
    bent = np.zeros((20, 20), bool)
    bent[2:18, 2:6] = bent[14:18, 2:18] = True  # an L covers under half of its hull
    # the hull of the centres: the 16x16 square less the 12+11+...+1 lattice points beyond its cut corner
    assert solidity(bent) == pytest.approx(bent.sum() / (16 * 16 - 12 * 13 / 2))
    assert solidity(np.zeros((5, 5), bool)) == 0.0
    line = np.zeros((5, 9), bool)
    line[2, 1:8] = True
    assert solidity(line) == pytest.approx(1.0)
