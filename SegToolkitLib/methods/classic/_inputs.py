"""Input checks and seed handling shared by the classic methods."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk

from ...errors import InputError
from ...geometry import seeds_to_indices

Point = Sequence[float]


def checked_float_image(image: sitk.Image, name: str = "image") -> sitk.Image:
    """The image as float32, after checking it is a scalar 2D/3D image with finite, non-constant values."""
    result = scalar_float_image(image, name)
    check_values(result, name)
    return result


def scalar_float_image(image: sitk.Image, name: str = "image") -> sitk.Image:
    """The image as float32, after checking it is a scalar 2D/3D image (its values are not looked at)."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name}: has {image.GetNumberOfComponentsPerPixel()} values per voxel; a scalar "
                         "(grey-value) image is needed")
    if image.GetDimension() not in (2, 3):
        raise InputError(f"{name}: is {image.GetDimension()}D; a 2D or 3D image is needed")
    return sitk.Cast(image, sitk.sitkFloat32) if image.GetPixelID() != sitk.sitkFloat32 else image


def check_values(image: sitk.Image, name: str = "image") -> None:
    """Raise :class:`InputError` when the image holds NaN/infinite values or is constant."""
    array = sitk.GetArrayViewFromImage(image)
    low, high = float(array.min()), float(array.max())  # NaN propagates through min/max: one pass each
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InputError(f"{name}: contains NaN or infinite values; replace them (e.g. with the background "
                         "value) before segmenting")
    if low == high:
        raise InputError(f"{name}: every voxel has the same value ({low:g}); there is nothing to segment")


def seed_indices(image: sitk.Image, seeds: Iterable[Point], ijk: bool = False, ras: bool = False,
                 what: str = "seed") -> list[tuple[int, ...]]:
    """Voxel indices of seed points (physical LPS by default, RAS with ``ras``, voxel indices with ``ijk``)."""
    seeds = [tuple(float(v) for v in seed) for seed in seeds]
    dimension = image.GetDimension()
    for seed in seeds:
        if len(seed) != dimension:
            raise InputError(f"{what} {_fmt(seed)}: has {len(seed)} coordinates but the image is {dimension}D; "
                             f"give {dimension} values ({'X,Y,Z' if dimension == 3 else 'X,Y'})")
    try:
        return seeds_to_indices(image, seeds, ijk=ijk, ras=ras, what=what)
    except InputError as error:
        hint = _coordinate_hint(image, seeds, ijk, ras)
        if hint:
            raise InputError(f"{error}; {hint}") from None
        raise


def _coordinate_hint(image: sitk.Image, seeds: Sequence[Point], ijk: bool, ras: bool) -> str:
    """A suggestion when seeds outside the image would all lie inside it read as RAS (or as LPS)."""
    if ijk or not seeds or image.GetDimension() < 2:
        return ""
    flipped = [(-seed[0], -seed[1], *seed[2:]) for seed in seeds]  # RAS <-> LPS
    try:
        seeds_to_indices(image, flipped)
    except InputError:
        return ""
    if ras:
        return "read as LPS (without --ras) they lie inside the image: were they given in LPS?"
    return ("read as RAS they lie inside the image: if you copied them from Slicer (which shows RAS), "
            "add --ras")


def check_range(lower: float | None, upper: float | None) -> None:
    """Raise :class:`InputError` when an intensity range is reversed or not finite."""
    for name, value in (("lower", lower), ("upper", upper)):
        if value is not None and not np.isfinite(value):
            raise InputError(f"{name} threshold {value}: must be a finite number")
    if lower is not None and upper is not None and lower > upper:
        raise InputError(f"lower threshold {lower:g} is above upper threshold {upper:g}; swap them")


def array_of(image: sitk.Image) -> np.ndarray:
    """A read-only numpy view (z, y, x) of an image."""
    return sitk.GetArrayViewFromImage(image)


def image_like(array: np.ndarray, reference: sitk.Image, pixel_type: int = sitk.sitkUInt8) -> sitk.Image:
    """A SimpleITK image from ``array`` with the geometry of ``reference``."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.CopyInformation(reference)
    return sitk.Cast(image, pixel_type) if image.GetPixelID() != pixel_type else image


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"
