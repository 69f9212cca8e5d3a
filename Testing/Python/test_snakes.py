import json

import numpy as np
import pytest
import SimpleITK as sitk
from classic_helpers import centre_point, dice, disk_image, ellipsoid_image

from SegToolkitLib.errors import InputError
from SegToolkitLib.methods.classic import SnakeSession, snake


def test_stepwise_geodesic_snake_grows_converges_and_enlarges_its_region():
    image, truth = disk_image()
    session = SnakeSession(image, [centre_point(truth)], radius_mm=2.0)
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


@pytest.mark.shared_data
def test_hc18_fetal_head_one_click_with_defaults(shared_data):
    folder = shared_data / "hc18_fetal_head_ultrasound"
    cases = json.loads((folder / "dataset.json").read_text())["cases"][::10][:4]
    scores = []
    for case in cases:
        image = sitk.ReadImage(str(folder / case["image"]), sitk.sitkFloat32)
        truth = sitk.ReadImage(str(folder / case["label"]))
        scores.append(dice(snake(image, [centre_point(truth)]), truth))
    assert min(scores) > 0.75 and np.mean(scores) > 0.85  # benchmark (150 images): see benchmarks/
