"""Region growing from seed points: connected threshold, confidence connected and competitive growing.

Seeds are physical LPS points (``ijk=True``: voxel indices, ``ras=True``: RAS points). With no intensity range
the range is derived from the image around the seeds, so one click gives a usable result; the image is then
median-filtered first (a light 3-voxel median, so noise does not break the region). An explicit range (both bounds)
is applied to the intensities as given, the way a threshold preview shows them, without the median (pass
``denoised=True`` to keep it). A clean-up (a small opening that cuts thin leaks, the component holding the seeds,
filled holes) follows by default; it runs on the bounding box of the grown region only.

Connected-threshold growing picks its geometry from the image (``geometry="auto"``):

* ``"3d"`` (volumes with near-isotropic or moderately thick slices, 2D images): the range is the seed
  neighbourhood's median ± 2.5 robust SD; the region grown with it gives better statistics, so the range is
  re-estimated once from the grown region (median ± 3 robust SD) and the region grown again;
* ``"slices"`` (stacks whose slice spacing is more than 3 times the in-plane spacing and at least 6 mm, such as
  cine cardiac short-axis MRI): adjacent slices barely overlap, so 3D connectivity means little. The region is grown
  in 2D on the seed's slice and then propagated slice by slice, each slice seeded by the eroded core of its
  neighbour's result with a lower bound from a local Otsu threshold around that result's centre (bright object
  against its darker wall); propagation stops when the region vanishes or its area jumps. Each slice is opened
  (3 mm) to cut thin connections, closed to its convex hull and widened by the partial-volume band (2.5 mm), as an
  expert contour of a cavity includes the papillary muscles and the blurred border.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from ...errors import InputError
from ...io import check_same_grid
from ...progress import CancelToken, ProgressCallback, report
from ._inputs import (
    Point,
    array_of,
    check_range,
    check_values,
    checked_float_image,
    image_like,
    scalar_float_image,
    seed_indices,
)
from .cleanup import check_result, component_containing, fill_holes, opening_radius
from .feature_maps import denoise, seed_range

METHODS = ("connected", "confidence", "competitive")
GEOMETRIES = ("auto", "3d", "slices")
DEFAULT_RANGE_K = 2.5
REFINED_RANGE_K = 3.0  # robust SDs of the first grown region for the second pass
SEED_NEIGHBOURHOOD_MM = 5.0
OPENING_MM = 1.5
SLICE_RATIO, SLICE_MIN_MM = 3.0, 6.0  # "slices" geometry: slice spacing > 3 x in-plane and >= 6 mm
SLICE_WINDOW_MM = 40.0  # local Otsu window (radius) around the region centre
SLICE_OPENING_MM = 3.0
SLICE_BOUNDARY_MM = 2.5
SLICE_AREA_JUMP = 1.6  # stop propagating when the area grows by more than this factor (leak) ...
SLICE_AREA_DROP = 0.2  # ... or shrinks below this fraction (the object ended)


def connected_threshold(image: sitk.Image, seeds: Sequence[Point], lower: float | None = None,
                        upper: float | None = None, *, ijk: bool = False, ras: bool = False,
                        denoised: bool | None = None, cleanup: bool = True, range_k: float = DEFAULT_RANGE_K,
                        geometry: str = "auto", progress: ProgressCallback | None = None,
                        cancel: CancelToken | None = None, details: dict | None = None) -> sitk.Image:
    """Voxels connected to the seeds whose intensity lies in ``[lower, upper]`` (uint8 mask).

    ``denoised`` (median pre-filter) defaults to True when a bound comes from the image and False for an explicit
    range. A missing bound comes from the image (see the module docstring): in ``"3d"`` geometry from the seed
    neighbourhood (median ± ``range_k`` robust SDs within 5 mm), refined once from the grown region; in ``"slices"``
    geometry (``"auto"`` picks it for thick-slice stacks) from a local Otsu threshold per slice. A ``details`` dict
    receives what was used: ``lower``/``upper`` (the range; ``None`` where a per-slice threshold decided) and
    ``seed_values``.
    """
    if geometry not in GEOMETRIES:
        raise InputError(f"growing geometry {geometry!r}: choose one of {', '.join(GEOMETRIES)}")
    check_range(lower, upper)
    explicit_range = lower is not None and upper is not None
    if denoised is None:
        denoised = not explicit_range
    if explicit_range and not denoised:
        # A flood fill in a given range needs no look at the values first: NaN voxels are never in range and a
        # constant image gives an empty or flooded result, so the value check only runs to explain a failure.
        image = scalar_float_image(image)
        try:
            return _connected(image, seeds, lower, upper, ijk, ras, denoised, cleanup, range_k, geometry, progress,
                              cancel, details)
        except InputError:
            check_values(image)
            raise
    return _connected(checked_float_image(image), seeds, lower, upper, ijk, ras, denoised, cleanup, range_k,
                      geometry, progress, cancel, details)


def _connected(image: sitk.Image, seeds: Sequence[Point], lower: float | None, upper: float | None, ijk: bool,
               ras: bool, denoised: bool, cleanup: bool, range_k: float, geometry: str,
               progress: ProgressCallback | None, cancel: CancelToken | None,
               details: dict | None = None) -> sitk.Image:
    indices = seed_indices(image, seeds, ijk, ras)
    report(progress, 0.05, "preparing", cancel)
    work = denoise(image) if denoised else image
    if geometry == "auto":
        geometry = "slices" if is_thick_slice_stack(image) else "3d"
    if geometry == "slices":
        if image.GetDimension() != 3:
            raise InputError("slice-by-slice growing needs a 3D image; use geometry '3d' for 2D images")
        if details is not None:
            details.update(lower=lower, upper=upper, seed_values=_seed_values(image, indices), geometry="slices")
        return _grow_slices(work, indices, lower, upper, cleanup, progress, cancel)
    auto_low, auto_high = seed_range(work, indices, SEED_NEIGHBOURHOOD_MM, range_k) \
        if lower is None or upper is None else (lower, upper)
    low = float(lower) if lower is not None else auto_low
    high = float(upper) if upper is not None else auto_high
    check_range(low, high)
    grown = _grow_once(work, indices, low, high, cleanup, progress, cancel)
    if cleanup and lower is None and upper is None:
        grown, (low, high) = _refine_from_region(work, indices, grown, progress, cancel)
    if details is not None:
        details.update(lower=low, upper=high, seed_values=_seed_values(image, indices))
    report(progress, 1.0, "done")
    return grown


def estimate_intensity_range(image: sitk.Image, indices: Sequence[Sequence[int]],
                             range_k: float = DEFAULT_RANGE_K) -> tuple[float, float, np.ndarray]:
    """The intensity range one click on ``image`` stands for (voxel ``indices``), as ``grow`` derives it.

    The seed neighbourhood's median ± ``range_k`` robust SDs (5 mm, median-filtered image) grows a first region;
    its median ± 3 robust SDs is the range. Returns (lower, upper, that region as a bool array in z, y, x order).
    """
    work = denoise(checked_float_image(image))
    low, high = seed_range(work, indices, SEED_NEIGHBOURHOOD_MM, range_k)
    grown = _grow_once(work, indices, low, high, True, None, None)
    grown, (low, high) = _refine_from_region(work, indices, grown, None, None)
    return low, high, np.array(array_of(grown), dtype=bool)


def _seed_values(image: sitk.Image, indices: Sequence[Sequence[int]]) -> list[float]:
    values = array_of(image)
    return [float(values[tuple(reversed(index))]) for index in indices]


def is_thick_slice_stack(image: sitk.Image) -> bool:
    """True for 3D stacks of thick, widely spaced slices (spacing > 3x in-plane and >= 6 mm): grown per slice."""
    if image.GetDimension() != 3:
        return False
    spacing = sorted(image.GetSpacing())
    return spacing[2] > SLICE_RATIO * spacing[0] and spacing[2] >= SLICE_MIN_MM


def _grow_once(work: sitk.Image, indices, low: float, high: float, cleanup: bool, progress, cancel) -> sitk.Image:
    report(progress, 0.3, f"growing in [{low:.4g}, {high:.4g}]", cancel)
    grown = sitk.ConnectedThreshold(work, [list(index) for index in indices], low, high, 1)

    def hint() -> str:
        return _range_hint(work, indices, low, high)

    check_result(grown, f"region growing in [{low:.4g}, {high:.4g}]", hint)
    if cleanup:
        report(progress, 0.6, "cleaning up", cancel)
        grown = clean_grown_region(grown, indices)
        check_result(grown, "region growing after clean-up", hint)
    return grown


def _refine_from_region(work: sitk.Image, indices, grown: sitk.Image, progress,
                        cancel) -> tuple[sitk.Image, tuple[float, float]]:
    """Grow again with the range of the first region (median ± 3 robust SDs); keep the first result when the second
    one fails or more than doubles (a leak). Returns the region and the range it was grown with."""
    values = array_of(work)[array_of(grown) != 0].astype(np.float64)
    centre = float(np.median(values))
    spread = max(1.4826 * float(np.median(np.abs(values - centre))), 1e-6)
    low, high = centre - REFINED_RANGE_K * spread, centre + REFINED_RANGE_K * spread
    first_range = (float(values.min()), float(values.max()))
    report(progress, 0.75, f"refining the range to [{low:.4g}, {high:.4g}]", cancel)
    try:
        refined = _grow_once(work, indices, low, high, True, None, cancel)
    except InputError:
        return grown, first_range
    first, second = int(np.count_nonzero(array_of(grown))), int(np.count_nonzero(array_of(refined)))
    return (refined, (low, high)) if second <= 2 * first else (grown, first_range)


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


def clean_grown_region(mask: sitk.Image, indices: Sequence[Sequence[int]], crop: bool = True) -> sitk.Image:
    """Cut thin leaks (opening of about 1.5 mm on the finely sampled axes), keep what holds the seeds, fill holes.
    With ``crop`` it works on the bounding box of the region and the seeds (plus a margin): the same result, faster."""
    radius = opening_radius(mask, OPENING_MM)
    if not crop:
        return _clean_region(mask, indices, radius)
    region = np.array(array_of(mask), dtype=bool)
    for index in indices:
        region[tuple(reversed(index))] = True
    box = _bounding_box(region, margin=max(radius) + 2)
    if all(b.stop - b.start == n for b, n in zip(box, region.shape)):
        return _clean_region(mask, indices, radius)
    start = [b.start for b in reversed(box)]
    crop = sitk.RegionOfInterest(mask, [b.stop - b.start for b in reversed(box)], start)
    cleaned = _clean_region(crop, [tuple(i - s for i, s in zip(index, start)) for index in indices], radius)
    full = np.zeros(region.shape, dtype=np.uint8)
    full[box] = array_of(cleaned)
    return image_like(full, mask)


def _clean_region(mask: sitk.Image, indices, radius: list[int]) -> sitk.Image:
    opened = sitk.BinaryMorphologicalOpening(mask, radius, sitk.sitkBall, 0, 1) if any(radius) else mask
    kept = component_containing(opened, indices, search_voxels=max(radius) + 1)
    if not array_of(kept).any():  # the object is thinner than the opening: keep it unopened
        kept = component_containing(mask, indices)
    return fill_holes(kept, slice_by_slice=True)


def _grow_slices(work: sitk.Image, indices, lower: float | None, upper: float | None, cleanup: bool,
                 progress, cancel) -> sitk.Image:
    """Slice-by-slice growing on a thick-slice stack (see the module docstring); uint8 mask on the input grid."""
    axis = 2 - int(np.argmax(work.GetSpacing()))  # numpy axis across the slices
    volume = np.moveaxis(array_of(work), axis, 0)
    plane_spacing = float(np.mean([s for i, s in enumerate(work.GetSpacing()) if 2 - i != axis]))
    voxels = [(index[::-1][axis], *(index[::-1][a] for a in range(3) if a != axis)) for index in indices]
    upper = np.inf if upper is None else upper  # a bright object (blood pool) against its darker wall
    result = np.zeros(volume.shape, dtype=bool)
    for start in sorted({voxel[0] for voxel in voxels}):
        plane_seeds = [voxel[1:] for voxel in voxels if voxel[0] == start]
        first = _grow_plane(volume[start], plane_seeds, lower, upper, plane_spacing, cleanup, seed_disk=True)
        if not first.any():
            hint = _range_hint(work, indices, lower if lower is not None else -np.inf, upper)
            raise InputError(f"slice-by-slice growing: the region on the seed's slice {start} is empty; {hint}")
        result[start] |= first
        for direction in (1, -1):
            previous, index = first, start + direction
            while 0 <= index < volume.shape[0] and not result[index].any():
                report(progress, 0.2 + 0.7 * np.count_nonzero(result.any(axis=(1, 2))) / volume.shape[0],
                       f"slice {index}", cancel)
                current = _propagate(volume[index], previous, lower, upper, plane_spacing, cleanup)
                if current is None:
                    break
                result[index], previous, index = current, current, index + direction
    mask = image_like(np.moveaxis(result, 0, axis).astype(np.uint8), work)
    check_result(mask, "slice-by-slice region growing", "give --lower/--upper or use geometry '3d'")
    report(progress, 1.0, "done")
    return mask


def _propagate(plane: np.ndarray, previous: np.ndarray, lower, upper, spacing: float, cleanup: bool):
    """The region on a neighbouring slice, seeded by the previous slice's eroded core; None when it ends or jumps."""
    from scipy import ndimage

    core = ndimage.binary_erosion(previous, _disk(3.0, spacing))
    core = core if core.any() else previous
    low = lower if lower is not None else _local_otsu(plane, np.argwhere(previous).mean(axis=0), spacing)
    seeds = [tuple(p) for p in np.argwhere(core & (plane >= low) & (plane <= upper))]
    if not seeds:
        return None
    current = _grow_plane(plane, seeds, lower, upper, spacing, cleanup, low=low)
    ratio = np.count_nonzero(current) / max(np.count_nonzero(previous), 1)
    return current if SLICE_AREA_DROP <= ratio <= SLICE_AREA_JUMP else None


