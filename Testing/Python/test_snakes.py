import json

import numpy as np
import pytest
import SimpleITK as sitk
from classic_helpers import centre_point, dice, disk_image, ellipsoid_image

from SegToolkitLib.errors import InputError
from SegToolkitLib.io import LabelMap, LabelTable
from SegToolkitLib.measurement.shape import ellipse_circumference, measure
from SegToolkitLib.methods.classic import SnakeSession, snake
from SegToolkitLib.methods.classic.ellipse import Ellipse, _refined_on_crest, ridge_strength


def test_stepwise_geodesic_snake_grows_converges_and_enlarges_its_region():
    image, truth = disk_image()
    session = SnakeSession(image, [centre_point(truth)], radius_mm=2.0, feature="edge")
    first = sitk.GetArrayFromImage(session.step(5))
    box_before = session.region
    second = sitk.GetArrayFromImage(session.step(20))
    assert session.iteration == 25 and second.sum() > first.sum()
    mask = session.run(2000)
    assert session.converged
    low, high = session.region
    assert np.prod(np.subtract(high, low)) > np.prod(np.subtract(box_before[1], box_before[0]))
    assert dice(mask, truth) > 0.95
    assert mask.GetOrigin() == image.GetOrigin() and mask.GetSpacing() == image.GetSpacing()


def test_negative_expansion_shrinks_an_initial_mask():
    image, truth = disk_image()
    big = sitk.BinaryDilate(truth, [12, 12])
    session = SnakeSession(image, initial_mask=big, expansion=-1.0)
    mask = session.run(2000)
    assert sitk.GetArrayFromImage(mask).sum() < sitk.GetArrayFromImage(big).sum()
    assert dice(mask, truth) > 0.9


def test_chan_vese_and_region_feature_models():
    image, truth = disk_image()
    seed = centre_point(truth)
    assert dice(snake(image, [seed], model="chan-vese", expansion=0.0, radius_mm=4.0), truth) > 0.9
    assert dice(snake(image, [seed], feature="region"), truth) > 0.85  # stops where the blurred edge leaves the range


def test_3d_snake_on_oblique_anisotropic_volume():
    image, truth = ellipsoid_image(noise=5.0)
    mask = snake(image, [centre_point(truth)], feature="region")
    assert dice(mask, truth) > 0.8
    assert mask.GetDirection() == image.GetDirection()


