import json

import numpy as np
import pytest
import SimpleITK as sitk
from classic_helpers import OBLIQUE_3D, centre_point, dice, ellipsoid_image, with_geometry

from SegToolkitLib.errors import InputError
from SegToolkitLib.methods.classic import competitive_growing, confidence_connected, connected_threshold, grow
from SegToolkitLib.methods.classic.region_growing import clean_grown_region


def test_connected_threshold_default_range_from_one_seed_on_oblique_anisotropic_image():
    image, truth = ellipsoid_image()
    mask = connected_threshold(image, [centre_point(truth)])
    assert dice(mask, truth) > 0.95
    assert mask.GetSpacing() == image.GetSpacing() and mask.GetDirection() == image.GetDirection()


def test_explicit_range_and_ijk_seed():
    image, truth = ellipsoid_image()
    mask = connected_threshold(image, [(32, 32, 12)], lower=50, upper=200, ijk=True)
    assert dice(mask, truth) > 0.95


def test_confidence_connected():
    image, truth = ellipsoid_image(noise=8.0)
    assert dice(confidence_connected(image, [centre_point(truth)]), truth) > 0.95


def test_mask_restricts_growing():
    image, truth = ellipsoid_image()
    half = sitk.GetArrayFromImage(truth)
    half[:, :, :32] = 0
    result = grow(image, [centre_point(truth)], mask=with_geometry(half, truth.GetSpacing(), truth.GetOrigin(),
                                                                     truth.GetDirection(), sitk.sitkUInt8))
    assert dice(result, half) > 0.95


def two_touching_discs():
    """Two touching discs of different brightness on a dark background (labels 1 and 2)."""
    yy, xx = np.mgrid[:80, :120]
    left = (yy - 40) ** 2 + (xx - 40) ** 2 <= 30 ** 2
    right = ((yy - 40) ** 2 + (xx - 82) ** 2 <= 14 ** 2) & ~left
    array = np.where(left, 100.0, np.where(right, 160.0, 0.0)) + np.random.default_rng(1).normal(0, 5, yy.shape)
    truth = np.where(left, 1, np.where(right, 2, 0)).astype(np.uint8)
    return with_geometry(array.astype(np.float32), (0.7, 0.7), origin=(5.0, 5.0)), truth


def test_competitive_growing_separates_touching_objects():
    image, truth = two_touching_discs()
    point = lambda y, x: image.TransformIndexToPhysicalPoint((x, y))  # noqa: E731
    labels = sitk.GetArrayFromImage(competitive_growing(image, {1: [point(40, 40)], 2: [point(40, 84)],
                                                                0: [point(5, 5), point(75, 115)]}))
    assert dice(labels == 1, truth == 1) > 0.95
    assert dice(labels == 2, truth == 2) > 0.9


def test_competitive_growing_from_a_seed_label_map_and_grow_entry_point():
    image, truth = two_touching_discs()
    seeds = np.zeros_like(truth)
    seeds[38:42, 38:42], seeds[40, 82], seeds[2, 2] = 1, 2, 3
    labels = sitk.GetArrayFromImage(grow(image, method="competitive", seed_map=with_geometry(
        seeds, (0.7, 0.7), origin=(5.0, 5.0), pixel=sitk.sitkUInt8)))
    assert dice(labels == 1, truth == 1) > 0.95 and dice(labels == 2, truth == 2) > 0.9
    assert set(np.unique(labels)) == {1, 2, 3}


def test_competitive_growing_speed_scale_is_reasonable():
    """Smoke-size 3D run (the timed 256x256x160 case lives in benchmarks/classic_speed.py)."""
    image, truth = ellipsoid_image(shape=(20, 48, 48), centre=(10, 24, 24), radii=(6, 12, 12))
    labels = competitive_growing(image, {1: [centre_point(truth)], 0: [image.TransformIndexToPhysicalPoint((1, 1, 1))]})
    assert dice(labels, truth) > 0.95


def three_structures_with_a_thin_rod() -> tuple[sitk.Image, np.ndarray]:
    """Two touching ellipsoids and a one-voxel-thin bright rod (labels 1, 2, 3) in noisy tissue (0)."""
    shape = (40, 64, 72)
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    truth = np.zeros(shape, np.uint8)
    truth[((zz - 20) / 14.0) ** 2 + ((yy - 32) / 18.0) ** 2 + ((xx - 24) / 16.0) ** 2 <= 1] = 1
    truth[(((zz - 20) / 12.0) ** 2 + ((yy - 32) / 14.0) ** 2 + ((xx - 51) / 12.0) ** 2 <= 1) & (truth == 0)] = 2
    truth[5:35, 58, 65] = 3
    values = np.choose(truth, [20.0, 100.0, 160.0, 300.0]) + np.random.default_rng(3).normal(0, 8, shape)
    return with_geometry(values.astype(np.float32), (0.9, 0.9, 1.0), direction=OBLIQUE_3D), truth