def _grow_plane(plane: np.ndarray, seeds, lower, upper, spacing: float, cleanup: bool, seed_disk: bool = False,
                low: float | None = None) -> np.ndarray:
    """2D growing on one slice: threshold from ``low``/``lower`` (local Otsu by default), opening, hull, border."""
    from scipy import ndimage
    from skimage.morphology import convex_hull_image

    if low is None:
        low = lower if lower is not None else _local_otsu(plane, np.mean(seeds, axis=0), spacing)
    inside = (plane >= low) & (plane <= upper)
    if seed_disk:  # a click on a dark spot (papillary muscle, flow void) still starts the region nearby
        seeds = _seeds_near(inside, seeds, spacing)
    region = _components_at(inside, seeds)
    if not cleanup or not region.any():
        return region
    opened = _components_at(ndimage.binary_opening(region, _disk(SLICE_OPENING_MM, spacing)), seeds)
    region = opened if opened.any() else region
    region = convex_hull_image(ndimage.binary_fill_holes(region))
    return ndimage.binary_dilation(region, _disk(SLICE_BOUNDARY_MM, spacing))


def _components_at(mask: np.ndarray, seeds) -> np.ndarray:
    from scipy import ndimage

    labels, _ = ndimage.label(mask)
    keep = {int(labels[tuple(int(v) for v in seed)]) for seed in seeds} - {0}
    return np.isin(labels, sorted(keep)) if keep else np.zeros_like(mask)


