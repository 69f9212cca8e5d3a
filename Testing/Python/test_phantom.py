"""The built-in synthetic CT phantom: deterministic, consistent truth, realistic intensities, subject variation."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from SegToolkitLib.errors import InputError
from SegToolkitLib.samples.phantom import (
    AORTA,
    CAVITY_HU,
    LEFT_KIDNEY,
    LIVER,
    LIVER_LESION,
    ORGANS,
    RIGHT_KIDNEY,
    SPLEEN,
    VERTEBRAE,
    make_phantom,
)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


def _labels(phantom) -> np.ndarray:
    return sitk.GetArrayFromImage(phantom.labels.image)


def _hu(phantom) -> np.ndarray:
    return sitk.GetArrayFromImage(phantom.image)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_grid_and_label_table(phantom):
    image = phantom.image
    assert image.GetPixelID() == sitk.sitkFloat32
    assert image.GetSize() == (128, 112, 48)
    assert image.GetSpacing() == pytest.approx((1.5, 1.5, 3.0))
    assert image.GetDirection() == pytest.approx(np.eye(3).ravel())
    assert phantom.labels.image.GetSize() == image.GetSize()
    assert phantom.labels.image.GetOrigin() == pytest.approx(image.GetOrigin())
    names = {label.value: label.name for label in phantom.labels.labels}
    assert names == {LIVER: "liver", SPLEEN: "spleen", LEFT_KIDNEY: "left kidney", RIGHT_KIDNEY: "right kidney",
                     VERTEBRAE: "vertebrae", LIVER_LESION: "liver lesion", AORTA: "aorta"}
    assert len({label.color for label in phantom.labels.labels}) == len(names)
    assert phantom.labels.present_values() == sorted(names)


def test_deterministic_and_noise_seed_changes_only_noise(phantom):
    again = make_phantom()
    assert np.array_equal(_hu(again), _hu(phantom))
    assert np.array_equal(_labels(again), _labels(phantom))
    other_noise = make_phantom(noise_seed=1)
    assert np.array_equal(_labels(other_noise), _labels(phantom))
    difference = _hu(other_noise) - _hu(phantom)
    assert 12.0 < difference.std() < 22.0  # two independent noise fields of SD 12: SD of the difference ~17


def test_volumes_match_label_map_and_analytic_shapes(phantom):
    labels = _labels(phantom)
    voxel_ml = np.prod(phantom.image.GetSpacing()) / 1000.0
    for value in ORGANS:
        assert phantom.truth_volumes_ml[value] == pytest.approx((labels == value).sum() * voxel_ml)
        assert phantom.truth_volumes_ml[value] == pytest.approx(phantom.analytic_volumes_ml[value], rel=0.05)
    assert 2.0 < phantom.truth_volumes_ml[LIVER_LESION] < 6.0  # "a few mL"
    assert phantom.truth_volumes_ml[LIVER] > 5 * phantom.truth_volumes_ml[SPLEEN] / 2


@pytest.mark.parametrize("value", sorted(ORGANS))
def test_organ_intensity_and_noise(phantom, value):
    core = ndimage.binary_erosion(_labels(phantom) == value, iterations=1)
    values = _hu(phantom)[core]
    assert values.mean() == pytest.approx(ORGANS[value][2], abs=3.0)
    assert 9.0 < values.std() < 15.0


def test_body_outline_air_and_fat(phantom):
    hu = _hu(phantom)
    assert hu[:, :3, :].mean() == pytest.approx(-1000.0, abs=3.0)  # air in front of the body
    # Walking from the front of the body inwards through the mid-line: fat (-100) before muscle (45).
    column = hu[:, :, 64].mean(axis=0)
    body_start = int(np.argmax(column > -500))
    assert column[body_start + 1:body_start + 5] == pytest.approx(-100.0, abs=10.0)
    assert column[body_start + 6:body_start + 14].max() == pytest.approx(45.0, abs=10.0)
    assert column[body_start + 16:body_start + 20] == pytest.approx(-40.0, abs=10.0)  # abdominal cavity


def test_partial_volume_edges(phantom):
    """Boundary voxels hold a mix of the organ and its surroundings, as a scanner's finite resolution gives."""
    labels, hu = _labels(phantom), _hu(phantom)
    kidney = labels == LEFT_KIDNEY
    rim = kidney & ~ndimage.binary_erosion(kidney)
    halo = ndimage.binary_dilation(kidney) & ~kidney & (labels == 0)
    nominal = ORGANS[LEFT_KIDNEY][2]
    assert CAVITY_HU + 30 < hu[halo].mean() < hu[rim].mean() < nominal - 20
    # Intermediate values are frequent at the edge, not only noise around the two tissue values.
    assert np.mean((hu[rim] > 20) & (hu[rim] < 120)) > 0.4