def test_snake_bad_inputs():
    image, truth = disk_image()
    with pytest.raises(InputError, match="outside the image"):
        SnakeSession(image, [(1e4, 1e4)])
    with pytest.raises(InputError, match="2D"):
        SnakeSession(image, [(1.0, 2.0, 3.0)])
    with pytest.raises(InputError, match="model"):
        SnakeSession(image, [centre_point(truth)], model="balloon")
    with pytest.raises(InputError, match="seed point or an initial mask"):
        SnakeSession(image)
    empty = sitk.Image(truth.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(truth)
    with pytest.raises(InputError, match="empty"):
        SnakeSession(image, initial_mask=empty)


def ring_image() -> tuple[sitk.Image, sitk.Image]:
    """A bright elliptical ring (a skull-like ridge) with a bright line inside, on speckle; truth = filled ring."""
    yy, xx = np.mgrid[:160, :200].astype(np.float64)
    radius = np.sqrt(((yy - 80) / 50.0) ** 2 + ((xx - 100) / 70.0) ** 2)
    ring = np.exp(-((radius - 1.0) * 60.0 / 4.0) ** 2)
    line = (np.abs(yy - 82) < 2) & (np.abs(xx - 100) < 40)
    values = 30 + 150 * ring + 90 * line + np.random.default_rng(2).gamma(2.0, 10.0, yy.shape)
    truth = (radius <= 1.0 + 3.0 / 60.0).astype(np.uint8)
    spacing = (0.3, 0.3)
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing(spacing)
    mask = sitk.GetImageFromArray(truth)
    mask.SetSpacing(spacing)
    return image, mask


def test_ellipse_prior_is_picked_automatically_inside_a_bright_ring_and_steps():
    image, truth = ring_image()
    session = SnakeSession(image, [centre_point(truth)])
    assert session.shape == "ellipse" and session.parameters.expansion == 0.0
    assert dice(session.step(5), truth) > 0.9
    assert dice(session.run(200), truth) > 0.9 and session.converged
    free = SnakeSession(image, [centre_point(truth)], shape="free")
    assert free.shape == "free" and free.parameters.expansion == 1.0
    with pytest.raises(InputError, match="shape"):
        SnakeSession(image, [centre_point(truth)], shape="circle")


def test_dark_disk_without_a_ridge_keeps_a_free_contour():
    image, truth = disk_image()
    assert SnakeSession(image, [centre_point(truth)]).shape == "free"


CREST = Ellipse((80.0, 100.0), (66.0, 46.0), np.radians(70.0))  # a tilted skull-like ridge (pixels, numpy order)


def tilted_ring_image(noise: bool = True) -> tuple[sitk.Image, sitk.Image, float]:
    """A bright tilted elliptical ridge (Gaussian profile, 1.5 px wide) on speckle, 0.3 mm pixels and an offset origin;
    the truth is the filled ellipse 1 mm outside the crest (where a reader draws a skull); the third value is the
    crest's circumference in mm."""
    yy, xx = np.mgrid[:160, :200].astype(np.float64)
    distance = (CREST.normalised_radius(np.stack([yy, xx])) - 1.0) * np.mean(CREST.axes)  # about pixels
    values = 30 + 150 * np.exp(-0.5 * (distance / 1.5) ** 2)
    if noise:
        values = values + np.random.default_rng(3).gamma(2.0, 10.0, yy.shape)
    outline = CREST.grown(1.0 / 0.3)
    truth = outline.mask(yy.shape).astype(np.uint8)
    images = [sitk.GetImageFromArray(array) for array in (values.astype(np.float32), truth)]
    for item in images:
        item.SetSpacing((0.3, 0.3))
        item.SetOrigin((12.0, -7.0))
    return images[0], images[1], ellipse_circumference(*(0.3 * np.array(CREST.axes)))


def test_ridge_ellipse_refinement_recovers_the_crest_from_a_displaced_start():
    image, _, _ = tilted_ring_image(noise=False)
    array = sitk.GetArrayFromImage(image)
    start = Ellipse((81.5, 98.5), (63.0, 48.0), CREST.angle + 0.08)
    refined = _refined_on_crest(ridge_strength(array, 2.0), start, CREST.centre, array.shape)
    assert np.abs(np.subtract(refined.centre, CREST.centre)).max() < 0.3
    assert np.abs(np.subtract(refined.axes, CREST.axes)).max() < 0.5
    assert abs((refined.angle - CREST.angle + np.pi / 2) % np.pi - np.pi / 2) < 0.02


def test_ellipse_prior_gives_a_smooth_outline_whose_circumference_measures_right():
    image, truth, crest = tilted_ring_image()
    session = SnakeSession(image, [centre_point(truth)])
    result = session.run(200)
    assert session.shape == "ellipse" and dice(result, truth) > 0.97
    measured = measure(LabelMap(result, LabelTable())).rows()[0]
    fitted = ellipse_circumference(*(np.array(session._prior.axes) * session.image.GetSpacing()[0]))
    assert abs(measured["ellipse_circumference_mm"] - fitted) < 0.003 * fitted  # the outline is the fitted ellipse
    # on the outer flank: 0.3-1.2 mm outside the crest
    assert crest + 2 * np.pi * 0.3 < measured["ellipse_circumference_mm"] < crest + 2 * np.pi * 1.2
    assert abs((measured["ellipse_angle_deg"] - 20.0 + 90.0) % 180.0 - 90.0) < 2.0  # 70° from the row axis
    assert result.GetOrigin() == image.GetOrigin() and result.GetSpacing() == image.GetSpacing()


def test_a_contour_that_leaves_the_fitted_ellipse_keeps_its_own_outline():
    image, truth, _ = tilted_ring_image()
    session = SnakeSession(image, [centre_point(truth)], expansion=1.0, edge_strength=1e9)  # no edge stops it
    fitted = sitk.GetArrayFromImage(session.mask()).sum()
    assert session.shape == "ellipse"
    assert sitk.GetArrayFromImage(session.step(60)).sum() > 1.2 * fitted


@pytest.mark.shared_data
def test_hc18_fetal_head_one_click_with_defaults(shared_data):
    folder = shared_data / "hc18_fetal_head_ultrasound"
    cases = json.loads((folder / "dataset.json").read_text())["cases"][::19]  # 8 images, all pixel sizes
    scores = []
    for case in cases:
        image = sitk.ReadImage(str(folder / case["image"]), sitk.sitkFloat32)
        truth = sitk.ReadImage(str(folder / case["label"]))
        scores.append(dice(snake(image, [centre_point(truth)]), truth))
    assert min(scores) > 0.65 and np.mean(scores) > 0.88  # benchmark (150 images): see benchmarks/


def test_auto_feature_is_picked_from_the_seed_neighbourhood():
    image, truth = disk_image()
    session = SnakeSession(image, [centre_point(truth)])
    assert session.feature == "region" and "homogeneous" in session.choice
    low, high = session.intensity_range
    assert low < 40.0 < high < 160.0  # the dark disk's range, not the bright background
    feature = sitk.GetArrayFromImage(session.feature_image())
    assert feature.min() >= -1.0 and feature.max() <= 1.0
    assert dice(session.run(500), truth) > 0.95
    # speckle (multiplicative, as in ultrasound): the neighbourhood is textured, so edges are followed
    rng = np.random.default_rng(1)
    disk = sitk.GetArrayFromImage(truth) > 0
    speckled = sitk.GetImageFromArray((100.0 * (1.0 + 0.5 * disk) * rng.gamma(1.0, 1.0, disk.shape))
                                      .astype(np.float32))
    speckled.CopyInformation(image)
    textured = SnakeSession(speckled, [centre_point(truth)], shape="free")
    assert textured.feature == "edge" and "textured" in textured.choice
    given = SnakeSession(image, [centre_point(truth)], intensity_range=(0.0, 80.0))
    assert given.feature == "region" and given.intensity_range == (0.0, 80.0)


def touching_disks() -> tuple[sitk.Image, sitk.Image]:
    """Two dark disks of the same intensity joined by a 1.5 mm bridge; truth = the left disk."""
    yy, xx = np.mgrid[:100, :180].astype(np.float64)
    left = (yy - 50) ** 2 + (xx - 50) ** 2 <= 30 ** 2
    right = (yy - 50) ** 2 + (xx - 130) ** 2 <= 30 ** 2
    bridge = (np.abs(yy - 50) <= 1) & (xx > 70) & (xx < 110)
    values = np.where(left | right | bridge, 40.0, 160.0) + np.random.default_rng(0).normal(0, 8, yy.shape)
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing((0.5, 0.5))
    truth = sitk.GetImageFromArray(left.astype(np.uint8))
    truth.SetSpacing((0.5, 0.5))
    return image, truth


def test_region_snake_does_not_leak_through_a_thin_bridge_from_a_seed_or_an_initial_mask():
    image, truth = touching_disks()
    assert dice(snake(image, [centre_point(truth)]), truth) > 0.93
    # a network-like initial mask: the truth shrunk by 2 mm and grown by 2 mm
    for radius in (-4, 4):
        start = sitk.BinaryErode(truth, [4, 4]) if radius < 0 else sitk.BinaryDilate(truth, [4, 4])
        assert dice(snake(image, initial_mask=start), truth) > 0.93


def test_region_snake_on_a_thick_slice_stack_moves_within_slices():
    shape, spacing = (8, 64, 64), (1.5, 1.5, 8.0)
    zz, yy, xx = np.mgrid[:shape[0], :shape[1], :shape[2]].astype(np.float64)
    radius = 14 + 3 * np.sin(zz / 2.0)  # the cavity's size changes from slice to slice
    cavity = ((yy - 32) ** 2 + (xx - 30) ** 2 <= radius ** 2) & (zz >= 1) & (zz <= 6)
    values = np.where(cavity, 300.0, 80.0) + np.random.default_rng(0).normal(0, 12, shape)
    # the expected outline encloses the 2.5 mm partial-volume band, as an expert's cavity contour
    truth_array = ((yy - 32) ** 2 + (xx - 30) ** 2 <= (radius + 2.5 / 1.5) ** 2) & (zz >= 1) & (zz <= 6)
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing(spacing)
    truth = sitk.GetImageFromArray(truth_array.astype(np.uint8))
    truth.SetSpacing(spacing)
    session = SnakeSession(image, [image.TransformIndexToPhysicalPoint((30, 32, 3))])
    assert session.feature == "region" and session._planar_axis == 0
    assert dice(session.run(500), truth) > 0.9
    # an initial mask that spills into the wall (as a network's output may): each slice keeps its own bound, the
    # contour does not flood the darker surroundings
    spilled = sitk.BinaryDilate(sitk.Cast(sitk.GetImageFromArray(cavity.astype(np.uint8)), sitk.sitkUInt8), [4, 4, 0])
    spilled.CopyInformation(image)
    assert dice(snake(image, initial_mask=spilled), truth) > 0.85


@pytest.mark.parametrize("iterations", [-1, 0, 2.5, True])
def test_nonsense_iterations_are_refused(iterations):
    image, truth = disk_image()
    with pytest.raises(InputError, match="iterations"):
        snake(image, [centre_point(truth)], iterations=iterations)
    session = SnakeSession(image, [centre_point(truth)])
    with pytest.raises(InputError, match="iterations"):
        session.step(iterations)


def test_a_seed_given_in_ras_without_the_flag_gets_a_hint():
    image, truth = disk_image()
    x, y = centre_point(truth)
    flipped = sitk.Image(image)
    flipped.SetOrigin((-image.GetOrigin()[0] - 69.5, -image.GetOrigin()[1] - 59.5))  # the image sits at negative LPS
    point = flipped.TransformIndexToPhysicalPoint((70, 60))
    with pytest.raises(InputError, match="--ras"):
        SnakeSession(flipped, [(-point[0], -point[1])])
    assert SnakeSession(flipped, [(-point[0], -point[1])], ras=True).feature in ("region", "edge")
    with pytest.raises(InputError, match="outside the image") as error:
        SnakeSession(image, [(x + 1e4, y)])
    assert "--ras" not in str(error.value)


@pytest.mark.shared_data
def test_msd_spleen_one_click_snake_with_defaults(shared_data):
    folder = shared_data / "msd_spleen_ct_crop"
    image = sitk.ReadImage(str(folder / "images" / "spleen_2_crop.nii.gz"))
    truth = sitk.ReadImage(str(folder / "labels" / "spleen_2_crop.nii.gz"))
    from scipy import ndimage

    array = sitk.GetArrayFromImage(truth) > 0
    deepest = np.unravel_index(np.argmax(ndimage.distance_transform_edt(array, (5.0, 0.8, 0.8))), array.shape)
    seed = image.TransformIndexToPhysicalPoint([int(v) for v in deepest[::-1]])
    assert dice(snake(image, [seed]), truth) >= 0.88  # benchmark: classic_accuracy.py


def test_a_3d_click_near_an_edge_still_gets_the_region_feature():
    image, truth = ellipsoid_image(noise=5.0, oblique=False)
    near_edge = image.TransformIndexToPhysicalPoint((32 + 13, 32, 12))  # a voxel inside the x radius (14 voxels)
    session = SnakeSession(image, [near_edge])
    assert session.feature == "region" and "near an edge" in session.choice
    assert dice(session.run(500), truth) > 0.85


def _deepest_point(image: sitk.Image, mask: np.ndarray, offset: tuple = ()) -> tuple:
    from scipy import ndimage

    spacing = np.array(image.GetSpacing())[::-1][-mask.ndim:]
    index = np.unravel_index(int(np.argmax(ndimage.distance_transform_edt(mask, sampling=spacing))), mask.shape)
    return image.TransformContinuousIndexToPhysicalPoint([float(v) for v in (*index[::-1], *offset)])


@pytest.mark.shared_data
def test_ct_liver_and_cardiac_blood_pool_one_click_snakes_with_defaults(shared_data):
    folder = shared_data / "totalsegmentator_ct_examples"
    image = sitk.ReadImage(str(folder / "images" / "ct_dicom_example.nii.gz"))
    liver = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labels" / "ct_dicom_example.nii.gz"))) == 5
    assert dice(snake(image, [_deepest_point(image, liver)]), liver) >= 0.85  # benchmark: classic_accuracy.py
    folder = shared_data / "sunnybrook_cardiac_lv"
    for case in json.loads((folder / "dataset.json").read_text())["cases"][:2]:
        image = sitk.ReadImage(str(folder / case["image"]))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / case["label"]))) == 1
        slices = case["annotated_slices_0_based"]["1"]
        middle = slices[len(slices) // 2]
        result = sitk.GetArrayFromImage(snake(image, [_deepest_point(image, truth[middle], (middle,))])) > 0
        assert dice(result[slices], truth[slices]) > 0.8
