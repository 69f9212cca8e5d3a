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

Feature choice (``feature="auto"``, the default): a contour started on a fitted ridge ellipse (below) follows edges;
otherwise a homogeneous seed neighbourhood (robust SD under 10 % of the image's contrast: CT and MRI soft tissue,
blood pools) and any 3D volume get the region probability of the intensity range ``grow`` derives from the same
click (ITK-SNAP's thresholding pre-segmentation), and a textured 2D one (ultrasound speckle) gets edges.

A region contour starts from the in-range region around the seeds (or around the nearest in-range voxel within
5 mm of a click on a border) eroded by 3 mm: where the bubble would inflate to, without the thin bridges it should
not cross. In 3D it evolves on a grid no finer than 2 mm (the probability is computed at full resolution and then
resampled, so the boundary stays sub-voxel) with a curvature force of 0.6 mm (organs of similar density touch
through thin bridges). From an initial mask the range is the median ± 3 robust SDs of the mask's core (eroded by
3 mm: its border holds the neighbours' partial-volume voxels), so a network's output is refined, not flooded.

On thick-slice stacks (slice spacing > 3× in-plane and ≥ 6 mm: cine cardiac MRI) a region contour moves within each
slice only. It starts from ``grow``'s slice-by-slice region (or the initial mask); each slice has its own lower
bound, half-way from its local Otsu threshold around that region to the wall's median (a bright cavity against its
darker wall), and the outline encloses the 2.5 mm partial-volume band, as an expert's cavity contour does (the
convention of ``grow``'s slice mode).

Shape prior (``shape``): ``"ellipse"`` keeps the contour elliptical. It starts from an ellipse fitted robustly to the
bright ridge enclosing the seed (rays cast from the seed, RANSAC; see :mod:`.ellipse`) and, every 5 iterations, the
level set is projected onto the ellipse with the same moments as the current region. While that ellipse stays
within 1 mm of the fitted one (centre and semi-axes), the result is the fitted ellipse drawn on the input grid: a
smooth outline on the skull's outer flank, where a reader draws it (the edge force would pull the contour out to the
flank's steepest part, and the contour on the 0.5 mm working grid is coarser than the fit).
``"auto"`` (the default) turns the prior on for a 2D image clicked inside a closed bright elliptical ridge (a fetal
skull in an obstetric ultrasound plane, a vessel cross-section), i.e. when the ridge fit is found and at least 25 %
of the rays agree with it; otherwise (3D images, an initial mask, no ridge) the contour is free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ...errors import InputError
from ...geometry import index_to_physical_matrix
from ...progress import CancelToken, ProgressCallback, report
from ._inputs import Point, array_of, checked_float_image, image_like, seed_indices
from .cleanup import as_mask, check_result, component_containing
from .ellipse import Ellipse, fit_ridge_ellipse, moment_ellipse
from .feature_maps import ball_values, denoise, edge_map, gradient_magnitude, region_probability, seed_range, smooth
from .region_growing import SLICE_BOUNDARY_MM

