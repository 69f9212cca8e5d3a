"""Feature images for region growing and snakes, as ITK-SNAP users know them.

* edge map: smoothed gradient magnitude through a decreasing sigmoid: about 1 in flat regions, near 0 on edges;
* region probability: +1 inside an intensity range, -1 outside, with a soft transition;
* statistics of the seed neighbourhood, from which the defaults (ranges, edge strength) are derived.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ._inputs import array_of

Index = Sequence[int]


def smooth(image: sitk.Image, sigma_mm: float) -> sitk.Image:
    """Gaussian smoothing with ``sigma_mm`` (physical units); the input itself when ``sigma_mm`` is 0."""
    if sigma_mm <= 0:
        return sitk.Cast(image, sitk.sitkFloat32)
    return sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), float(sigma_mm))


def denoise(image: sitk.Image) -> sitk.Image:
    """Edge-preserving median filter over the nearest neighbours of the finely sampled axes (3x3 in-plane on thick
    slices, 3x3x3 on near-isotropic volumes)."""
    spacing = np.array(image.GetSpacing())
    radius = [1 if s <= 1.5 * spacing.min() else 0 for s in spacing]
    return sitk.Median(sitk.Cast(image, sitk.sitkFloat32), radius)


def ball_values(image: sitk.Image, seeds: Sequence[Index], radius_mm: float) -> np.ndarray:
    """The values of all voxels within ``radius_mm`` of any seed (at least the seed voxels themselves)."""
    array = array_of(image)
    spacing = np.array(image.GetSpacing())[::-1]
    values = []
    for seed in seeds:
        centre = np.array(seed[::-1])
        reach = np.floor(radius_mm / spacing).astype(int)
        low = np.maximum(centre - reach, 0)
        high = np.minimum(centre + reach + 1, array.shape)
        box = array[tuple(slice(lo, hi) for lo, hi in zip(low, high))]
        grids = np.ogrid[tuple(slice(lo - c, hi - c) for lo, hi, c in zip(low, high, centre))]
        distance2 = sum((grid * s) ** 2 for grid, s in zip(grids, spacing))
        values.append(box[distance2 <= radius_mm ** 2])
    return np.concatenate(values)


def seed_range(image: sitk.Image, seeds: Sequence[Index], radius_mm: float, k: float) -> tuple[float, float]:
    """An intensity range ``mean ± k·std`` of the seed neighbourhood (robust mean and spread)."""
    values = ball_values(image, seeds, radius_mm).astype(np.float64)
    centre = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - centre)))
    spread = max(spread, float(np.std(values)) * 0.5, _intensity_floor(image))
    return centre - k * spread, centre + k * spread


def _intensity_floor(image: sitk.Image) -> float:
    """A minimal spread (0.5 % of the robust image range) so perfectly flat seed regions still get a range."""
    low, high = np.percentile(array_of(image), [1, 99])
    return max(float(high - low), 1e-6) * 0.005


def gradient_magnitude(image: sitk.Image, sigma_mm: float) -> sitk.Image:
    """Gradient magnitude of the image smoothed with a Gaussian of ``sigma_mm``."""
    return sitk.GradientMagnitudeRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), float(sigma_mm))


def edge_map(gradient: sitk.Image, edge_strength: float, softness: float | None = None) -> sitk.Image:
    """ITK-SNAP style edge map: ``1 / (1 + exp((|∇I| - edge_strength) / softness))``; 1 = flat, 0 = strong edge."""
    softness = softness if softness is not None else edge_strength / 4.0
    return sitk.Sigmoid(gradient, alpha=-float(max(softness, 1e-6)), beta=float(edge_strength),
                        outputMaximum=1.0, outputMinimum=0.0)


def region_probability(image: sitk.Image, lower: float, upper: float, softness: float) -> sitk.Image:
    """+1 inside ``[lower, upper]``, -1 outside, with sigmoid transitions of width ``softness`` (intensity units)."""
    array = array_of(image).astype(np.float32)
    softness = max(float(softness), 1e-6)
    inside = np.minimum(_sigmoid((array - lower) / softness), _sigmoid((upper - array) / softness))
    result = sitk.GetImageFromArray(2.0 * inside - 1.0)
    result.CopyInformation(image)
    return result


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


SEED_NEIGHBOURHOOD_MM = 5.0
UNLIKE_NEIGHBOURHOOD_SD = 3.0


def seed_warnings(image: sitk.Image, seeds: Sequence[Index], radius_mm: float = SEED_NEIGHBOURHOOD_MM) -> list[str]:
    """Warnings for seeds (voxel indices) that lie in tissue unlike their neighbourhood: a seed on a small bright
    spot, a vessel or an edge, whose value is more than 3 robust SDs from the median within ``radius_mm``."""
    array = array_of(image)
    floor = _intensity_floor(image)
    warnings = []
    for seed in seeds:
        centre = tuple(int(v) for v in seed[::-1])
        box = tuple(slice(max(c - 1, 0), c + 2) for c in centre)
        value = float(np.median(array[box]))  # the voxel and its direct neighbours: noise alone does not warn
        around = ball_values(image, [seed], radius_mm).astype(np.float64)
        median = float(np.median(around))
        spread = max(1.4826 * float(np.median(np.abs(around - median))), floor)
        if abs(value - median) > UNLIKE_NEIGHBOURHOOD_SD * spread:
            warnings.append(f"the seed at voxel {tuple(int(v) for v in seed)} has value {value:.4g}, unlike its "
                            f"surroundings ({median:.4g} ± {spread:.3g} within {radius_mm:g} mm): it may lie on "
                            "an edge or a small structure; move it into the middle of the structure if the result "
                            "is wrong")
    return warnings
