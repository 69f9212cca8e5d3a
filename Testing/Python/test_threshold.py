import numpy as np
import pytest
import SimpleITK as sitk
from classic_helpers import centre_point, dice, ellipsoid_image, with_geometry

from SegToolkitLib.errors import InputError
from SegToolkitLib.methods.classic import hysteresis, otsu, threshold


def test_range_threshold_matches_truth_and_keeps_geometry():
    image, truth = ellipsoid_image()
    mask = threshold(image, lower=50)
    assert dice(mask, truth) > 0.98
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetDirection() == image.GetDirection() and mask.GetOrigin() == image.GetOrigin()


def test_otsu_binary_and_multiclass():
    image, truth = ellipsoid_image()
    assert dice(otsu(image), truth) > 0.98
    array = np.zeros((20, 30), np.float32)
    array[:, 10:20], array[:, 20:] = 100, 200
    labels = sitk.GetArrayFromImage(otsu(with_geometry(array, (1, 1)), classes=3))
    assert set(np.unique(labels)) == {0, 1, 2}
    assert (labels[:, 0] == 0).all() and (labels[:, 15] == 1).all() and (labels[:, 25] == 2).all()


def test_hysteresis_keeps_only_regions_touching_strong_voxels():
    array = np.zeros((40, 40), np.float32)
    array[5:15, 5:15] = 60
    array[8, 8] = 120  # strong voxel inside the first square only
    array[25:35, 25:35] = 60
    mask = sitk.GetArrayFromImage(hysteresis(with_geometry(array, (1, 1)), 50, 100))
    assert mask[10, 10] == 1 and mask[30, 30] == 0


def test_seed_component_largest_fill_and_islands():
    array = np.zeros((60, 60), np.float32)
    array[5:35, 5:35] = 100
    array[15:20, 15:20] = 0  # a hole
    array[45:55, 45:55] = 100  # a second, smaller square (100 mm² at 1 mm)
    image = with_geometry(array, (1, 1), origin=(3.0, 4.0))
    at_seed = sitk.GetArrayFromImage(threshold(image, 50, seeds=[(3.0 + 50, 4.0 + 50)]))
    assert at_seed[50, 50] and not at_seed[10, 10]
    largest = sitk.GetArrayFromImage(threshold(image, 50, largest=True, fill=True))
    assert largest[17, 17] and largest[10, 10] and not largest[50, 50]
    no_islands = sitk.GetArrayFromImage(threshold(image, 50, min_island_ml=0.2))
    assert no_islands[10, 10] and not no_islands[50, 50]


def test_threshold_bad_inputs():
    image, _ = ellipsoid_image()
    with pytest.raises(InputError, match="above upper"):
        threshold(image, 100, 50)
    with pytest.raises(InputError, match="empty"):
        threshold(image, 1000)
    with pytest.raises(InputError, match="floods"):
        threshold(image, -1000)
    constant = with_geometry(np.full((10, 10), 3.0, np.float32), (1, 1))
    with pytest.raises(InputError, match="same value"):
        threshold(constant, 1)
    nan = sitk.GetArrayFromImage(image)
    nan[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        threshold(with_geometry(nan, (1, 1, 1)), 1)
    with pytest.raises(InputError, match="3D"):
        threshold(image, 50, seeds=[(1.0, 2.0)])
    with pytest.raises(InputError, match="outside the image"):
        threshold(image, 50, seeds=[(1e4, 0.0, 0.0)])
    with pytest.raises(InputError, match="not inside"):
        threshold(image, 50, seeds=[image.TransformIndexToPhysicalPoint((0, 0, 0))])


def test_seed_in_lps_on_oblique_image_selects_the_intended_object():
    image, truth = ellipsoid_image()
    mask = threshold(image, lower=50, seeds=[centre_point(truth)])
    assert dice(mask, truth) > 0.98