def test_competitive_growing_coarse_to_fine_matches_full_resolution():
    image, truth = three_structures_with_a_thin_rod()
    seeds = {1: [(24, 32, 20)], 2: [(51, 32, 20)], 3: [(65, 58, 20)], 0: [(2, 2, 2), (70, 2, 37)]}
    full = sitk.GetArrayFromImage(competitive_growing(image, seeds, ijk=True, multiresolution=False))
    coarse_to_fine = sitk.GetArrayFromImage(competitive_growing(image, seeds, ijk=True, multiresolution=True))
    for label in (1, 2):
        assert dice(full == label, truth == label) > 0.97
        assert dice(coarse_to_fine == label, truth == label) > 0.97
    assert np.mean(coarse_to_fine[truth == 3] == 3) > 0.9  # the thin rod survives the coarse pass
    assert dice(coarse_to_fine == 3, full == 3) > 0.95
    assert np.mean(full == coarse_to_fine) > 0.995
    roi = np.zeros_like(truth)
    roi[8:32, 10:54, 4:70] = 1
    mask = with_geometry(roi, (0.9, 0.9, 1.0), direction=OBLIQUE_3D, pixel=sitk.sitkUInt8)
    seeds[0].append((6, 12, 10))  # the corner seeds lie outside the mask
    masked = [sitk.GetArrayFromImage(competitive_growing(image, seeds, mask=mask, ijk=True, multiresolution=m))
              for m in (False, True)]
    assert not masked[1][roi == 0].any()
    assert dice(masked[1] == 1, (truth == 1) & (roi == 1)) > 0.97
    assert np.mean(masked[0] == masked[1]) > 0.995


def test_explicit_range_grows_the_raw_intensities_and_cropped_cleanup_matches_whole_image():
    image, truth = ellipsoid_image(noise=20.0)
    seed = [int(v) for v in np.argwhere(sitk.GetArrayViewFromImage(truth)).mean(axis=0).round()[::-1]]
    grown = connected_threshold(image, [seed], 50.0, 150.0, ijk=True, cleanup=False)
    bare = sitk.ConnectedThreshold(image, [seed], 50.0, 150.0, 1)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(grown), sitk.GetArrayFromImage(bare))
    cropped, whole = (sitk.GetArrayFromImage(clean_grown_region(bare, [seed], crop=crop)) for crop in (True, False))
    np.testing.assert_array_equal(cropped, whole)
    assert (cropped != sitk.GetArrayFromImage(bare)).any()  # the clean-up changed something
    assert dice(cropped, truth) > 0.95


def test_growing_bad_inputs():
    image, truth = ellipsoid_image()
    seed = centre_point(truth)
    with pytest.raises(InputError, match="outside the image"):
        grow(image, [(500.0, 500.0, 500.0)])
    with pytest.raises(InputError, match="3D"):
        grow(image, [(1.0, 2.0)])
    with pytest.raises(InputError, match="above upper"):
        grow(image, [seed], lower=100, upper=10)
    with pytest.raises(InputError, match="empty.*--lower"):
        grow(image, [seed], lower=300, upper=400)
    with pytest.raises(InputError, match="floods.*--lower"):
        grow(image, [seed], lower=-1000, upper=1000)
    with pytest.raises(InputError, match="same value"):
        grow(with_geometry(np.ones((5, 5, 5), np.float32), (1, 1, 1)), [(2, 2, 2)], ijk=True)
    with pytest.raises(InputError, match="two labels"):
        grow(image, [seed], method="competitive")
    with pytest.raises(InputError, match="competitive"):
        grow(image, [seed], background_seeds=[seed])


@pytest.mark.shared_data
def test_spleen_ct_one_seed_reaches_target(shared_data):
    folder = shared_data / "msd_spleen_ct_crop"
    case = json.loads((folder / "dataset.json").read_text())["cases"][0]
    image, truth = sitk.ReadImage(str(folder / case["image"])), sitk.ReadImage(str(folder / case["label"]))
    assert dice(grow(image, [centre_point(truth)]), truth) >= 0.92  # command defaults (benchmark: 0.943)
    assert dice(confidence_connected(image, [centre_point(truth)]), truth) >= 0.90


@pytest.mark.shared_data
@pytest.mark.parametrize("case_name", ["SCD0000101_ED", "SCD0000301_ED"])
def test_sunnybrook_lv_blood_pool_one_seed_grows_slice_by_slice(shared_data, case_name):
    folder = shared_data / "sunnybrook_cardiac_lv"
    case = next(c for c in json.loads((folder / "dataset.json").read_text())["cases"] if c["case"] == case_name)
    image = sitk.ReadImage(str(folder / case["image"]))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / case["label"]))) == 1
    slices = case["annotated_slices_0_based"]["1"]
    middle = slices[len(slices) // 2]
    centre = np.argwhere(truth[middle]).mean(axis=0)[::-1]
    seed = image.TransformContinuousIndexToPhysicalPoint([float(centre[0]), float(centre[1]), float(middle)])
    result = sitk.GetArrayFromImage(grow(image, [seed])) > 0  # thick slices: "auto" grows per slice
    assert dice(result[slices], truth[slices]) >= 0.85
    assert dice(sitk.GetArrayFromImage(grow(image, [seed], geometry="3d"))[slices], truth[slices]) < 0.7


@pytest.mark.parametrize("fill,message", [(np.nan, "NaN"), (None, "same value")])
def test_explicit_range_still_explains_nan_and_constant_images(fill, message):
    array = np.full((6, 8, 8), 5.0, np.float32)
    if fill is not None:
        array[:, :, :4] = fill  # the seed sits in the NaN half
    image = sitk.GetImageFromArray(array)
    with pytest.raises(InputError, match=message):
        connected_threshold(image, [(1, 1, 1)], 0.0, 10.0, ijk=True)
