"""Clean-up of binary masks: keep the largest component or the one at a seed, fill holes, drop small islands."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import SimpleITK as sitk

from ...errors import InputError
from ...geometry import voxel_volume_mm3
from ._inputs import array_of, image_like

Index = Sequence[int]


def as_mask(image: sitk.Image) -> sitk.Image:
    """A uint8 0/1 mask of the non-zero voxels."""
    return sitk.Cast(sitk.NotEqual(image, 0), sitk.sitkUInt8)


def largest_component(mask: sitk.Image, fully_connected: bool = False) -> sitk.Image:
    """Only the largest connected component of ``mask`` (uint8 0/1)."""
    components = sitk.RelabelComponent(sitk.ConnectedComponent(as_mask(mask), fully_connected), sortByObjectSize=True)
    return sitk.Cast(sitk.Equal(components, 1), sitk.sitkUInt8)


def component_containing(mask: sitk.Image, seeds: Sequence[Index], search_voxels: int = 3,
                         fully_connected: bool = False) -> sitk.Image:
    """The connected components of ``mask`` that hold the seed voxels (uint8 0/1).

    A seed that falls just outside the mask (within ``search_voxels``) picks the component most present around it,
    so a clean-up step that nibbled the seed voxel away does not lose the whole object.
    """
    components = sitk.ConnectedComponent(as_mask(mask), fully_connected)
    labels = array_of(components)
    keep = set()
    for seed in seeds:
        voxel = tuple(int(v) for v in reversed(seed))
        value = int(labels[voxel])
        if value == 0:
            window = tuple(slice(max(v - search_voxels, 0), v + search_voxels + 1) for v in voxel)
            values, counts = np.unique(labels[window], return_counts=True)
            counts[values == 0] = 0
            value = int(values[np.argmax(counts)]) if counts.max() > 0 else 0
        if value:
            keep.add(value)
    return image_like(np.isin(labels, sorted(keep)).astype(np.uint8), mask)


def fill_holes(mask: sitk.Image, slice_by_slice: bool = False) -> sitk.Image:
    """Fill enclosed holes; with ``slice_by_slice`` also holes open in 3D but closed in each slice of the most
    coarsely sampled axis (vessels running through an organ)."""
    filled = sitk.BinaryFillhole(as_mask(mask), fullyConnected=False, foregroundValue=1)
    if not slice_by_slice or mask.GetDimension() != 3:
        return filled
    from scipy import ndimage

    axis = 2 - int(np.argmax(mask.GetSpacing()))  # numpy axis of the coarsest image axis
    array = np.moveaxis(sitk.GetArrayFromImage(filled).astype(bool), axis, 0)
    array = np.stack([ndimage.binary_fill_holes(plane) for plane in array])
    return image_like(np.moveaxis(array, 0, axis).astype(np.uint8), mask)


def remove_islands(mask: sitk.Image, min_ml: float) -> sitk.Image:
    """Drop connected components smaller than ``min_ml`` millilitres (mm² / 1000 for 2D images)."""
    if min_ml <= 0:
        return as_mask(mask)
    min_voxels = int(np.ceil(min_ml * 1000.0 / voxel_volume_mm3(mask)))
    components = sitk.RelabelComponent(sitk.ConnectedComponent(as_mask(mask)), minimumObjectSize=min_voxels)
    return sitk.Cast(sitk.NotEqual(components, 0), sitk.sitkUInt8)


def opening_radius(image: sitk.Image, radius_mm: float) -> list[int]:
    """A per-axis structuring-element radius in voxels for a ball of ``radius_mm`` (0 along coarse axes)."""
    return [int(np.floor(radius_mm / spacing)) for spacing in image.GetSpacing()]


def check_result(mask: sitk.Image, what: str, hint: str | Callable[[], str] = "") -> None:
    """Raise :class:`InputError` when a result is empty or covers (almost) the whole image. ``hint`` may be a
    function: it is only called (it may be costly) when the check fails."""
    array = array_of(mask)
    count = int(np.count_nonzero(array))
    if 0 < count < 0.98 * array.size:
        return
    hint = hint() if callable(hint) else hint
    suffix = f"; {hint}" if hint else ""
    if count == 0:
        raise InputError(f"{what}: the result is empty{suffix}")
    raise InputError(f"{what}: the result floods the whole image ({100.0 * count / array.size:.0f} % of the "
                     f"voxels){suffix}")