def _seeds_near(inside: np.ndarray, seeds, spacing: float) -> list:
    """The in-range pixels within 3 mm of each seed (the seeds themselves when none is in range)."""
    reach = max(int(round(3.0 / spacing)), 1)
    found = []
    for y, x in seeds:
        window = inside[max(y - reach, 0):y + reach + 1, max(x - reach, 0):x + reach + 1]
        found += [(max(y - reach, 0) + dy, max(x - reach, 0) + dx) for dy, dx in np.argwhere(window)]
    return found or list(seeds)


def _local_otsu(plane: np.ndarray, centre, spacing: float) -> float:
    """Otsu threshold in a window of SLICE_WINDOW_MM radius around ``centre`` (object against its surroundings)."""
    from skimage.filters import threshold_otsu

    reach = int(round(SLICE_WINDOW_MM / spacing))
    y, x = (int(round(v)) for v in centre)
    return float(threshold_otsu(plane[max(y - reach, 0):y + reach + 1, max(x - reach, 0):x + reach + 1]))


def _disk(radius_mm: float, spacing: float) -> np.ndarray:
    radius = max(int(round(radius_mm / spacing)), 1)
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return yy ** 2 + xx ** 2 <= radius ** 2


def competitive_growing(image: sitk.Image, seeds: Mapping[int, Sequence[Point]] | None = None,
                        seed_map: sitk.Image | None = None, mask: sitk.Image | None = None, *,
                        ijk: bool = False, ras: bool = False, sigma_mm: float | None = None,
                        multiresolution: bool | None = None, progress: ProgressCallback | None = None,
                        cancel: CancelToken | None = None) -> sitk.Image:
    """Grow several labels at once from their seeds until they meet, like Slicer's "Grow from seeds".

    ``seeds`` maps a label value to seed points; label 0 means background seeds (they compete but are 0 in the
    result). ``seed_map`` is a label image on the same grid whose non-zero voxels are seeds of their label (use
    a dedicated value for background seeds and drop it afterwards, or pass background points under label 0).
    Voxels outside ``mask`` stay 0 (only the mask's bounding box is processed). Growing floods the gradient-magnitude
    image (Gaussian of ``sigma_mm``, quantised to 256 levels) from the seeds (marker-based watershed), so each label
    stops where the image changes most between the seed regions.

    Large images (``multiresolution=None``: from 2 million voxels) are flooded coarse to fine: first on a grid
    halved along the finely sampled axes, whose cells carry the strongest edge they contain (thin walls still
    stop the flood), then again at full resolution in a band of about two cells around the coarse borders between
    labels, with everything outside the band fixed.
    """
    image = checked_float_image(image)
    markers, background_marker = _competitive_markers(image, seeds, seed_map, ijk, ras)
    box = tuple(slice(0, n) for n in markers.shape)
    allowed = None
    if mask is not None:
        check_same_grid(mask, image, "mask", "image")
        allowed = sitk.GetArrayViewFromImage(mask) != 0
        if not allowed.any():
            raise InputError("mask: is empty; competitive growing has nowhere to grow")
        box = _bounding_box(allowed, margin=1)
        allowed = allowed[box]
    report(progress, 0.1, "computing the edge image", cancel)
    spacing = np.array(image.GetSpacing())[::-1]  # numpy axis order
    sigma = float(sigma_mm) if sigma_mm is not None else float(spacing.min())
    cost = edge_levels(sitk.GetArrayViewFromImage(image)[box], spacing, sigma, allowed)
    report(progress, 0.4, "growing", cancel)
    seeds_in_box = markers[box].copy()
    if allowed is not None:
        seeds_in_box[~allowed] = 0
    factors = _coarse_factors(cost.shape, spacing)
    if multiresolution is None:
        multiresolution = cost.size >= MULTIRESOLUTION_MIN_VOXELS
    if multiresolution and int(np.prod(factors)) >= 4:
        grown = _coarse_to_fine_watershed(cost, seeds_in_box, factors, allowed, progress, cancel)
    else:
        grown = _watershed(cost, seeds_in_box)
    grown[grown == background_marker] = 0
    if allowed is not None:
        grown[~allowed] = 0
    labels = np.zeros(markers.shape, dtype=grown.dtype)
    labels[box] = grown
    report(progress, 1.0, "done")
    pixel_type = sitk.sitkUInt8 if labels.max() < 256 else sitk.sitkUInt16
    return image_like(labels, image, pixel_type)


