"""Label propagation: labels are moved without inventing new values, geometry is respected, names are kept."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SegToolkitLib.errors import InputError
from SegToolkitLib.io import LabelMap, LabelTable
from SegToolkitLib.methods.atlas import propagate_labels, warp_labels


def touching_labels(spacing=(1.2, 1.2, 2.5)) -> sitk.Image:
    """Label 1 and label 3 boxes that touch along a face (no 2 anywhere), on an anisotropic grid."""
    array = np.zeros((16, 30, 30), dtype=np.uint8)
    array[4:12, 6:24, 6:15] = 1
    array[4:12, 6:24, 15:24] = 3
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-5.0, 7.0, 3.0))
    return image


def rotation(image: sitk.Image, degrees: float = 17.0) -> sitk.Transform:
    transform = sitk.Euler3DTransform()
    transform.SetCenter(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
    transform.SetRotation(0.1, 0.0, np.deg2rad(degrees))
    transform.SetTranslation((0.6, -0.4, 0.3))
    return transform


@pytest.mark.parametrize("interpolation", ["onehot", "nearest"])
def test_no_new_label_values_appear_at_the_boundary_between_1_and_3(interpolation):
    labels = touching_labels()
    warped = warp_labels(labels, labels, rotation(labels), interpolation)
    values = set(np.unique(sitk.GetArrayViewFromImage(warped)).tolist())
    assert values == {0, 1, 3}
    assert warped.GetPixelID() == labels.GetPixelID()


def test_linear_interpolation_of_label_values_would_invent_label_2():
    labels = touching_labels()
    mixed = sitk.Resample(labels, labels, rotation(labels), sitk.sitkLinear, 0)
    assert 2 in np.unique(sitk.GetArrayViewFromImage(mixed))  # the problem one-hot interpolation avoids


def test_identity_onto_the_same_grid_keeps_labels_exactly():
    labels = touching_labels()
    warped = warp_labels(labels, labels, sitk.Transform(3, sitk.sitkIdentity))
    assert np.array_equal(sitk.GetArrayViewFromImage(warped), sitk.GetArrayViewFromImage(labels))


def test_one_hot_warping_onto_a_finer_oblique_grid_keeps_volumes():
    labels = touching_labels()
    reference = sitk.Image([50, 50, 50], sitk.sitkFloat32)
    reference.SetSpacing((0.8, 0.8, 0.8))
    reference.SetDirection(sitk.VersorTransform((0.0, 0.0, 1.0), 0.4).GetMatrix())
    centre = labels.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in labels.GetSize()])
    half_extent = np.array(reference.GetDirection()).reshape(3, 3) @ [19.6, 19.6, 19.6]
    reference.SetOrigin(np.subtract(centre, half_extent).tolist())
    warped = warp_labels(labels, reference, sitk.Transform(3, sitk.sitkIdentity))
    voxel_in, voxel_out = np.prod(labels.GetSpacing()), np.prod(reference.GetSpacing())
    for value in (1, 3):
        volume_in = np.sum(sitk.GetArrayViewFromImage(labels) == value) * voxel_in
        volume_out = np.sum(sitk.GetArrayViewFromImage(warped) == value) * voxel_out
        assert volume_out == pytest.approx(volume_in, rel=0.08)


def test_propagate_labels_keeps_names_and_colours():
    table = LabelTable()
    table.add(1, "left ventricle", (1.0, 0.0, 0.0))
    table.add(3, "myocardium", (0.0, 1.0, 0.0))
    labels = touching_labels()
    result = propagate_labels(LabelMap(labels, table), labels, rotation(labels, 5.0))
    assert result.labels.get(1).name == "left ventricle"
    assert result.labels.get(3).color == (0.0, 1.0, 0.0)


def test_bad_interpolation_and_dimension_are_refused():
    labels = touching_labels()
    with pytest.raises(InputError, match="interpolation"):
        warp_labels(labels, labels, sitk.Transform(3, sitk.sitkIdentity), "cubic")
    with pytest.raises(InputError, match="3D.*2D"):
        warp_labels(labels, sitk.Image([8, 8], sitk.sitkFloat32), sitk.Transform(2, sitk.sitkIdentity))
