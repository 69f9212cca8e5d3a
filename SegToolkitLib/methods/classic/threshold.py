"""Thresholding: a manual intensity range, Otsu (binary and multi-class) and hysteresis, with clean-up options."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ...errors import InputError
from ._inputs import Point, check_range, checked_float_image, seed_indices
from .cleanup import check_result, component_containing, fill_holes, largest_component, remove_islands


def threshold_range(image: sitk.Image, lower: float | None = None, upper: float | None = None) -> sitk.Image:
    """Voxels with ``lower <= value <= upper`` (a missing bound is open) as a uint8 mask."""
    check_range(lower, upper)
    if lower is None and upper is None:
        raise InputError("threshold: give --lower and/or --upper, or use --otsu or --hysteresis")
    image = checked_float_image(image)
    low = float(lower) if lower is not None else -np.inf
    high = float(upper) if upper is not None else np.inf
    array = sitk.GetArrayViewFromImage(image)
    mask = sitk.GetImageFromArray(((array >= low) & (array <= high)).astype(np.uint8))
    mask.CopyInformation(image)
    return mask


def otsu(image: sitk.Image, classes: int = 2) -> sitk.Image:
    """Otsu thresholding: with 2 classes a 0/1 mask of the bright class, with more a label image 0..classes-1."""
    if not 2 <= int(classes) <= 8:
        raise InputError(f"Otsu classes {classes}: choose 2 to 8")
    image = checked_float_image(image)
    if classes == 2:
        return sitk.OtsuThreshold(image, 0, 1, 256)
    return sitk.Cast(sitk.OtsuMultipleThresholds(image, numberOfThresholds=int(classes) - 1,
                                                 numberOfHistogramBins=256), sitk.sitkUInt8)


def hysteresis(image: sitk.Image, low: float, high: float) -> sitk.Image:
    """Voxels above ``low`` that are connected to voxels above ``high`` (uint8 mask)."""
    check_range(low, high)
    image = checked_float_image(image)
    maximum = float(sitk.GetArrayViewFromImage(image).max())
    if high > maximum:
        raise InputError(f"hysteresis high threshold {high:g} is above the image maximum {maximum:g}; "
                         "nothing would be kept")
    return sitk.Cast(sitk.DoubleThreshold(image, float(low), float(high), maximum, maximum, 1, 0), sitk.sitkUInt8)


def threshold(image: sitk.Image, lower: float | None = None, upper: float | None = None, *,
              otsu_classes: int | None = None, hysteresis_range: tuple[float, float] | None = None,
              largest: bool = False, seeds: Sequence[Point] = (), fill: bool = False, min_island_ml: float = 0.0,
              ijk: bool = False, ras: bool = False) -> sitk.Image:
    """Threshold an image and clean the result up (what ``segtoolkit threshold`` runs).

    Exactly one of a range (``lower``/``upper``), ``otsu_classes`` or ``hysteresis_range`` selects the method.
    Clean-up, in this order: drop islands below ``min_island_ml``; keep the components holding ``seeds`` (or the
    ``largest``); ``fill`` holes. Multi-class Otsu results are label images and are not cleaned up.
    """
    chosen = sum([lower is not None or upper is not None, otsu_classes is not None, hysteresis_range is not None])
    if chosen > 1:
        raise InputError("threshold: choose one of a range (--lower/--upper), --otsu or --hysteresis")
    if not min_island_ml >= 0 or not np.isfinite(min_island_ml):  # NaN compares False: it would keep everything
        raise InputError(f"minimum island size {min_island_ml:g} mL: must be a finite number, 0 or more")
    image = checked_float_image(image)
    indices = seed_indices(image, seeds, ijk, ras) if seeds else []
    if otsu_classes is not None:
        mask = otsu(image, otsu_classes)
        if otsu_classes > 2:
            return mask
    elif hysteresis_range is not None:
        mask = hysteresis(image, *hysteresis_range)
    else:
        mask = threshold_range(image, lower, upper)
    check_result(mask, "threshold", "adjust the range; see the image's value range with 'segtoolkit measure'")
    if min_island_ml > 0:
        mask = remove_islands(mask, min_island_ml)
        check_result(mask, "threshold after removing islands", f"use a --min-island-ml below {min_island_ml:g}")
    if indices:
        mask = component_containing(mask, indices, search_voxels=0)
        check_result(mask, "threshold: component at the seed", "the seed is not inside the thresholded region; "
                     "move it or widen the range")
    elif largest:
        mask = largest_component(mask)
    if fill:
        mask = fill_holes(mask)
    return mask