MULTIRESOLUTION_MIN_VOXELS = 2_000_000
EDGE_LEVELS = 256  # quantised gradient: ITK's watershed keeps one queue per grey level
EDGE_CAP_PERCENTILE = 99.9  # gradients above it are all "strong edge" (one outlier does not squash the scale)


MAX_COMPETITIVE_LABEL = 65534  # markers are 16-bit and the background seeds take the value above the largest


def _competitive_markers(image: sitk.Image, seeds, seed_map, ijk: bool, ras: bool) -> tuple[np.ndarray, int]:
    """The marker array (z, y, x; background seeds under their own value) and that background value."""
    markers = np.zeros(sitk.GetArrayViewFromImage(image).shape, dtype=np.uint16)
    if seed_map is not None:
        check_same_grid(seed_map, image, "seed label map", "image")
        seed_values = sitk.GetArrayViewFromImage(seed_map)
        if seed_values.min() < 0 or np.any(seed_values != np.round(seed_values)):
            raise InputError("seed label map: must hold whole, non-negative label values")
        if seed_values.max() > MAX_COMPETITIVE_LABEL:
            raise InputError(f"seed label map: label {int(seed_values.max())} is too large; competitive growing "
                             f"takes labels 1..{MAX_COMPETITIVE_LABEL}")
        markers[seed_values > 0] = seed_values[seed_values > 0].astype(np.uint16)
    background_marker = int(max(markers.max(), max((seeds or {0: []}).keys(), default=0))) + 1
    for label, points in (seeds or {}).items():
        if not 0 <= label <= MAX_COMPETITIVE_LABEL:
            raise InputError(f"seed label {label}: must be 0 (background) or 1..{MAX_COMPETITIVE_LABEL}")
        for index in seed_indices(image, points, ijk, ras, what=f"seed of label {label}"):
            markers[tuple(reversed(index))] = label if label > 0 else background_marker
    present = np.unique(markers[markers > 0])
    if present.size < 2:
        raise InputError("competitive growing needs seeds of at least two labels (e.g. the object and "
                         "--background-seed points); only " + (f"label {int(present[0])}" if present.size else
                                                               "no label") + " was given")
    return markers, background_marker