MODELS = ("geodesic", "chan-vese")
FEATURES = ("auto", "edge", "region")
REGION_RANGE_K = 4.0  # robust standard deviations of the smoothed seed neighbourhood
MASK_RANGE_K = 3.0  # robust standard deviations of the voxels of an initial mask
HOMOGENEOUS_SPREAD = 0.1  # seed neighbourhood spread (robust SD / image contrast) below which 'auto' picks region
NEIGHBOURHOOD_MM = 5.0
REGION_3D_GRID_MM = 2.0  # a region-driven 3D contour evolves on a grid no finer than this (speed; mask is sub-voxel)
RANGE_WINDOW_MM = 60.0  # the intensity range is estimated within this distance of the seeds
CORE_MM = 3.0  # a region contour starts from the in-range region around the seeds eroded by this much
DEFAULT_SMOOTHNESS = 0.3  # mm: the curvature force resists folds and gaps narrower than about this radius
REGION_3D_SMOOTHNESS = 0.6  # 3D region contours: organs of similar density touch through bridges and vessels
SLICE_SMOOTHNESS = 2.5  # thick slices: a cavity's outline (as an expert draws it) runs smoothly over its muscles
SHAPES = ("auto", "ellipse", "free")
ELLIPSE_MIN_AGREEMENT = 0.25  # share of rays on the fitted ridge ellipse for shape="auto" to use the prior
PROJECTION_INTERVAL = 5
PRIOR_AGREEMENT_MM = 1.0  # the ellipse prior's result is the fitted ellipse while the contour stays this close to it
CONVERGED_SHARE = 0.02  # converged: under 2 % of the boundary voxels changed side over the last 10 iterations


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

    ``feature="auto"`` (the default) picks it from the seed neighbourhood and the image: a contour started on a
    fitted ridge ellipse follows edges; a homogeneous neighbourhood (robust SD under 10 % of the image's contrast: CT
    and MRI soft tissue, blood pools) or any 3D volume gets the region probability of the intensity range ``grow``
    derives from the same click (ITK-SNAP's thresholding pre-segmentation); a textured 2D one (ultrasound speckle)
    gets edges. :attr:`choice` says what was
    picked and why. A region contour starts from the in-range region around the seeds eroded by 3 mm (what the
    bubble would inflate to, without thin bridges) and evolves on a grid no finer than 2 mm in 3D.
    """

    def __init__(self, image: sitk.Image, seeds: Sequence[Point] | None = None,
                 initial_mask: sitk.Image | None = None, *, model: str = "geodesic", feature: str = "auto",
                 expansion: float | None = None, smoothness: float | None = None, edge_attraction: float = 1.0,
                 region_weight: float = 1.0, radius_mm: float | None = None, sigma_mm: float | None = None,
                 edge_strength: float | None = None, intensity_range: tuple[float, float] | None = None,
                 shape: str = "auto", ijk: bool = False, ras: bool = False) -> None:
        _check_options(shape=shape, model=model, feature=feature, expansion=expansion, smoothness=smoothness,
                       edge_attraction=edge_attraction, region_weight=region_weight, sigma_mm=sigma_mm,
                       radius_mm=radius_mm)
        if initial_mask is None and not seeds:  # before the feature choice, which starts from the seeds
            raise InputError("snake: give at least one seed point or an initial mask")
        self.input_image = checked_float_image(image)
        self.model = model
        self.parameters = SnakeParameters(1.0, 0.3, edge_attraction, region_weight)
        self.sigma_mm = float(sigma_mm) if sigma_mm is not None else default_sigma_mm(self.input_image)
        if self.sigma_mm <= 0:
            raise InputError(f"snake smoothing sigma {self.sigma_mm:g} mm: must be positive")
        if seeds and ijk:  # voxel indices of the input grid: turn them into physical points once
            seeds = [self.input_image.TransformIndexToPhysicalPoint(index) for index in
                     seed_indices(self.input_image, seeds, ijk=True)]
            ijk = False
        if initial_mask is not None:
            from ...io import check_same_grid

            check_same_grid(initial_mask, self.input_image, "initial mask", "image")
        self._input_seeds = seed_indices(self.input_image, seeds or [], ras=ras)
        self.choice = ""
        if feature == "auto" and (intensity_range is not None or edge_strength is not None):
            feature = "region" if intensity_range is not None else "edge"
            self.choice = "region probability of the given intensity range" if intensity_range is not None else \
                "edges of the given strength"
        dimension = self.input_image.GetDimension()
        # a 2D contour may still start on a fitted ridge ellipse (which follows edges): decide after that fit
        self.feature = feature if feature != "auto" or (dimension == 2 and shape != "free") else \
            self._choose_feature(initial_mask)
        finest = self.sigma_mm / 2.0
        if dimension == 3 and self.feature == "region" and model == "geodesic":
            finest = max(finest, REGION_3D_GRID_MM)
        self.image = working_image(self.input_image, finest)
        self._spacing = np.array(self.image.GetSpacing(), dtype=np.float64)[::-1]  # numpy axis order
        self._shape = np.array(self.image.GetSize())[::-1]
        initial, seed_voxels = self._initial_region(seeds, initial_mask, radius_mm, ijk, ras)
        self.shape = "free" if shape == "free" or dimension != 2 else shape
        self._prior: Ellipse | None = None  # the fitted ridge ellipse (working-grid voxels, numpy order)
        if self.shape != "free":
            initial = self._ellipse_start(initial, seed_voxels, initial_mask is None)
        if self.feature == "auto":
            self.feature = "edge" if self.shape == "ellipse" else self._choose_feature(initial_mask)
            if self.shape == "ellipse":
                self.choice = "edges: the click lies inside a bright elliptical ridge (ellipse prior)"
        self._planar_axis = self._slice_axis() if self.model == "geodesic" and self.feature == "region" else None
        self._axes = [a for a in range(dimension) if a != self._planar_axis]
        self._grown: np.ndarray | None = None
        self._slice_lower: np.ndarray | None = None
        self.parameters.smoothness = float(smoothness) if smoothness is not None else self._default_smoothness()
        # default balloon: inflate a seed bubble; none when starting on the fitted outline or for chan-vese
        self.parameters.expansion = float(expansion) if expansion is not None else \
            0.0 if self.model == "chan-vese" or self.shape == "ellipse" else 1.0
        self._configure_feature(seed_voxels, initial, edge_strength, intensity_range, initial_mask)
        near_final = initial_mask is not None  # the box needs little room around a start near the final outline
        if self.model == "geodesic" and self.feature == "region" and initial_mask is None:
            core = self._region_core(seed_voxels)
            near_final = bool(core.any())
            initial = initial | core
        self.iteration = 0
        self._changes: list[int] = []
        self._ellipses: list[tuple] = []  # (centre, axes) in voxels of the working grid after each projection
        self._low, self._high = self._box_around(initial, margin=self._margin(initial, near_final))
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
        boundary = max(1, int(np.count_nonzero(np.abs(self._phi) < self._spacing[self._axes].max())))
        return sum(self._changes[-window:]) <= max(1, CONVERGED_SHARE * boundary)

    def step(self, iterations: int = 1, cancel: CancelToken | None = None) -> sitk.Image:
        """Advance the contour by ``iterations`` and return the current mask (uint8, input grid)."""
        check_iterations(iterations)
        for _ in range(int(iterations)):
            if cancel is not None:
                cancel.raise_if_cancelled()
            self._iterate()
        return self.mask()

    def run(self, max_iterations: int = 2000, progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None, chunk: int = 10) -> sitk.Image:
        """Iterate until convergence (or ``max_iterations``) and return the mask."""
        check_iterations(max_iterations, "maximum iterations")
        while self.iteration < max_iterations and not self.converged:
            for _ in range(min(chunk, max_iterations - self.iteration)):  # no mask per chunk: only at the end
                if cancel is not None:
                    cancel.raise_if_cancelled()
                self._iterate()
            report(progress, self.iteration / max_iterations, f"iteration {self.iteration}", cancel)
        report(progress, 1.0, "converged" if self.converged else f"stopped after {self.iteration} iterations")
        return self.mask()

    def mask(self) -> sitk.Image:
        """The region inside the contour as a uint8 label image on the input grid. With the ellipse prior, while the
        contour agrees with the fitted ridge ellipse, that ellipse drawn on the input grid (a smooth outline)."""
        if self._agrees_with_prior():
            return self._prior_on_input_grid()
        if self.image is self.input_image:
            full = np.zeros(tuple(self._shape), dtype=np.uint8)
            full[self._roi] = self._phi < 0
            return image_like(full, self.image)
        # interpolate the level set (not the mask) onto the input grid: a smooth, sub-voxel boundary
        phi = np.full(tuple(self._shape), self._band, dtype=np.float32)
        phi[self._roi] = self._phi
        fine = sitk.Resample(image_like(phi, self.image, sitk.sitkFloat32), self.input_image, sitk.Transform(),
                             sitk.sitkLinear, self._band)
        outline = SLICE_OUTLINE_MM if self._planar_axis is not None else 0.0
        mask = sitk.Cast(sitk.Less(fine, float(outline)), sitk.sitkUInt8)
        return self._filled_slices(mask) if self._planar_axis is not None else mask

    def _agrees_with_prior(self) -> bool:
        """True with the ellipse prior while the contour's moment ellipse lies within PRIOR_AGREEMENT_MM of the
        fitted ridge ellipse (centre and semi-axes). The fit places the outline on the skull's outer flank, where
        a reader draws it; the edge force would pull it further out to the steepest part of the flank, and the
        moments of a contour on the working grid (0.5 mm) are coarser than the fit."""
        if self._prior is None or self.shape != "ellipse":
            return False
        if not self._ellipses:
            return True
        centre, axes = self._ellipses[-1]
        drift = np.concatenate([np.subtract(centre, self._prior.centre), np.subtract(axes, self._prior.axes)])
        return bool(np.all(np.abs(drift) * self._spacing.min() <= PRIOR_AGREEMENT_MM))

    def _prior_on_input_grid(self) -> sitk.Image:
        """The fitted ridge ellipse as a mask on the input grid: pixels whose centres lie inside it."""
        size = self.input_image.GetSize()
        index = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in size], indexing="ij"), axis=-1)
        # input-grid index -> working-grid index (homogeneous matrices of both grids)
        to_working = np.linalg.inv(index_to_physical_matrix(self.image)) @ index_to_physical_matrix(self.input_image)
        flat = index.reshape(-1, len(size))
        working = (flat @ to_working[:-1, :-1].T + to_working[:-1, -1])[:, ::-1].T  # numpy (row, column) order
        inside = self._prior.normalised_radius(working) <= 1.0
        return image_like(inside.reshape(size).T.astype(np.uint8), self.input_image)

    def _filled_slices(self, mask: sitk.Image) -> sitk.Image:
        """Thick slices: holes filled in each slice (a cavity's outline encloses the dark muscles inside it)."""
        from scipy import ndimage

        array = sitk.GetArrayFromImage(mask) != 0
        for index in range(array.shape[self._planar_axis]):
            plane = [slice(None)] * array.ndim
            plane[self._planar_axis] = index
            array[tuple(plane)] = ndimage.binary_fill_holes(array[tuple(plane)])
        return image_like(array.astype(np.uint8), mask)

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

    def _default_smoothness(self) -> float:
        if self._planar_axis is not None:
            return SLICE_SMOOTHNESS
        if self.image.GetDimension() == 3 and self.feature == "region" and self.model == "geodesic":
            return REGION_3D_SMOOTHNESS
        return DEFAULT_SMOOTHNESS

    def _slice_axis(self) -> int | None:
        """The numpy axis across the slices of a thick-slice stack (cine cardiac MRI), where a region contour moves
        within each slice only (adjacent slices barely overlap); None otherwise."""
        from .region_growing import is_thick_slice_stack

        if not is_thick_slice_stack(self.input_image):
            return None
        return 2 - int(np.argmax(self.input_image.GetSpacing()))

    def _choose_feature(self, initial_mask: sitk.Image | None) -> str:
        """'region' for a homogeneous seed neighbourhood (or initial mask), 'edge' for a textured one; sets
        :attr:`choice` to say why."""
        if self.model == "chan-vese":
            self.choice = "chan-vese: mean intensities inside and outside the contour compete"
            return "region"
        values = self._reference_values(initial_mask)
        centre = float(np.median(values))
        spread = 1.4826 * float(np.median(np.abs(values - centre)))
        low, high = np.percentile(array_of(self.input_image).ravel()[::7], [1, 99])
        ratio = spread / max(float(high - low), 1e-12)
        where = "mask" if self._input_seeds == [] else "seed neighbourhood"
        if ratio < HOMOGENEOUS_SPREAD:
            self.choice = (f"region probability: the {where} is homogeneous (robust SD {100 * ratio:.1f} % of the "
                           "image contrast)")
            return "region"
        if self.input_image.GetDimension() == 3:  # CT/MRI volume: a click near an edge, not texture
            self.choice = (f"region probability: a 3D (CT or MRI) volume; the {where} varies (robust SD "
                           f"{100 * ratio:.0f} % of the image contrast): the click may lie near an edge")
            return "region"
        self.choice = f"edges: the seed neighbourhood is textured (robust SD {100 * ratio:.0f} % of the image contrast)"
        return "edge"

    def _reference_values(self, initial_mask: sitk.Image | None) -> np.ndarray:
        """Intensities that stand for the object: the seed neighbourhoods, else the initial mask's voxels."""
        if self._input_seeds:
            return ball_values(self.input_image, self._input_seeds, NEIGHBOURHOOD_MM).astype(np.float64)
        inside = array_of(initial_mask) != 0
        if not inside.any():
            raise InputError("initial mask: is empty; draw a region or give a seed point instead")
        # the mask's core: a network's or a user's outline includes partial-volume voxels of the neighbours
        radius = [int(round(CORE_MM / s)) for s in self.input_image.GetSpacing()]
        core = sitk.GetArrayFromImage(sitk.BinaryErode(sitk.Cast(initial_mask != 0, sitk.sitkUInt8), radius,
                                                       sitk.sitkBall, 0, 1)) != 0 if any(radius) else inside
        return np.asarray(array_of(self.input_image))[core if core.sum() >= 10 else inside].astype(np.float64)

    def _configure_feature(self, seed_voxels, initial: np.ndarray, edge_strength, intensity_range,
                           initial_mask: sitk.Image | None = None) -> None:
        """Derive the feature parameters from the seed neighbourhood (unless given)."""
        self._smoothed_full: sitk.Image | None = None
        self.intensity_range: tuple[float, float] | None = None
        self.edge_strength: float | None = None
        neighbourhood = max(default_radius_mm(self.image), 4.0 * self.sigma_mm)
        if self.model == "chan-vese":
            return
        if self.feature == "region":
            if intensity_range is None:
                intensity_range = self._default_range(seed_voxels, neighbourhood, initial_mask)
            lower, upper = (float(v) for v in intensity_range)
            if not (np.isfinite(lower) and np.isfinite(upper)):
                raise InputError(f"snake intensity range {lower:g}..{upper:g}: must be finite numbers")
            if lower > upper:
                raise InputError(f"snake intensity range {lower:g}..{upper:g}: lower is above upper")
            self.intensity_range = (lower, upper)
            low, high = np.percentile(array_of(self._smoothed()).ravel()[::7], [1, 99])
            self._softness = max(min((upper - lower) / 6.0, 0.05 * float(high - low)), 1e-6)
            if self._slice_lower is not None:
                self._softness = max(0.05 * float(high - low), 1e-6)
            return
        if edge_strength is None:
            gradient = gradient_magnitude(self.image, self.sigma_mm)
            inside = ball_values(gradient, seed_voxels, neighbourhood)
            edge_strength = default_edge_strength(inside, array_of(gradient))
        if not edge_strength > 0:
            raise InputError(f"snake edge strength {edge_strength}: must be positive")
        self.edge_strength = float(edge_strength)

    def _default_range(self, seed_voxels, neighbourhood: float, initial_mask) -> tuple[float, float]:
        """The intensity range: what ``grow`` derives from the clicks; from an initial mask, its voxels' median
        ± 3 robust SDs; for the ellipse prior or no usable growth, the smoothed seed neighbourhood ± 4 SDs."""
        if self._planar_axis is not None and (self._input_seeds or initial_mask is not None):
            return self._slice_range(initial_mask)
        if self._input_seeds and self.shape != "ellipse":
            from .region_growing import estimate_intensity_range

            try:  # the range needs representative voxels, not the whole organ: a box around the seeds is enough
                crop, offset = _crop_around(self.input_image, self._input_seeds, RANGE_WINDOW_MM)
                lower, upper, _ = estimate_intensity_range(
                    crop, [tuple(int(i - o) for i, o in zip(seed, offset)) for seed in self._input_seeds])
                return lower, upper
            except InputError:
                pass
        elif initial_mask is not None and not self._input_seeds:
            values = self._reference_values(initial_mask)
            centre = float(np.median(values))
            spread = max(1.4826 * float(np.median(np.abs(values - centre))), 1e-6)
            return centre - MASK_RANGE_K * spread, centre + MASK_RANGE_K * spread
        return seed_range(self._smoothed(), seed_voxels, neighbourhood, k=REGION_RANGE_K)

    def _slice_range(self, initial_mask: sitk.Image | None) -> tuple[float, float]:
        """Thick-slice stacks: per slice, a lower bound half-way from the local Otsu threshold around the object to
        its wall. The object is the region ``grow`` finds slice by slice from the seeds (kept as the contour's start),
        or the initial mask. Returns (the median bound, the image maximum) as the nominal range."""
        from .region_growing import connected_threshold

        if self._input_seeds:
            grown = connected_threshold(self.input_image, self._input_seeds, ijk=True, geometry="slices")
            self._grown = sitk.GetArrayFromImage(grown) != 0
        else:
            self._grown = sitk.GetArrayFromImage(initial_mask) != 0
        work = sitk.GetArrayFromImage(denoise(self.input_image))
        self._slice_lower = _slice_lower_bounds(work, self._grown, self._planar_axis,
                                                float(np.mean([s for i, s in enumerate(self.input_image.GetSpacing())
                                                               if 2 - i != self._planar_axis])))
        return float(np.median(self._slice_lower)), float(work.max())

    def _slice_probability(self, source: sitk.Image) -> sitk.Image:
        """Thick slices: +1 above the slice's own lower bound (the bright cavity against its darker wall), -1
        below, soft over ``_softness``."""
        array = sitk.GetArrayFromImage(denoise(source)).astype(np.float32, copy=False)
        first = self.input_image.TransformPhysicalPointToIndex(source.GetOrigin())[2 - self._planar_axis]
        count = array.shape[self._planar_axis]
        lower = self._slice_lower[first:first + count].astype(np.float32)
        shape = [1] * array.ndim
        shape[self._planar_axis] = count
        x = (array - lower.reshape(shape)) / np.float32(self._softness)
        result = sitk.GetImageFromArray((np.tanh(0.5 * x)).astype(np.float32))  # 2 * sigmoid - 1
        result.CopyInformation(source)
        return result

    def _region_core(self, seed_voxels) -> np.ndarray:
        """The in-range (smoothed) region connected to the seeds, eroded by CORE_MM: where a bubble would inflate
        to, without the thin bridges it should not cross. Empty when no seed lies in range."""
        if self._grown is not None:  # thick slices: the per-slice grown region, eroded within each slice
            grown = image_like(self._grown.astype(np.uint8), self.input_image)
            region = sitk.Resample(grown, self.image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
            radius = [0 if 2 - axis == self._planar_axis else int(round(CORE_MM / s))
                      for axis, s in enumerate(self.image.GetSpacing())]
            return sitk.GetArrayFromImage(sitk.BinaryErode(region, radius, sitk.sitkBall, 0, 1)) != 0
        lower, upper = self.intensity_range
        smoothed = self._smoothed()
        values = array_of(smoothed)
        nearest = [_nearest_in_range(values, seed, lower, upper, self._spacing) for seed in seed_voxels]
        inside = [seed for seed in nearest if seed is not None]
        if not inside:
            return np.zeros(tuple(self._shape), dtype=bool)
        region = sitk.ConnectedThreshold(smoothed, inside, lower, upper, 1)
        radius = [int(round(CORE_MM / s)) for s in self.image.GetSpacing()]
        if any(radius):
            region = sitk.BinaryErode(region, radius, sitk.sitkBall, 0, 1)
        core = component_containing(region, [tuple(seed) for seed in seed_voxels], search_voxels=max(radius) + 1)
        return sitk.GetArrayFromImage(core) != 0

    def _region_feature(self, crop: sitk.Image) -> sitk.Image:
        """Region probability on the grid of ``crop`` (a part of the working image). It is computed from the
        median-filtered input image at its own resolution and then smoothed and resampled: blurring the probability,
        not the image, keeps its zero crossing where the intensity crosses the range bound (a blurred image would
        move the contour inside by about the blur width)."""
        if self.image is self.input_image:
            source = crop
        else:
            source = _input_region_covering(self.input_image, crop)
        if self._slice_lower is not None:
            probability = self._slice_probability(source)
        else:
            probability = region_probability(denoise(source), *self.intensity_range, self._softness)
        probability = sitk.Clamp(smooth(probability, self.sigma_mm / 2.0), sitk.sitkFloat32, -1.0, 1.0)
        if source is crop:
            return probability
        return sitk.Resample(probability, crop, sitk.Transform(), sitk.sitkLinear, -1.0, sitk.sitkFloat32)

    def feature_image(self) -> sitk.Image:
        """The feature image the contour follows, on the working grid: edge map in [0, 1] (1 = flat) or region
        probability in [-1, 1] (chan-vese: the smoothed image). For previews and adjusting the settings."""
        if self.model == "chan-vese":
            return self._smoothed()
        if self.feature == "region":
            return self._region_feature(self.image)
        return edge_map(gradient_magnitude(self.image, self.sigma_mm), self.edge_strength)

    def describe(self) -> dict:
        """What the session chose (model, feature and why, range or edge strength, forces, grid)."""
        return {"model": self.model, "feature": self.feature, "choice": self.choice, "shape": self.shape,
                "intensity_range": self.intensity_range, "edge_strength": self.edge_strength,
                "expansion": self.parameters.expansion, "smoothness": self.parameters.smoothness,
                "working_spacing_mm": [float(v) for v in self.image.GetSpacing()]}

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
            self._prior = fit.ellipse
            start = fit.ellipse.mask(tuple(self._shape))
            return start if start.any() else initial
        if self.shape == "auto":
            self.shape = "free"
        return initial

    # ------------------------------------------------------------------------------------- working box (ROI)
    def _margin(self, initial: np.ndarray, near_final: bool = False) -> np.ndarray:
        """Room around the start: its own extent for a bubble that will inflate, a few millimetres for a start near
        the final outline (a region core or an initial mask); the box grows when the contour reaches it."""
        minimum = np.ceil(4 * self.sigma_mm / self._spacing)
        if near_final:
            return np.maximum(np.ceil(3 * CORE_MM / self._spacing) + 2, minimum).astype(int)
        coords = np.argwhere(initial)
        extent = coords.max(axis=0) - coords.min(axis=0) + 1
        return np.maximum(np.maximum(extent, 8), minimum).astype(int)

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
            g = sitk.GetArrayFromImage(self._region_feature(crop))
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
        return float(3.0 * self._spacing[self._axes].max())

    def _signed_distance(self, inside: np.ndarray) -> np.ndarray:
        """Signed distance (mm, negative inside) clipped to the band; the zero level lies halfway between the
        inside and the outside voxel centres (ITK's Maurer transform measures to the inside border voxels)."""
        image = sitk.GetImageFromArray(inside.astype(np.uint8))
        spacing = self._spacing.copy()
        if self._planar_axis is not None:  # distances within each slice only
            spacing[self._planar_axis] = 1e6
        image.SetSpacing([float(s) for s in spacing[::-1]])
        distance = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
            image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)).astype(np.float32)
        distance -= np.float32(0.5 * self._spacing[self._axes].min())
        return np.clip(distance, -self._band, self._band)

    def _iterate(self) -> None:
        phi = self._phi
        before = phi < 0
        speed, curvature_term = self._speeds(phi)
        forward, backward = _one_sided_differences(phi, self._spacing, self._axes)
        grad_out = np.sqrt(sum(np.maximum(b, 0) ** 2 + np.minimum(f, 0) ** 2 for f, b in zip(forward, backward)))
        grad_in = np.sqrt(sum(np.minimum(b, 0) ** 2 + np.maximum(f, 0) ** 2 for f, b in zip(forward, backward)))
        change = -(np.maximum(speed, 0) * grad_out + np.minimum(speed, 0) * grad_in) + curvature_term
        max_speed = float(np.abs(speed).max()) if speed.size else 0.0
        if self.model == "geodesic" and self.feature == "edge" and self.parameters.edge_attraction > 0:
            velocity = [-self.parameters.edge_attraction * self._g_gradient[a] for a in self._axes]
            for v, f, b in zip(velocity, forward, backward):
                change -= np.maximum(v, 0) * b + np.minimum(v, 0) * f
            max_speed += float(sum(np.abs(v).max() for v in velocity))
        h = float(self._spacing[self._axes].min())
        dt = 0.5 * h / max(max_speed, 1e-6)
        if self.parameters.smoothness > 0:
            dt = min(dt, h * h / (2.0 * len(self._axes) * self.parameters.smoothness))
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
        self._ellipses.append((tuple(np.add(ellipse.centre, self._low)), ellipse.axes))
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
        steps = [float(self._spacing[a]) for a in self._axes]  # Python floats keep the arithmetic in float32
        central = [np.gradient(phi, s, axis=a) for a, s in zip(self._axes, steps)]
        norm = np.sqrt(sum(c * c for c in central)) + 1e-8
        kappa = sum(np.gradient(c / norm, s, axis=a) for a, c, s in zip(self._axes, central, steps))
        return speed, p.smoothness * kappa * norm


def _check_options(*, shape: str, model: str, feature: str, expansion, smoothness, edge_attraction: float,
                   region_weight: float, sigma_mm, radius_mm) -> None:
    """Raise :class:`InputError` for an unknown choice or a force that is not a finite (non-negative) number."""
    for name, value, choices in (("shape", shape, SHAPES), ("model", model, MODELS), ("feature", feature, FEATURES)):
        if value not in choices:
            raise InputError(f"snake {name} {value!r}: choose one of {', '.join(choices)}")
    for name, value in (("expansion", 0.0 if expansion is None else expansion),
                        ("smoothness", 0.0 if smoothness is None else smoothness),
                        ("edge attraction", edge_attraction), ("region weight", region_weight),
                        ("smoothing sigma", 1.0 if sigma_mm is None else sigma_mm),
                        ("seed radius", 1.0 if radius_mm is None else radius_mm)):
        if not np.isfinite(value):
            raise InputError(f"snake {name} {value}: must be a finite number")
    if (smoothness or 0.0) < 0 or edge_attraction < 0 or region_weight < 0:
        raise InputError("snake smoothness, edge attraction and region weight must not be negative")


def _one_sided_differences(phi: np.ndarray, spacing: np.ndarray,
                           axes: Sequence[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Forward and backward differences along each of ``axes`` (zero at the borders)."""
    forward, backward = [], []
    for axis in axes:
        h = spacing[axis]
        diff = np.diff(phi, axis=axis) / np.float32(h)
        zero = np.zeros_like(np.take(phi, [0], axis=axis))
        forward.append(np.concatenate([diff, zero], axis=axis))
        backward.append(np.concatenate([zero, diff], axis=axis))
    return forward, backward


SLICE_OUTLINE_MM = SLICE_BOUNDARY_MM  # thick slices: the outline encloses the partial-volume band, as in grow
CAVITY_EDGE_SHARE = 0.5  # thick slices: the cavity's edge lies half-way from the Otsu threshold to the wall (the
# expert's outline encloses the partial-volume band)


def ring(region: np.ndarray, spacing: float, width_mm: float = 5.0) -> np.ndarray:
    """The band of ``width_mm`` outside a 2D region (where its wall lies)."""
    from scipy import ndimage

    return ndimage.binary_dilation(region, iterations=max(int(round(width_mm / spacing)), 1)) & ~region


def _slice_lower_bounds(work: np.ndarray, grown: np.ndarray, axis: int, spacing: float) -> np.ndarray:
    """Per slice along ``axis``: the local Otsu threshold around the grown region's centre on that slice (the
    nearest grown slice's for slices without the region)."""
    from .region_growing import _local_otsu

    count = work.shape[axis]
    bounds = np.full(count, np.nan)
    for index in range(count):
        region = np.take(grown, index, axis=axis)
        if region.any():
            plane = np.take(work, index, axis=axis)
            otsu = _local_otsu(plane, np.argwhere(region).mean(axis=0), spacing)
            wall = float(np.median(plane[ring(region, spacing) & (plane < otsu)])) if (plane < otsu).any() else otsu
            bounds[index] = otsu - CAVITY_EDGE_SHARE * (otsu - wall)
    known = np.flatnonzero(np.isfinite(bounds))
    if known.size == 0:
        raise InputError("snake: the region around the seed is empty on its slice; move the seed into the structure")
    nearest = known[np.argmin(np.abs(np.arange(count)[:, None] - known[None, :]), axis=1)]
    return bounds[nearest]


def _nearest_in_range(values: np.ndarray, seed: Sequence[int], lower: float, upper: float,
                      spacing: np.ndarray) -> list[int] | None:
    """The seed (i, j, k) itself when its value is in range, else the nearest in-range voxel within
    NEIGHBOURHOOD_MM (a click on the blurred border or a small dark spot still starts the region); None if none."""
    centre = np.array(seed[::-1])
    if lower <= values[tuple(centre)] <= upper:
        return [int(v) for v in seed]
    reach = np.ceil(NEIGHBOURHOOD_MM / spacing).astype(int)
    low, high = np.maximum(centre - reach, 0), np.minimum(centre + reach + 1, values.shape)
    window = np.asarray(values[tuple(slice(a, b) for a, b in zip(low, high))])
    candidates = np.argwhere((window >= lower) & (window <= upper))
    if candidates.size == 0:
        return None
    distance = (((candidates + low - centre) * spacing) ** 2).sum(axis=1)
    best = int(np.argmin(distance))
    if distance[best] > NEIGHBOURHOOD_MM ** 2:
        return None
    return [int(v) for v in (candidates[best] + low)[::-1]]


def _crop_around(image: sitk.Image, seeds: Sequence[Sequence[int]], radius_mm: float) -> tuple[sitk.Image, np.ndarray]:
    """The part of ``image`` within ``radius_mm`` of the seeds' bounding box, and its first index."""
    seeds = np.array(seeds)
    reach = np.ceil(radius_mm / np.array(image.GetSpacing())).astype(int)
    low = np.maximum(seeds.min(axis=0) - reach, 0)
    high = np.minimum(seeds.max(axis=0) + reach + 1, image.GetSize())
    return sitk.RegionOfInterest(image, [int(v) for v in high - low], [int(v) for v in low]), low


def _input_region_covering(image: sitk.Image, crop: sitk.Image) -> sitk.Image:
    """The part of ``image`` that covers the physical extent of ``crop`` (same direction), plus one voxel."""
    corners = [crop.TransformIndexToPhysicalPoint([0 if bit == "0" else n - 1 for bit, n in zip(bits, crop.GetSize())])
               for bits in (format(i, f"0{crop.GetDimension()}b") for i in range(2 ** crop.GetDimension()))]
    indices = np.array([image.TransformPhysicalPointToContinuousIndex(c) for c in corners])
    low = np.maximum(np.floor(indices.min(axis=0)).astype(int) - 1, 0)
    high = np.minimum(np.ceil(indices.max(axis=0)).astype(int) + 2, image.GetSize())
    return sitk.RegionOfInterest(image, [int(v) for v in high - low], [int(v) for v in low])


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


def check_iterations(iterations, what: str = "iterations") -> None:
    """Raise :class:`InputError` unless ``iterations`` is a positive whole number (a contour that never moves would
    return the seed bubble as if it were the result)."""
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise InputError(f"snake {what} {iterations!r}: must be a whole number of at least 1 (default 2000)")


def snake(image: sitk.Image, seeds: Sequence[Point] | None = None, initial_mask: sitk.Image | None = None,
          *, iterations: int = 2000, progress: ProgressCallback | None = None,
          cancel: CancelToken | None = None, details: dict | None = None, **options) -> sitk.Image:
    """Run a :class:`SnakeSession` to convergence (or ``iterations``) and return the checked uint8 mask.
    A ``details`` dict receives :meth:`SnakeSession.describe` plus ``iterations`` and ``converged``."""
    check_iterations(iterations)
    session = SnakeSession(image, seeds, initial_mask, **options)
    mask = as_mask(session.run(iterations, progress, cancel))
    check_result(mask, "snake", "try a larger --radius, a different --expansion or an initial mask")
    if details is not None:
        details.update(session.describe(), iterations=session.iteration, converged=session.converged)
        collapse = collapse_warning(mask, seeds if initial_mask is None else None,
                                    options.get("radius_mm") or default_radius_mm(session.image))
        if collapse:
            details.setdefault("warnings", []).append(collapse)
    return mask


def collapse_warning(mask: sitk.Image, seeds: Sequence[Point] | None, radius_mm: float) -> str | None:
    """A warning when a contour started from seed bubbles ended far smaller than one bubble: the structure is
    probably finer than the snake's working grid (or the feature pushed the contour in), so the tiny result
    would be a silently wrong segmentation."""
    if not seeds:
        return None
    voxel = float(np.prod(mask.GetSpacing()))
    dimension = mask.GetDimension()
    bubble = np.pi * radius_mm ** 2 if dimension == 2 else 4.0 / 3.0 * np.pi * radius_mm ** 3
    result = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask))) * voxel
    if result >= COLLAPSE_FRACTION * bubble:
        return None
    return (f"the contour shrank to {result:.3g} {'mm²' if dimension == 2 else 'mm³'}, under "
            f"{COLLAPSE_FRACTION:.0%} of its {radius_mm:g} mm seed bubble: the structure may be finer than the "
            "snake's working grid; check the result, or try 'segtoolkit grow' or --model chan-vese")


COLLAPSE_FRACTION = 0.25
