"""Snakes (active contours) as level sets, 2D and 3D, with a stepwise API for interactive use.

The contour is the zero level of a signed distance function ``phi`` (negative inside, millimetres) evolved by

    dphi/dt = -(expansion * g - smoothness * kappa) |grad phi| + edge_attraction * grad g . grad phi   (geodesic)
    dphi/dt = -(expansion + region_weight * R - smoothness * kappa) |grad phi|                         (chan-vese)

where ``g`` is the feature image (an edge map in [0, 1] or a region probability in [-1, 1], ITK-SNAP style),
``kappa`` the mean curvature and ``R = ((I - c_out)^2 - (I - c_in)^2) / (c_in - c_out)^2`` the Chan-Vese region
term with the mean intensities inside and outside the contour. Upwind differences keep it stable; the time step
follows the CFL condition so the contour moves at most about half a voxel per iteration.

Everything runs inside a box around the contour that grows when the contour reaches its border, so a click in a
large image stays fast.

Shape prior (``shape``): ``"ellipse"`` keeps the contour elliptical. It starts from an ellipse fitted robustly to the
bright ridge enclosing the seed (rays cast from the seed, RANSAC; see :mod:`.ellipse`) and, every 5 iterations, the
level set is projected onto the ellipse with the same moments as the current region. ``"auto"`` (the default) turns
the prior on for a 2D image clicked inside a closed bright elliptical ridge (a fetal skull in an obstetric
ultrasound plane, a vessel cross-section), i.e. when the ridge fit is found and at least 25 % of the rays agree with
it; otherwise (3D images, an initial mask, no ridge) the contour is free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ...errors import InputError
from ...progress import CancelToken, ProgressCallback, report
from ._inputs import Point, array_of, checked_float_image, image_like, seed_indices
from .cleanup import as_mask, check_result
from .ellipse import fit_ridge_ellipse, moment_ellipse
from .feature_maps import ball_values, edge_map, gradient_magnitude, region_probability, seed_range, smooth

MODELS = ("geodesic", "chan-vese")
FEATURES = ("edge", "region")
REGION_RANGE_K = 4.0  # robust standard deviations of the smoothed seed neighbourhood
SHAPES = ("auto", "ellipse", "free")
ELLIPSE_MIN_AGREEMENT = 0.25  # share of rays on the fitted ridge ellipse for shape="auto" to use the prior
PROJECTION_INTERVAL = 5


@dataclass
class SnakeParameters:
    """Forces of the contour, named as a reader thinks of them.

    expansion: balloon force; positive inflates, negative shrinks. smoothness: curvature force (resists sharp corners
    and leaks through gaps). edge_attraction: pull towards the nearest edge (geodesic model). region_weight: strength
    of the inside/outside intensity competition (Chan-Vese model).
    """

    expansion: float = 1.0
    smoothness: float = 0.3
    edge_attraction: float = 1.0
    region_weight: float = 1.0


class SnakeSession:
    """An active contour that a GUI (or a script) advances step by step.

    >>> session = SnakeSession(image, seeds=[(10.0, -5.0, 30.0)])
    >>> while not session.converged:
    ...     mask = session.step(10)          # uint8 label image on the input grid

    Seeds are physical LPS points (``ijk=True``: voxel indices) that start as balls of ``radius_mm``; an
    ``initial_mask`` (same grid) can be given instead. ``model`` is ``"geodesic"`` (edge- or region-driven
    propagation) or ``"chan-vese"`` (intensity competition). The feature image is derived from the seed
    neighbourhood unless ``edge_strength`` / ``intensity_range`` are given.
    """

    def __init__(self, image: sitk.Image, seeds: Sequence[Point] | None = None,
                 initial_mask: sitk.Image | None = None, *, model: str = "geodesic", feature: str = "edge",
                 expansion: float | None = None, smoothness: float = 0.3, edge_attraction: float = 1.0,
                 region_weight: float = 1.0, radius_mm: float | None = None, sigma_mm: float | None = None,
                 edge_strength: float | None = None, intensity_range: tuple[float, float] | None = None,
                 shape: str = "auto", ijk: bool = False, ras: bool = False) -> None:
        if shape not in SHAPES:
            raise InputError(f"snake shape {shape!r}: choose one of {', '.join(SHAPES)}")
        if model not in MODELS:
            raise InputError(f"snake model {model!r}: choose one of {', '.join(MODELS)}")
        if feature not in FEATURES:
            raise InputError(f"snake feature {feature!r}: choose one of {', '.join(FEATURES)}")
        for name, value in (("expansion", 0.0 if expansion is None else expansion), ("smoothness", smoothness),
                            ("edge attraction", edge_attraction), ("region weight", region_weight)):
            if not np.isfinite(value):
                raise InputError(f"snake {name} {value}: must be a finite number")
        if smoothness < 0 or edge_attraction < 0 or region_weight < 0:
            raise InputError("snake smoothness, edge attraction and region weight must not be negative")
        self.input_image = checked_float_image(image)
        self.model, self.feature = model, feature
        self.parameters = SnakeParameters(1.0, smoothness, edge_attraction, region_weight)
        self.sigma_mm = float(sigma_mm) if sigma_mm is not None else default_sigma_mm(self.input_image)
        if self.sigma_mm <= 0:
            raise InputError(f"snake smoothing sigma {self.sigma_mm:g} mm: must be positive")
        if seeds and ijk:  # voxel indices of the input grid: turn them into physical points once
            seeds = [self.input_image.TransformIndexToPhysicalPoint(index) for index in
                     seed_indices(self.input_image, seeds, ijk=True)]
            ijk = False
        self.image = working_image(self.input_image, self.sigma_mm / 2.0)
        self._spacing = np.array(self.image.GetSpacing(), dtype=np.float64)[::-1]  # numpy axis order
        self._shape = np.array(self.image.GetSize())[::-1]
        initial, seed_voxels = self._initial_region(seeds, initial_mask, radius_mm, ijk, ras)
        self.shape = "free" if shape == "free" or self.image.GetDimension() != 2 else shape
        if self.shape != "free":
            initial = self._ellipse_start(initial, seed_voxels, initial_mask is None)
        # default balloon: inflate a seed bubble; none when starting on the fitted outline or for chan-vese
        self.parameters.expansion = float(expansion) if expansion is not None else \
            0.0 if self.model == "chan-vese" or self.shape == "ellipse" else 1.0
        self._configure_feature(seed_voxels, initial, edge_strength, intensity_range)
        self.iteration = 0
        self._changes: list[int] = []
        self._ellipses: list[tuple] = []  # (centre, axes) in voxels after each projection (ellipse prior)
        self._low, self._high = self._box_around(initial, margin=self._margin(initial))
        self._load_roi()
        self._phi = self._signed_distance(initial[self._roi])

    # ----------------------------------------------------------------------------------------------- public API
    @property
    def converged(self) -> bool:
        """True once the contour has (almost) stopped moving over the last iterations."""
        if self.shape == "ellipse" and len(self._ellipses) >= 2:  # the projected ellipse no longer moves
            (c0, a0), (c1, a1) = self._ellipses[-2:]
            return max(np.abs(np.subtract(c0, c1)).max(), np.abs(np.subtract(a0, a1)).max()) < 0.5
        window = 10
        if len(self._changes) < window:
            return False
        boundary = max(1, int(np.count_nonzero(np.abs(self._phi) < self._spacing.max())))
        return sum(self._changes[-window:]) <= max(1, 0.01 * boundary)

    def step(self, iterations: int = 1, cancel: CancelToken | None = None) -> sitk.Image:
        """Advance the contour by ``iterations`` and return the current mask (uint8, input grid)."""
        for _ in range(max(int(iterations), 0)):
            if cancel is not None:
                cancel.raise_if_cancelled()
            self._iterate()
        return self.mask()

    def run(self, max_iterations: int = 2000, progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None, chunk: int = 10) -> sitk.Image:
        """Iterate until convergence (or ``max_iterations``) and return the mask."""
        while self.iteration < max_iterations and not self.converged:
            self.step(min(chunk, max_iterations - self.iteration), cancel)
            report(progress, self.iteration / max_iterations, f"iteration {self.iteration}", cancel)
        report(progress, 1.0, "converged" if self.converged else f"stopped after {self.iteration} iterations")
        return self.mask()

    def mask(self) -> sitk.Image:
        """The region inside the contour as a uint8 label image on the input grid."""
        if self.image is self.input_image:
            full = np.zeros(tuple(self._shape), dtype=np.uint8)
            full[self._roi] = self._phi < 0
            return image_like(full, self.image)
        # interpolate the level set (not the mask) onto the input grid: a smooth, sub-voxel boundary
        phi = np.full(tuple(self._shape), self._band, dtype=np.float32)
        phi[self._roi] = self._phi
        fine = sitk.Resample(image_like(phi, self.image, sitk.sitkFloat32), self.input_image, sitk.Transform(),
                             sitk.sitkLinear, self._band)
        return sitk.Cast(sitk.Less(fine, 0.0), sitk.sitkUInt8)

    def level_set(self) -> np.ndarray:
        """The level-set function inside the working box (numpy z, y, x order; negative inside, mm)."""
        return self._phi.copy()

    @property
    def region(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The working box as (lower index, upper index exclusive) in image (i, j, k) order."""
        return tuple(int(v) for v in self._low[::-1]), tuple(int(v) for v in self._high[::-1])

    # ------------------------------------------------------------------------------------------ initialisation
    def _initial_region(self, seeds, initial_mask, radius_mm, ijk, ras) -> tuple[np.ndarray, list]:
        if initial_mask is not None:
            from ...io import check_same_grid

            check_same_grid(initial_mask, self.input_image, "initial mask", "image")
            initial = sitk.GetArrayFromImage(sitk.Resample(as_mask(initial_mask), self.image, sitk.Transform(),
                                             sitk.sitkNearestNeighbor, 0)) != 0
            if not initial.any():
                raise InputError("initial mask: is empty; draw a region or give a seed point instead")
            coords = np.argwhere(initial)
            centre = coords[len(coords) // 2]
            seed_voxels = [tuple(int(v) for v in centre[::-1])] + list(seed_indices(self.image, seeds or [], ijk, ras))
            return initial, seed_voxels
        if not seeds:
            raise InputError("snake: give at least one seed point or an initial mask")
        seed_voxels = seed_indices(self.image, seeds, ijk, ras)
        radius = float(radius_mm) if radius_mm is not None else default_radius_mm(self.image)
        if radius <= 0:
            raise InputError(f"snake seed radius {radius:g} mm: must be positive")
        initial = np.zeros(tuple(self._shape), dtype=bool)
        for seed in seed_voxels:
            initial |= self._ball(seed[::-1], radius)
        return initial, seed_voxels

    def _ball(self, centre: Sequence[int], radius_mm: float) -> np.ndarray:
        grids = np.ogrid[tuple(slice(0, n) for n in self._shape)]
        distance2 = sum(((grid - c) * s) ** 2 for grid, c, s in zip(grids, centre, self._spacing))
        ball = distance2 <= radius_mm ** 2
        ball[tuple(centre)] = True
        return ball

    def _configure_feature(self, seed_voxels, initial: np.ndarray, edge_strength, intensity_range) -> None:
        """Derive the feature parameters from the seed neighbourhood (unless given)."""
        self._smoothed_full: sitk.Image | None = None
        neighbourhood = max(default_radius_mm(self.image), 4.0 * self.sigma_mm)
        if self.model == "chan-vese":
            return
        if self.feature == "region":
            smoothed = self._smoothed()
            if intensity_range is None:
                intensity_range = seed_range(smoothed, seed_voxels, neighbourhood, k=REGION_RANGE_K)
            lower, upper = (float(v) for v in intensity_range)
            if lower > upper:
                raise InputError(f"snake intensity range {lower:g}..{upper:g}: lower is above upper")
            self.intensity_range = (lower, upper)
            low, high = np.percentile(array_of(smoothed), [1, 99])
            self._softness = max(min((upper - lower) / 6.0, 0.05 * float(high - low)), 1e-6)
            return
        if edge_strength is None:
            gradient = gradient_magnitude(self.image, self.sigma_mm)
            inside = ball_values(gradient, seed_voxels, neighbourhood)
            edge_strength = default_edge_strength(inside, array_of(gradient))
        if not edge_strength > 0:
            raise InputError(f"snake edge strength {edge_strength}: must be positive")
        self.edge_strength = float(edge_strength)

    def _smoothed(self) -> sitk.Image:
        if self._smoothed_full is None:
            self._smoothed_full = smooth(self.image, self.sigma_mm)
        return self._smoothed_full

    def _ellipse_start(self, initial: np.ndarray, seed_voxels, from_seeds: bool) -> np.ndarray:
        """The fitted ridge ellipse as the start (and sets ``shape``): 'auto' falls back to a free contour when
        no ellipse is found; 'ellipse' keeps the prior (projection) even then."""
        fit = fit_ridge_ellipse(array_of(self.image), tuple(float(v) for v in seed_voxels[0][::-1]),
                                sigma=2.0) if from_seeds else None
        if fit is not None and fit.inlier_fraction >= ELLIPSE_MIN_AGREEMENT:
            self.shape = "ellipse"
            start = fit.ellipse.mask(tuple(self._shape))
            return start if start.any() else initial
        if self.shape == "auto":
            self.shape = "free"
        return initial

    # ------------------------------------------------------------------------------------- working box (ROI)
    def _margin(self, initial: np.ndarray) -> np.ndarray:
        coords = np.argwhere(initial)
        extent = coords.max(axis=0) - coords.min(axis=0) + 1
        return np.maximum(np.maximum(extent, 8), np.ceil(4 * self.sigma_mm / self._spacing)).astype(int)

    def _box_around(self, region: np.ndarray, margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coords = np.argwhere(region)
        low = np.maximum(coords.min(axis=0) - margin, 0)
        high = np.minimum(coords.max(axis=0) + 1 + margin, self._shape)
        return low, high

    @property
    def _roi(self) -> tuple[slice, ...]:
        return tuple(slice(int(lo), int(hi)) for lo, hi in zip(self._low, self._high))

    def _load_roi(self) -> None:
        """Compute the feature image (and its gradient) for the current working box."""
        pad = np.ceil(4 * self.sigma_mm / self._spacing).astype(int)
        low, high = np.maximum(self._low - pad, 0), np.minimum(self._high + pad, self._shape)
        crop = sitk.RegionOfInterest(self.image, [int(v) for v in (high - low)[::-1]], [int(v) for v in low[::-1]])
        inner = tuple(slice(int(a - b), int(c - b)) for a, b, c in zip(self._low, low, self._high))
        if self.model == "chan-vese":
            self._intensity = sitk.GetArrayFromImage(smooth(crop, self.sigma_mm))[inner].astype(np.float32)
            return
        if self.feature == "region":
            smoothed = smooth(crop, self.sigma_mm)
            g = sitk.GetArrayFromImage(region_probability(smoothed, *self.intensity_range, self._softness))
        else:
            g = sitk.GetArrayFromImage(edge_map(gradient_magnitude(crop, self.sigma_mm), self.edge_strength))
        g = g.astype(np.float32)
        self._g_gradient = [d[inner].astype(np.float32) for d in np.gradient(g, *map(float, self._spacing))]
        self._g = g[inner]

    def _grow_roi_if_needed(self) -> bool:
        """Enlarge the working box on every side the contour touches (unless that side is the image border)."""
        inside = self._phi < 0
        touching_low = [bool(np.take(inside, 0, axis=a).any()) for a in range(inside.ndim)]
        touching_high = [bool(np.take(inside, -1, axis=a).any()) for a in range(inside.ndim)]
        extent = self._high - self._low
        new_low, new_high = self._low.copy(), self._high.copy()
        for axis in range(inside.ndim):
            step = max(int(extent[axis]) // 2, 8)
            if touching_low[axis]:
                new_low[axis] = max(0, new_low[axis] - step)
            if touching_high[axis]:
                new_high[axis] = min(self._shape[axis], new_high[axis] + step)
        if np.array_equal(new_low, self._low) and np.array_equal(new_high, self._high):
            return False
        band = self._band
        phi = np.full(tuple(new_high - new_low), band, dtype=np.float32)
        phi[tuple(slice(int(a - b), int(c - b)) for a, b, c in zip(self._low, new_low, self._high))] = self._phi
        self._low, self._high, self._phi = new_low, new_high, phi
        self._load_roi()
        return True

    # ---------------------------------------------------------------------------------------------- evolution
    @property
    def _band(self) -> float:
        return float(3.0 * self._spacing.max())

    def _signed_distance(self, inside: np.ndarray) -> np.ndarray:
        """Signed distance (mm, negative inside) clipped to the band; the zero level lies halfway between the
        inside and the outside voxel centres (ITK's Maurer transform measures to the inside border voxels)."""
        image = sitk.GetImageFromArray(inside.astype(np.uint8))
        image.SetSpacing([float(s) for s in self._spacing[::-1]])
        distance = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
            image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)).astype(np.float32)
        distance -= np.float32(0.5 * self._spacing.min())
        return np.clip(distance, -self._band, self._band)

    def _iterate(self) -> None:
        phi = self._phi
        before = phi < 0
        speed, curvature_term = self._speeds(phi)
        forward, backward = _one_sided_differences(phi, self._spacing)
        grad_out = np.sqrt(sum(np.maximum(b, 0) ** 2 + np.minimum(f, 0) ** 2 for f, b in zip(forward, backward)))
        grad_in = np.sqrt(sum(np.minimum(b, 0) ** 2 + np.maximum(f, 0) ** 2 for f, b in zip(forward, backward)))
        change = -(np.maximum(speed, 0) * grad_out + np.minimum(speed, 0) * grad_in) + curvature_term
        max_speed = float(np.abs(speed).max()) if speed.size else 0.0
        if self.model == "geodesic" and self.feature == "edge" and self.parameters.edge_attraction > 0:
            velocity = [-self.parameters.edge_attraction * d for d in self._g_gradient]
            for v, f, b in zip(velocity, forward, backward):
                change -= np.maximum(v, 0) * b + np.minimum(v, 0) * f
            max_speed += float(sum(np.abs(v).max() for v in velocity))
        h = float(self._spacing.min())
        dt = 0.5 * h / max(max_speed, 1e-6)
        if self.parameters.smoothness > 0:
            dt = min(dt, h * h / (2.0 * phi.ndim * self.parameters.smoothness))
        phi = np.clip(phi + np.float32(dt) * change.astype(np.float32), -self._band, self._band)
        self.iteration += 1
        if self.iteration % PROJECTION_INTERVAL == 0:
            phi = self._signed_distance(self._projected(phi < 0))
        self._phi = phi
        self._changes.append(int(np.count_nonzero(before != (phi < 0))))
        self._grow_roi_if_needed()

    def _projected(self, inside: np.ndarray) -> np.ndarray:
        """The region itself, or with the ellipse prior its moment ellipse (in the working box)."""
        if self.shape != "ellipse":
            return inside
        ellipse = moment_ellipse(inside)
        if ellipse is None:
            return inside
        self._ellipses.append((ellipse.centre, ellipse.axes))
        return ellipse.mask(inside.shape)

    def _speeds(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Outward normal speed (excluding curvature) and the curvature term ``smoothness·kappa·|grad phi|``."""
        p = self.parameters
        if self.model == "chan-vese":
            inside = phi < 0
            values = self._intensity
            c_in = float(values[inside].mean()) if inside.any() else float(values.mean())
            c_out = float(values[~inside].mean()) if (~inside).any() else float(values.mean())
            contrast = max((c_in - c_out) ** 2, 1e-12)
            speed = p.expansion + p.region_weight * ((values - c_out) ** 2 - (values - c_in) ** 2) / contrast
            speed = np.clip(speed, -1.0, 1.0)
        else:
            speed = p.expansion * self._g
        if p.smoothness <= 0:
            return speed, np.zeros_like(phi)
        steps = [float(h) for h in self._spacing]  # Python floats keep the arithmetic in float32
        central = np.gradient(phi, *steps)
        norm = np.sqrt(sum(c * c for c in central)) + 1e-8
        kappa = sum(np.gradient(c / norm, s, axis=a) for a, (c, s) in enumerate(zip(central, steps)))
        return speed, p.smoothness * kappa * norm


def _one_sided_differences(phi: np.ndarray, spacing: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Forward and backward differences along each axis (zero at the borders)."""
    forward, backward = [], []
    for axis, h in enumerate(spacing):
        diff = np.diff(phi, axis=axis) / np.float32(h)
        zero = np.zeros_like(np.take(phi, [0], axis=axis))
        forward.append(np.concatenate([diff, zero], axis=axis))
        backward.append(np.concatenate([zero, diff], axis=axis))
    return forward, backward


def working_image(image: sitk.Image, finest_mm: float) -> sitk.Image:
    """The image on a grid no finer than ``finest_mm`` (same origin, direction and extent); the image itself when
    it is already that coarse. Fine ultrasound or micro-CT pixels gain nothing at the scale of the edge map."""
    spacing = np.array(image.GetSpacing())
    new_spacing = np.maximum(spacing, finest_mm)
    if np.all(new_spacing < 1.2 * spacing):
        return image
    size = np.array(image.GetSize())
    new_size = np.maximum(np.round(size * spacing / new_spacing), 1).astype(int)
    new_spacing = spacing * size / new_size
    blurred = sitk.SmoothingRecursiveGaussian(image, float(finest_mm / 2.0))
    origin = np.array(image.TransformContinuousIndexToPhysicalPoint((new_spacing / spacing - 1.0) / 2.0))
    return sitk.Resample(blurred, [int(v) for v in new_size], sitk.Transform(), sitk.sitkLinear,
                         [float(v) for v in origin], [float(v) for v in new_spacing], image.GetDirection(),
                         0.0, sitk.sitkFloat32)


def default_sigma_mm(image: sitk.Image) -> float:
    """Feature smoothing: one millimetre, but at least one voxel of the finest axis."""
    return max(1.0, float(min(image.GetSpacing())))


def default_radius_mm(image: sitk.Image) -> float:
    """Seed bubble radius: 2 mm, but at least two voxels of the finest axis."""
    return max(2.0, 2.0 * float(min(image.GetSpacing())))


def default_edge_strength(inside_gradient: np.ndarray, all_gradient: np.ndarray) -> float:
    """Edge threshold between the texture around the seed and the strong edges of the image."""
    texture = float(np.percentile(inside_gradient, 90))
    strong = float(np.percentile(all_gradient, 99))
    return max(0.5 * strong, 1.5 * texture, 1e-6)


def snake(image: sitk.Image, seeds: Sequence[Point] | None = None, initial_mask: sitk.Image | None = None,
          *, iterations: int = 2000, progress: ProgressCallback | None = None,
          cancel: CancelToken | None = None, **options) -> sitk.Image:
    """Run a :class:`SnakeSession` to convergence (or ``iterations``) and return the checked uint8 mask."""
    session = SnakeSession(image, seeds, initial_mask, **options)
    mask = as_mask(session.run(iterations, progress, cancel))
    check_result(mask, "snake", "try a larger --radius, a different --expansion or an initial mask")
    return mask
