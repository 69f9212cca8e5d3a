"""Synthetic images with known truth for the classic-method tests."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

OBLIQUE_3D = (0.8660254, -0.5, 0.0, 0.5, 0.8660254, 0.0, 0.0, 0.0, 1.0)  # 30° about z


def dice(a: sitk.Image | np.ndarray, b: sitk.Image | np.ndarray) -> float:
    a = sitk.GetArrayFromImage(a) if isinstance(a, sitk.Image) else a
    b = sitk.GetArrayFromImage(b) if isinstance(b, sitk.Image) else b
    a, b = a != 0, b != 0
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def with_geometry(array: np.ndarray, spacing, origin=None, direction=None, pixel=sitk.sitkFloat32) -> sitk.Image:
    image = sitk.Cast(sitk.GetImageFromArray(array), pixel)
    image.SetSpacing([float(s) for s in spacing])
    if origin is not None:
        image.SetOrigin([float(v) for v in origin])
    if direction is not None:
        image.SetDirection(direction)
    return image


def ellipsoid_image(shape=(24, 64, 64), centre=(12, 32, 32), radii=(8, 18, 14), spacing=(1.0, 1.0, 2.0),
                    inside=100.0, outside=0.0, noise=5.0, oblique=True, seed=0) -> tuple[sitk.Image, sitk.Image]:
    """A noisy bright ellipsoid (z, y, x numpy order for shape/centre/radii) and its truth mask, on an
    anisotropic (and by default oblique, off-origin) grid."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    inside_mask = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0
    rng = np.random.default_rng(seed)
    values = np.where(inside_mask, inside, outside) + rng.normal(0, noise, shape)
    geometry = dict(spacing=spacing, origin=(-20.0, 35.5, 102.0) if oblique else None,
                    direction=OBLIQUE_3D if oblique and len(shape) == 3 else None)
    return (with_geometry(values.astype(np.float32), **geometry),
            with_geometry(inside_mask.astype(np.uint8), pixel=sitk.sitkUInt8, **geometry))


def disk_image(shape=(120, 140), centre=(60, 70), radius=30.0, spacing=(0.5, 0.5), inside=40.0, outside=160.0,
               noise=10.0, seed=0) -> tuple[sitk.Image, sitk.Image]:
    """A dark noisy disk on a bright background (2D), and its truth."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    truth = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) <= radius ** 2
    rng = np.random.default_rng(seed)
    values = np.where(truth, inside, outside) + rng.normal(0, noise, shape)
    return (with_geometry(values.astype(np.float32), spacing, origin=(10.0, -5.0)),
            with_geometry(truth.astype(np.uint8), spacing, origin=(10.0, -5.0), pixel=sitk.sitkUInt8))


def centre_point(truth: sitk.Image) -> tuple[float, ...]:
    """The physical (LPS) position of the truth's centroid voxel."""
    coords = np.argwhere(sitk.GetArrayViewFromImage(truth) != 0).mean(axis=0)
    return truth.TransformContinuousIndexToPhysicalPoint([float(v) for v in coords[::-1]])
