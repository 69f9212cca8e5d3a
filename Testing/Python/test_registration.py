"""Registration: known transforms are recovered, transforms round-trip through files, bad inputs are refused."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SegToolkitLib.errors import InputError, OutputError
from SegToolkitLib.methods.atlas import initial_transform, load_transform, register, resample_image, save_transform

OBLIQUE = sitk.VersorTransform((0.2, 0.1, 1.0), 0.3).GetMatrix()


def blob_image(size=(48, 44, 24), spacing=(1.5, 1.5, 3.0), direction=OBLIQUE, origin=(10.0, -20.0, 5.0)):
    """A smooth image with asymmetric Gaussian blobs (no symmetry, so the pose is unambiguous)."""
    image = sitk.Image(list(size), sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    image.SetOrigin(origin)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1).reshape(-1, 3)
    matrix = np.array(direction).reshape(3, 3) * np.array(spacing)
    points = index @ matrix.T + np.array(origin)
    centre = points.mean(axis=0)
    values = np.zeros(len(points))
    for offset, sigma, weight in (((-12, -6, -10), 7.0, 100.0), ((10, 4, 6), 5.0, 60.0), ((2, 12, -2), 4.0, 80.0),
                                  ((-4, -14, 12), 6.0, 40.0)):
        distance = np.sum((points - centre - np.array(offset)) ** 2, axis=1)
        values += weight * np.exp(-distance / (2 * sigma ** 2))
    array = values.reshape(size).transpose(2, 1, 0).astype(np.float32)
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    return result


def moved(fixed: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """The moving image whose registration onto ``fixed`` must recover ``transform`` (fixed -> moving points)."""
    return sitk.Resample(fixed, fixed, transform.GetInverse(), sitk.sitkLinear, 0.0)


def max_point_error(found: sitk.Transform, truth: sitk.Transform, image: sitk.Image) -> float:
    """Largest distance between the two transforms over points in the middle of the image."""
    size = np.array(image.GetSize())
    errors = []
    for fraction in ((0.3, 0.3, 0.3), (0.7, 0.3, 0.5), (0.5, 0.7, 0.6), (0.6, 0.5, 0.4)):
        point = image.TransformContinuousIndexToPhysicalPoint((size * np.array(fraction)).tolist())
        errors.append(np.linalg.norm(np.subtract(found.TransformPoint(point), truth.TransformPoint(point))))
    return float(max(errors))


@pytest.fixture(scope="module")
def fixed() -> sitk.Image:
    return blob_image()


def centred(transform: sitk.Transform, image: sitk.Image) -> sitk.Transform:
    transform.SetCenter(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
    return transform


def test_translation_is_recovered_on_an_oblique_anisotropic_grid(fixed):
    truth = sitk.TranslationTransform(3, (4.0, -3.0, 5.0))
    result = register(fixed, moved(fixed, truth), "rigid", "fast", init="none")
    assert max_point_error(result.transform, truth, fixed) < 1.0
    assert [stage.name for stage in result.stages] == ["initialisation", "rigid"]
    assert all(stage.seconds >= 0 for stage in result.stages)


def test_rotation_is_recovered(fixed):
    truth = centred(sitk.Euler3DTransform(), fixed)
    truth.SetRotation(0.0, 0.05, np.deg2rad(10))
    truth.SetTranslation((2.0, 1.0, -2.0))
    result = register(fixed, moved(fixed, truth), "rigid", "default", metric="correlation", init="none")
    assert max_point_error(result.transform, truth, fixed) < 1.0


def test_affine_scaling_and_shear_are_recovered(fixed):
    truth = centred(sitk.AffineTransform(3), fixed)
    truth.SetMatrix([1.08, 0.05, 0.0, 0.0, 0.95, 0.03, 0.0, 0.0, 1.0])
    truth.SetTranslation((1.5, -2.0, 1.0))
    rigid = register(fixed, moved(fixed, truth), "rigid", "default", init="none")
    affine = register(fixed, moved(fixed, truth), "affine", "default", init="none")
    assert max_point_error(affine.transform, truth, fixed) < 1.5
    assert max_point_error(affine.transform, truth, fixed) < max_point_error(rigid.transform, truth, fixed)


def test_geometry_and_moments_initialisation_align_shifted_images(fixed):
    shifted = sitk.Image(fixed)
    shifted.SetOrigin(np.add(fixed.GetOrigin(), (60.0, -40.0, 30.0)).tolist())  # same pixels, far away
    truth = sitk.TranslationTransform(3, (60.0, -40.0, 30.0))
    for init in ("geometry", "moments"):
        result = register(fixed, shifted, "rigid", "fast", init=init)
        assert max_point_error(result.transform, truth, fixed) < 1.0, init


def test_axes_initialisation_undoes_a_different_scanner_pose(fixed):
    """The same pixels stored with another direction and origin (another slice planning in the scanner)."""
    posed = sitk.Image(fixed)
    posed.SetDirection(sitk.VersorTransform((1.0, -0.3, 0.2), 1.1).GetMatrix())
    posed.SetOrigin((-80.0, 35.0, 12.0))
    # the truth maps each fixed point to the moving point with the same voxel index (the grids have equal spacing)
    fixed_axes = np.array(fixed.GetDirection()).reshape(3, 3)
    moving_axes = np.array(posed.GetDirection()).reshape(3, 3)
    rotation = moving_axes @ fixed_axes.T
    truth = sitk.AffineTransform(3)
    truth.SetMatrix(rotation.ravel().tolist())
    truth.SetTranslation((np.array(posed.GetOrigin()) - rotation @ np.array(fixed.GetOrigin())).tolist())
    initial = initial_transform(fixed, posed, "axes")
    assert max_point_error(initial, truth, fixed) < 1e-3
    assert max_point_error(initial_transform(fixed, posed, "geometry"), truth, fixed) > 10.0


def test_deformable_stages_reduce_the_local_error(fixed):
    local = sitk.BSplineTransformInitializer(fixed, [3, 3, 2], order=3)
    rng = np.random.default_rng(1)
    local.SetParameters(rng.normal(0.0, 2.5, len(local.GetParameters())).tolist())
    moving = sitk.Resample(fixed, fixed, local, sitk.sitkLinear, 0.0)

    def error(result):
        warped = resample_image(moving, fixed, result.transform, default_value=0.0)
        return float(np.mean((sitk.GetArrayViewFromImage(warped) - sitk.GetArrayViewFromImage(fixed)) ** 2))

    affine = error(register(fixed, moving, "affine", "fast", "correlation", init="none"))
    for kind, preset in (("deformable", "fast"), ("diffeomorphic", "default")):
        result = register(fixed, moving, kind, preset, "correlation", init="none")
        assert result.stages[-1].name == kind
        assert error(result) < 0.75 * affine, kind


def test_progress_is_reported_up_to_completion(fixed):
    seen = []
    register(fixed, moved(fixed, sitk.TranslationTransform(3, (1.0, 0.0, 0.0))), "affine", "fast", init="none",
             progress=lambda fraction, message: seen.append(fraction))
    assert seen[-1] == 1.0 and len(seen) > 5
    assert all(0.0 <= value <= 1.0 for value in seen)


@pytest.fixture(scope="module")
def deformable_result(fixed):
    return register(fixed, moved(fixed, sitk.TranslationTransform(3, (2.0, 0.0, 1.0))), "deformable", "fast",
                    init="none")


@pytest.mark.parametrize("suffix", [".tfm", ".h5"])
def test_composite_transform_file_round_trip(fixed, deformable_result, tmp_path, suffix):
    result = deformable_result
    path = save_transform(result.transform, tmp_path / f"t{suffix}")
    loaded = load_transform(path)
    point = fixed.TransformContinuousIndexToPhysicalPoint((20.0, 15.0, 10.0))
    assert np.allclose(loaded.TransformPoint(point), result.transform.TransformPoint(point), atol=1e-4)
    assert not np.allclose(result.transform.TransformPoint(point), point, atol=0.5)


def test_displacement_field_transforms_need_h5(fixed, tmp_path):
    result = register(fixed, moved(fixed, sitk.TranslationTransform(3, (1.0, 0.0, 0.0))), "diffeomorphic", "fast",
                      init="none")
    with pytest.raises(OutputError, match=r"\.h5"):
        save_transform(result.transform, tmp_path / "t.tfm")
    assert not list(tmp_path.iterdir())
    loaded = load_transform(save_transform(result.transform, tmp_path / "t.h5"))
    point = fixed.TransformContinuousIndexToPhysicalPoint((20.0, 15.0, 10.0))
    assert np.allclose(loaded.TransformPoint(point), result.transform.TransformPoint(point), atol=1e-4)


def test_images_that_do_not_overlap_are_refused_with_a_hint(fixed):
    far = sitk.Image(fixed)
    far.SetOrigin(np.add(fixed.GetOrigin(), (500.0, 0.0, 0.0)).tolist())
    with pytest.raises(InputError, match=r"does not overlap.*--init"):
        register(fixed, far, "rigid", "fast", init="none")


def test_2d_and_3d_images_are_refused(fixed):
    flat = sitk.Image([32, 32], sitk.sitkFloat32)
    with pytest.raises(InputError, match=r"2D.*3D"):
        register(fixed, flat)


def test_a_mask_on_another_grid_is_refused(fixed):
    mask = sitk.Image([10, 10, 10], sitk.sitkUInt8)
    with pytest.raises(InputError, match="fixed mask"):
        register(fixed, fixed, fixed_mask=mask)


def test_2d_registration_recovers_a_translation():
    fixed2d = sitk.Extract(blob_image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)), [48, 44, 0], [0, 0, 8])
    truth = sitk.TranslationTransform(2, (3.0, -2.0))
    result = register(fixed2d, moved(fixed2d, truth), "affine", "fast", "correlation", init="none")
    point = fixed2d.TransformContinuousIndexToPhysicalPoint((24.0, 22.0))
    assert np.linalg.norm(np.subtract(result.transform.TransformPoint(point), truth.TransformPoint(point))) < 1.0