def edge_levels(array: np.ndarray, spacing: np.ndarray, sigma_mm: float, allowed: np.ndarray | None = None
                ) -> np.ndarray:
    """Gradient magnitude (per mm) of the Gaussian-smoothed image, quantised to uint8 levels; voxels outside
    ``allowed`` get the top level so they are flooded last and labels do not travel around a mask."""
    from scipy import ndimage

    smoothed = ndimage.gaussian_filter(np.asarray(array, dtype=np.float32), sigma_mm / spacing, truncate=3.0,
                                       mode="nearest")
    magnitude = np.zeros_like(smoothed)
    for axis, h in enumerate(spacing):
        if smoothed.shape[axis] < 3:
            continue
        upper = [slice(None)] * smoothed.ndim
        lower, inner = list(upper), list(upper)
        upper[axis], lower[axis], inner[axis] = slice(2, None), slice(None, -2), slice(1, -1)
        difference = smoothed[tuple(upper)] - smoothed[tuple(lower)]
        difference *= np.float32(0.5 / h)
        np.square(difference, out=difference)
        magnitude[tuple(inner)] += difference
    np.sqrt(magnitude, out=magnitude)
    sample = magnitude[allowed] if allowed is not None else magnitude.ravel()[::7]
    cap = float(np.percentile(sample, EDGE_CAP_PERCENTILE)) if sample.size else 0.0
    cap = cap if cap > 0 else max(float(magnitude.max()), 1e-12)
    top = EDGE_LEVELS - 1 if allowed is None else EDGE_LEVELS - 2
    magnitude *= np.float32(top / cap)
    levels = np.minimum(magnitude, top).astype(np.uint8)
    if allowed is not None:
        levels[~allowed] = EDGE_LEVELS - 1
    return levels


