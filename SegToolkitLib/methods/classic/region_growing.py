"""Region growing from seed points: connected threshold, confidence connected and competitive growing.

Seeds are physical LPS points (``ijk=True``: voxel indices, ``ras=True``: RAS points). With no intensity range
the range is derived from the seed neighbourhood, so one click gives a usable result; a light median filter and a
clean-up (a small opening that cuts thin leaks, the component holding the seeds, filled holes) follow by default.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from ...errors import InputError
from ...io import check_same_grid
from ...progress import CancelToken, ProgressCallback, report
from ._inputs import Point, array_of, check_range, checked_float_image, image_like, seed_indices
from .cleanup import check_result, component_containing, fill_holes, opening_radius
from .feature_maps import denoise, gradient_magnitude, seed_range

METHODS = ("connected", "confidence", "competitive")
DEFAULT_RANGE_K = 2.5
SEED_NEIGHBOURHOOD_MM = 5.0
OPENING_MM = 1.5


def connected_threshold(image: sitk.Image, seeds: Sequence[Point], lower: float | None = None,
                        upper: float | None = None, *, ijk: bool = False, ras: bool = False,
                        denoised: bool = True, cleanup: bool = True, range_k: float = DEFAULT_RANGE_K,
                        progress: ProgressCallback | None = None,
                        cancel: CancelToken | None = None) -> sitk.Image:
    """Voxels connected to the seeds whose (median-filtered) intensity lies in ``[lower, upper]`` (uint8 mask).

    A missing bound comes from the seed neighbourhood: median ± ``range_k`` robust standard deviations within
    5 mm of the seeds.
    """
    check_range(lower, upper)
    image = checked_float_image(image)
    indices = seed_indices(image, seeds, ijk, ras)
    report(progress, 0.05, "preparing", cancel)
    work = denoise(image) if denoised else image
    auto_low, auto_high = seed_range(work, indices, SEED_NEIGHBOURHOOD_MM, range_k) \
        if lower is None or upper is None else (lower, upper)
    low = float(lower) if lower is not None else auto_low
    high = float(upper) if upper is not None else auto_high
    check_range(low, high)
    report(progress, 0.3, f"growing in [{low:.4g}, {high:.4g}]", cancel)
    grown = sitk.ConnectedThreshold(work, [list(index) for index in indices], low, high, 1)
    hint = _range_hint(work, indices, low, high)
    check_result(grown, f"region growing in [{low:.4g}, {high:.4g}]", hint)
    if cleanup:
        report(progress, 0.7, "cleaning up", cancel)
        grown = clean_grown_region(grown, indices)
        check_result(grown, "region growing after clean-up", hint)
    report(progress, 1.0, "done")
    return grown


def confidence_connected(image: sitk.Image, seeds: Sequence[Point], *, multiplier: float = 2.5,
                         iterations: int = 4, neighbourhood_voxels: int = 2, ijk: bool = False, ras: bool = False,
                         denoised: bool = True, cleanup: bool = True, progress: ProgressCallback | None = None,
                         cancel: CancelToken | None = None) -> sitk.Image:
    """ITK confidence connected: grow within mean ± ``multiplier``·std of the region, re-estimated
    ``iterations`` times from the grown region (uint8 mask)."""
    if not multiplier > 0:
        raise InputError(f"confidence multiplier {multiplier}: must be positive")
    image = checked_float_image(image)
    indices = seed_indices(image, seeds, ijk, ras)
    report(progress, 0.05, "preparing", cancel)
    work = denoise(image) if denoised else image
    report(progress, 0.3, "growing", cancel)
    grown = sitk.ConfidenceConnected(work, [list(index) for index in indices], numberOfIterations=int(iterations),
                                     multiplier=float(multiplier), initialNeighborhoodRadius=int(neighbourhood_voxels),
                                     replaceValue=1)
    hint = "try a smaller --multiplier or an explicit range with --method connected --lower/--upper"
    check_result(grown, "confidence connected growing", hint)
    if cleanup:
        report(progress, 0.7, "cleaning up", cancel)
        grown = clean_grown_region(grown, indices)
        check_result(grown, "confidence connected growing after clean-up", hint)
    report(progress, 1.0, "done")
    return sitk.Cast(grown, sitk.sitkUInt8)


def clean_grown_region(mask: sitk.Image, indices: Sequence[Sequence[int]]) -> sitk.Image:
    """Cut thin leaks (opening of about 1.5 mm on the finely sampled axes), keep what holds the seeds, fill holes."""
    radius = opening_radius(mask, OPENING_MM)
    opened = sitk.BinaryMorphologicalOpening(mask, radius, sitk.sitkBall, 0, 1) if any(radius) else mask
    kept = component_containing(opened, indices, search_voxels=max(radius) + 1)
    if not array_of(kept).any():  # the object is thinner than the opening: keep it unopened
        kept = component_containing(mask, indices)
    return fill_holes(kept, slice_by_slice=True)


def competitive_growing(image: sitk.Image, seeds: Mapping[int, Sequence[Point]] | None = None,
                        seed_map: sitk.Image | None = None, mask: sitk.Image | None = None, *,
                        ijk: bool = False, ras: bool = False, sigma_mm: float | None = None,
                        progress: ProgressCallback | None = None,
                        cancel: CancelToken | None = None) -> sitk.Image:
    """Grow several labels at once from their seeds until they meet, like Slicer's "Grow from seeds".

    ``seeds`` maps a label value to seed points; label 0 means background seeds (they compete but are 0 in the
    result). ``seed_map`` is a label image on the same grid whose non-zero voxels are seeds of their label (use
    a dedicated value for background seeds and drop it afterwards, or pass background points under label 0).
    Voxels outside ``mask`` stay 0. Growing floods the gradient-magnitude image from the seeds (marker-based
    watershed), so each label stops where the image changes most between the seed regions.
    """
    image = checked_float_image(image)
    markers = np.zeros(sitk.GetArrayViewFromImage(image).shape, dtype=np.uint16)
    if seed_map is not None:
        check_same_grid(seed_map, image, "seed label map", "image")
        seed_values = sitk.GetArrayFromImage(seed_map)
        if seed_values.min() < 0 or np.any(seed_values != np.round(seed_values)):
            raise InputError("seed label map: must hold whole, non-negative label values")
        markers[seed_values > 0] = seed_values[seed_values > 0].astype(np.uint16)
    background_marker = int(max(markers.max(), max((seeds or {0: []}).keys(), default=0))) + 1
    for label, points in (seeds or {}).items():
        if label < 0:
            raise InputError(f"seed label {label}: must be 0 (background) or positive")
        for index in seed_indices(image, points, ijk, ras, what=f"seed of label {label}"):
            markers[tuple(reversed(index))] = label if label > 0 else background_marker
    present = np.unique(markers[markers > 0])
    if present.size < 2:
        raise InputError("competitive growing needs seeds of at least two labels (e.g. the object and "
                         "--background-seed points); only " + (f"label {int(present[0])}" if present.size else
                                                               "no label") + " was given")
    report(progress, 0.1, "computing the edge image", cancel)
    sigma = float(sigma_mm) if sigma_mm is not None else float(min(image.GetSpacing()))
    speed = gradient_magnitude(image, sigma)
    allowed = None
    if mask is not None:
        check_same_grid(mask, image, "mask", "image")
        allowed = sitk.GetArrayViewFromImage(mask) != 0
        markers[~allowed] = 0
        gradient = sitk.GetArrayFromImage(speed)
        gradient[~allowed] = gradient.max() * 2 + 1  # flooded last: labels do not travel around the mask
        speed = image_like(gradient, image, sitk.sitkFloat32)
    report(progress, 0.4, "growing", cancel)
    marker_image = image_like(markers, image, sitk.sitkUInt16)
    grown = sitk.MorphologicalWatershedFromMarkers(speed, marker_image, markWatershedLine=False,
                                                   fullyConnected=False)
    labels = sitk.GetArrayFromImage(grown)
    labels[labels == background_marker] = 0
    if allowed is not None:
        labels[~allowed] = 0
    report(progress, 1.0, "done")
    pixel_type = sitk.sitkUInt8 if labels.max() < 256 else sitk.sitkUInt16
    return image_like(labels, image, pixel_type)


def grow(image: sitk.Image, seeds: Sequence[Point] = (), method: str = "connected", *,
         background_seeds: Sequence[Point] = (), labelled_seeds: Mapping[int, Sequence[Point]] | None = None,
         seed_map: sitk.Image | None = None, mask: sitk.Image | None = None, lower: float | None = None,
         upper: float | None = None, ijk: bool = False, ras: bool = False,
         progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> sitk.Image:
    """One entry point for the three growing methods (what ``segtoolkit grow`` runs); returns a label image."""
    if method not in METHODS:
        raise InputError(f"growing method {method!r}: choose one of {', '.join(METHODS)}")
    if method == "competitive":
        groups: dict[int, list] = {label: list(points) for label, points in (labelled_seeds or {}).items()}
        if seeds:
            groups.setdefault(1, []).extend(seeds)
        if background_seeds:
            groups.setdefault(0, []).extend(background_seeds)
        return competitive_growing(image, groups, seed_map, mask, ijk=ijk, ras=ras, progress=progress,
                                   cancel=cancel)
    if background_seeds or labelled_seeds or seed_map is not None:
        raise InputError("background seeds, labelled seeds and seed label maps need --method competitive")
    if not seeds:
        raise InputError("region growing: give at least one --seed")
    if method == "confidence":
        if lower is not None or upper is not None:
            raise InputError("--lower/--upper are for --method connected; confidence growing finds its own range")
        result = confidence_connected(image, seeds, ijk=ijk, ras=ras, progress=progress, cancel=cancel)
    else:
        result = connected_threshold(image, seeds, lower, upper, ijk=ijk, ras=ras, progress=progress, cancel=cancel)
    if mask is not None:
        check_same_grid(mask, image, "mask", "image")
        result = sitk.Mask(result, sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8))
        check_result(result, "region growing inside the mask", "the mask does not overlap the grown region")
    return result


def _range_hint(image: sitk.Image, indices: Sequence[Sequence[int]], low: float, high: float) -> str:
    """A suggestion naming the intensity range around the seeds, for empty or flooding results."""
    values = array_of(image)
    seed_values = [float(values[tuple(reversed(index))]) for index in indices]
    around_low, around_high = seed_range(image, indices, SEED_NEIGHBOURHOOD_MM, 1.5)
    outside = [v for v in seed_values if not low <= v <= high]
    prefix = f"the seed value {outside[0]:.4g} is outside the range; " if outside else ""
    return (f"{prefix}values around the seed lie in about [{around_low:.4g}, {around_high:.4g}]; try "
            f"--lower {around_low:.4g} --upper {around_high:.4g} or place the seed inside the structure")