def test_seeds_are_deep_inside_their_labels(phantom):
    labels = _labels(phantom)
    spacing = tuple(reversed(phantom.image.GetSpacing()))
    for value, point in phantom.seeds.items():
        i, j, k = phantom.labels.image.TransformPhysicalPointToIndex(point)
        assert labels[k, j, i] == value
        depth = ndimage.distance_transform_edt(labels == value, sampling=spacing)[k, j, i]
        assert depth >= 3.0, ORGANS[value][0]
    assert set(phantom.seeds) == set(ORGANS)


@pytest.mark.parametrize("subject", [0, 1, 2, 3, 4, 5])
def test_anatomy_stays_consistent_across_subjects(subject):
    labels = _labels(make_phantom(subject))
    lesion = labels == LIVER_LESION
    ring = ndimage.binary_dilation(lesion) & ~lesion
    assert np.all(labels[ring] == LIVER), "the lesion must be surrounded by liver"
    border = np.ones(labels.shape, bool)
    border[1:-1, 1:-1, 1:-1] = False
    assert not labels[border].any(), "organs must lie inside the field of view"
    for value in ORGANS:  # organs do not touch each other (apart from the lesion in the liver)
        others = (labels > 0) & (labels != value) & ~((value == LIVER) & lesion) & ~((value == LIVER_LESION) &
                                                                                     (labels == LIVER))
        assert not np.any(ndimage.binary_dilation(labels == value) & others)


def test_subjects_differ_but_overlap(phantom):
    other = make_phantom(subject=1)
    a, b = _labels(phantom), _labels(other)
    assert make_phantom(subject=1).subject == 1
    assert 0.6 < _dice(a == LIVER, b == LIVER) < 0.95
    for value in ORGANS:
        assert 0.3 < _dice(a == value, b == value) < 0.99, ORGANS[value][0]
    volumes = np.array([other.truth_volumes_ml[v] / phantom.truth_volumes_ml[v] for v in (LIVER, SPLEEN)])
    assert np.all((volumes > 0.6) & (volumes < 1.5))


def test_oblique_direction_keeps_anatomy_and_volumes(phantom):
    angle = np.radians(12.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    tilt = np.array([[1, 0, 0], [0, np.cos(angle / 2), -np.sin(angle / 2)], [0, np.sin(angle / 2),
                                                                               np.cos(angle / 2)]])
    direction = tuple((rotation @ tilt).ravel())
    oblique = make_phantom(direction=direction)
    assert oblique.image.GetDirection() == pytest.approx(direction)
    assert oblique.analytic_volumes_ml == pytest.approx(phantom.analytic_volumes_ml)
    for value in (LIVER, SPLEEN, LEFT_KIDNEY, RIGHT_KIDNEY, LIVER_LESION, AORTA):
        assert oblique.truth_volumes_ml[value] == pytest.approx(phantom.truth_volumes_ml[value], rel=0.05)
    # The anatomy stays put in physical space: the axis-aligned phantom's seeds fall in the same organs.
    labels = _labels(oblique)
    for value, point in phantom.seeds.items():
        i, j, k = oblique.labels.image.TransformPhysicalPointToIndex(point)
        assert labels[k, j, i] == value


def test_custom_grid():
    small = make_phantom(shape=(96, 84, 36), spacing=(2.0, 2.0, 4.0))
    assert small.image.GetSize() == (96, 84, 36)
    reference = make_phantom()
    assert small.truth_volumes_ml[LIVER] == pytest.approx(reference.truth_volumes_ml[LIVER], rel=0.05)


@pytest.mark.parametrize("kwargs, message", [
    ({"shape": (10, 10)}, "shape"),
    ({"spacing": (1.0, 0.0, 1.0)}, "spacing"),
    ({"direction": (1, 0, 0, 0, 2, 0, 0, 0, 1)}, "orthonormal"),
    ({"subject": -1}, "subject -1"),
    ({"noise_seed": 1.5}, "noise seed 1.5"),
])
def test_bad_grid_arguments(kwargs, message):
    with pytest.raises(InputError, match=message):
        make_phantom(**kwargs)