def _watershed(cost: np.ndarray, markers: np.ndarray) -> np.ndarray:
    """ITK's marker-based watershed (face connectivity, no watershed line) on numpy arrays."""
    grown = sitk.MorphologicalWatershedFromMarkers(sitk.GetImageFromArray(cost), sitk.GetImageFromArray(markers),
                                                   markWatershedLine=False, fullyConnected=False)
    return sitk.GetArrayFromImage(grown)


def _coarse_factors(shape: Sequence[int], spacing: np.ndarray) -> tuple[int, ...]:
    """Shrink factor per numpy axis for the coarse pass: 2 along finely sampled axes of at least 32 voxels."""
    return tuple(2 if s <= 1.5 * spacing.min() and n >= 32 else 1 for n, s in zip(shape, spacing))


def _coarse_to_fine_watershed(cost: np.ndarray, markers: np.ndarray, factors: tuple[int, ...],
                              allowed: np.ndarray | None, progress, cancel) -> np.ndarray:
    """Watershed on a coarse grid (cell cost = its strongest edge), refined at full resolution near label borders."""
    from scipy import ndimage

    coarse_cost = _block_max(cost, factors)
    coarse_markers, unsure = _coarse_markers(markers, factors, coarse_cost.shape)
    coarse = _watershed(coarse_cost, coarse_markers)
    report(progress, 0.6, "refining the borders at full resolution", cancel)
    unsure |= _label_borders(coarse)
    if allowed is not None:  # cells that mix allowed and masked voxels
        unsure |= _block_max(~allowed, factors) & ~_block_max(~allowed, factors, reduce=np.min)
    seeds = np.argwhere(markers)
    cells = tuple((seeds // factors).T)
    wrong = markers[tuple(seeds.T)] != coarse[cells]  # seeds the coarse pass lost (thin structures)
    unsure[tuple(c[wrong] for c in cells)] = True
    # cells with a strong edge inside may hide thin channels or walls: unsure too where connected to the unsure ones
    edged = (coarse_cost - _block_max(cost, factors, reduce=np.min)) >= THIN_EDGE_LEVEL
    unsure = ndimage.binary_propagation(unsure, mask=unsure | edged)
    fine = _upsample(coarse, factors, cost.shape)
    neighbourhood = np.ones((3,) * unsure.ndim, dtype=bool)
    for attempt in range(REFINEMENT_ROUNDS):
        unsure = ndimage.binary_dilation(unsure, neighbourhood, iterations=2 ** attempt)
        band = _upsample(unsure, factors, cost.shape)
        fine[band] = 0
        fine[markers > 0] = markers[markers > 0]
        box = _bounding_box(band, margin=1)
        fine[box] = _watershed(cost[box], fine[box])
        # a border pinned to the band's edge means the coarse pass was wrong beyond it (a thin structure): widen
        unsure = _pinned_cells(fine[box], band[box], [b.start for b in box], factors, coarse.shape)
        if not unsure.any():
            break
    return fine


REFINEMENT_ROUNDS = 6
THIN_EDGE_LEVEL = EDGE_LEVELS // 4


def _pinned_cells(labels: np.ndarray, band: np.ndarray, offset, factors, shape) -> np.ndarray:
    """Coarse cells on both sides of band-edge voxels whose label differs from their fixed neighbour outside."""
    pinned = np.zeros(shape, dtype=bool)
    for axis in range(labels.ndim):
        first, second = [slice(None)] * labels.ndim, [slice(None)] * labels.ndim
        first[axis], second[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(first), tuple(second)
        edge = (band[a] != band[b]) & (labels[a] != labels[b])
        for side in (a, b):
            voxels = np.argwhere(edge) + [s.start or 0 for s in side] + np.asarray(offset)
            pinned[tuple((voxels // factors).T)] = True
    return pinned


def _block_max(array: np.ndarray, factors: tuple[int, ...], reduce=np.max) -> np.ndarray:
    """``reduce`` over blocks of ``factors`` voxels (the border padded by repeating its last voxels)."""
    padded = np.pad(array, [(0, -n % f) for n, f in zip(array.shape, factors)], mode="edge")
    blocks = padded.reshape([v for n, f in zip(padded.shape, factors) for v in (n // f, f)])
    return reduce(blocks, axis=tuple(range(1, blocks.ndim, 2)))


def _coarse_markers(markers: np.ndarray, factors: tuple[int, ...], shape) -> tuple[np.ndarray, np.ndarray]:
    """Seeds on the coarse grid; cells holding seeds of different labels get none and are marked unsure."""
    seeds = np.argwhere(markers)
    values = markers[tuple(seeds.T)]
    cells = tuple((seeds // factors).T)
    highest, lowest = np.zeros(shape, markers.dtype), np.full(shape, np.iinfo(markers.dtype).max, markers.dtype)
    np.maximum.at(highest, cells, values)
    np.minimum.at(lowest, cells, values)
    unsure = (highest > 0) & (highest != lowest)
    highest[unsure] = 0
    return highest, unsure


def _label_borders(labels: np.ndarray) -> np.ndarray:
    """Voxels with a face neighbour of another label."""
    borders = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        differs = np.diff(labels, axis=axis) != 0
        before, after = [slice(None)] * labels.ndim, [slice(None)] * labels.ndim
        before[axis], after[axis] = slice(None, -1), slice(1, None)
        borders[tuple(before)] |= differs
        borders[tuple(after)] |= differs
    return borders


def _upsample(array: np.ndarray, factors: tuple[int, ...], shape) -> np.ndarray:
    """Nearest-neighbour upsampling by ``factors``, cropped to ``shape``."""
    for axis, factor in enumerate(factors):
        if factor > 1:
            array = np.repeat(array, factor, axis=axis)
    return np.ascontiguousarray(array[tuple(slice(0, n) for n in shape)])


def _bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """The slices of the smallest box holding ``mask``'s non-zero voxels, widened by ``margin`` voxels."""
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def grow(image: sitk.Image, seeds: Sequence[Point] = (), method: str = "connected", *,
         background_seeds: Sequence[Point] = (), labelled_seeds: Mapping[int, Sequence[Point]] | None = None,
         seed_map: sitk.Image | None = None, mask: sitk.Image | None = None, lower: float | None = None,
         upper: float | None = None, geometry: str = "auto", ijk: bool = False, ras: bool = False,
         progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
         details: dict | None = None) -> sitk.Image:
    """One entry point for the three growing methods (what ``segtoolkit grow`` runs); returns a label image.
    ``geometry`` (connected only): "auto", "3d" or "slices" (see the module docstring). ``details`` (connected
    only) receives the intensity range used and the seed values."""
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
        result = connected_threshold(image, seeds, lower, upper, ijk=ijk, ras=ras, geometry=geometry,
                                     progress=progress, cancel=cancel, details=details)
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
