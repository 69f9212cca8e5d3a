"""Seeds and points: physical LPS/RAS points map onto the intended voxel through the full image geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SegToolkitLib.errors import InputError
from SegToolkitLib.geometry import (
    index_to_physical,
    index_to_physical_matrix,
    lps_to_ras,
    parse_point,
    physical_bounds,
    physical_to_index,
    seeds_to_indices,
)


def oblique_image() -> sitk.Image:
    image = sitk.Image(20, 30, 10, sitk.sitkInt16)
    image.SetSpacing((0.5, 0.7, 3.0))
    image.SetOrigin((-12.0, 40.0, 7.5))
    image.SetDirection(sitk.VersorTransform((1.0, 0.3, 0.2), 0.6).GetMatrix())
    return image


def test_physical_point_maps_to_its_voxel_on_oblique_anisotropic_grid():
    image = oblique_image()
    for index in [(0, 0, 0), (19, 29, 9), (7, 11, 4)]:
        point = index_to_physical(image, index)
        assert physical_to_index(image, point) == index
        nudged = np.array(point) + 0.2 * np.array(image.GetDirection()).reshape(3, 3)[:, 2]  # < half a slice
        assert physical_to_index(image, nudged) == index


def test_matrix_agrees_with_simpleitk():
    image = oblique_image()
    matrix = index_to_physical_matrix(image)
    for index in [(0, 0, 0), (3, 5, 7)]:
        expected = image.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose((matrix @ np.r_[index, 1])[:3], expected, atol=1e-9)


def test_ras_seeds_and_voxel_seeds():
    image = oblique_image()
    lps = index_to_physical(image, (5, 6, 7))
    assert seeds_to_indices(image, [lps_to_ras(lps)], ras=True) == [(5, 6, 7)]
    assert seeds_to_indices(image, [(5, 6, 7)], ijk=True) == [(5, 6, 7)]


def test_bad_points_are_explained():
    image = oblique_image()
    with pytest.raises(InputError, match="outside the image"):
        physical_to_index(image, (1e4, 0.0, 0.0))
    with pytest.raises(InputError, match="has 2 coordinates but the image is 3D"):
        parse_point("1,2", 3)
    with pytest.raises(InputError, match="expected numbers"):
        parse_point("1,a,3", 3)
    with pytest.raises(InputError, match="outside the image"):
        seeds_to_indices(image, [(20, 0, 0)], ijk=True)
    bounds = physical_bounds(image)
    assert all(lo < hi for lo, hi in bounds)
