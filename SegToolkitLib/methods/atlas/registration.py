"""Image registration with SimpleITK: initialisation, rigid, affine and deformable stages, one composite result.

The transform maps points of the *fixed* image to the *moving* image (ITK's resampling convention), so the
moving image and its labels are brought onto the fixed grid with :func:`resample_image` / label propagation.
Stages run in order (``rigid`` < ``affine`` < ``deformable``/``diffeomorphic``), each starting from the result of
the previous one:

* initialisation: geometric centres (``geometry``), centres of mass (``moments``), image axes and centres
  (``axes``: the grids' directions rotated onto each other, for series planned alike on the anatomy but posed
  differently in the scanner) or the images' own physical positions (``none``, for images already in one scanner
  space such as two phases of one acquisition);
* rigid and affine: multi-resolution gradient descent on Mattes mutual information (``mi``, any modality) or
  normalised correlation (``correlation``, same modality), with optional fixed/moving masks;
* ``deformable``: a cubic B-spline free-form deformation refined over the resolution levels;
* ``diffeomorphic``: multi-resolution diffeomorphic demons on histogram-matched intensities (same modality).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk

from ...errors import CancelledError, InputError, OutputError
from ...io import atomic_output, check_output_path, check_scalar
from ...io.atomic import compound_suffix
from ...progress import CancelToken, ProgressCallback, report, scaled

TRANSFORM_TYPES = ("rigid", "affine", "deformable", "diffeomorphic")
PRESETS = ("fast", "default", "accurate")
METRICS = ("mi", "correlation")
INITIALISATIONS = ("geometry", "moments", "axes", "none")
TRANSFORM_SUFFIXES = (".tfm", ".txt", ".h5", ".hdf5", ".mat")
MIN_OVERLAP_FRACTION = 0.02  # of the fixed image's extent that must land inside the moving image
MIN_SIZE = 4  # voxels per axis
# ITK's Mattes mutual information keeps derivative buffers per B-spline parameter and thread: measured about
# 165 kB per parameter on 2 threads (a 256 x 256 x 13 cardiac stack at a 25 mm grid, 11 913 parameters, peaked
# at 2.2 GB). The finest control grid is coarsened until it has at most this many parameters (~0.6 GB).
MAX_BSPLINE_PARAMETERS = 3000


@dataclass(frozen=True)
class Preset:
    """Speed/accuracy settings for all stages."""

    shrink_factors: tuple[int, ...]
    smoothing_sigmas_mm: tuple[float, ...]  # per level, times the fixed image's finest (B-spline: largest) spacing
    linear_iterations: int
    linear_samples: int  # metric samples per level for rigid/affine
    bspline_grid_mm: float  # control point spacing at the finest level
    bspline_iterations: int
    bspline_samples: int
    demons_shrink_factors: tuple[int, ...]
    demons_iterations: int


PRESET_SETTINGS: dict[str, Preset] = {
    "fast": Preset((4, 2), (2.0, 1.0), 60, 5000, 40.0, 30, 10000, (4, 2), 30),
    "default": Preset((4, 2, 1), (2.0, 1.0, 0.0), 100, 20000, 25.0, 50, 30000, (4, 2, 1), 40),
    "accurate": Preset((8, 4, 2, 1), (4.0, 2.0, 1.0, 0.0), 200, 50000, 15.0, 100, 80000, (4, 2, 1), 80),
}


@dataclass
class StageResult:
    """What one stage did: its name, wall time, final metric value and iterations of the last level."""

    name: str
    seconds: float
    metric_value: float
    iterations: int = 0


@dataclass
class RegistrationResult:
    """A composite transform (fixed -> moving points) and per-stage timings and metric values."""

    transform: sitk.CompositeTransform
    stages: list[StageResult] = field(default_factory=list)

    @property
    def stage_seconds(self) -> dict[str, float]:
        return {stage.name: stage.seconds for stage in self.stages}

    @property
    def metric_values(self) -> dict[str, float]:
        return {stage.name: stage.metric_value for stage in self.stages}

    @property
    def seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages)


def register(fixed: sitk.Image, moving: sitk.Image, transform: str = "affine", preset: str = "default",
             metric: str = "mi", init: str = "geometry", fixed_mask: sitk.Image | None = None,
             moving_mask: sitk.Image | None = None, progress: ProgressCallback | None = None,
             cancel: CancelToken | None = None, fixed_name: str = "fixed image",
             moving_name: str = "moving image") -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` up to the ``transform`` stage; see the module docstring.

    Raises :class:`InputError` for unusable inputs (2D/3D mismatch, masks on other grids, images that do not
    overlap after the initialisation) with a hint on what to do.
    """
    _check_choice(transform, TRANSFORM_TYPES, "transform")
    _check_choice(preset, PRESETS, "preset")
    _check_choice(metric, METRICS, "metric")
    _check_choice(init, INITIALISATIONS, "initialisation")
    fixed, moving = _checked_pair(fixed, moving, fixed_name, moving_name)
    fixed_mask = _checked_mask(fixed_mask, fixed, "fixed mask", fixed_name)
    moving_mask = _checked_mask(moving_mask, moving, "moving mask", moving_name)
    settings = PRESET_SETTINGS[preset]
    stages_to_run = ["rigid"] + (["affine"] if transform != "rigid" else []) + \
        ([transform] if transform in ("deformable", "diffeomorphic") else [])
    weights = {"rigid": 1.0, "affine": 1.0, "deformable": 4.0, "diffeomorphic": 3.0}

    start = time.perf_counter()
    initial = initial_transform(fixed, moving, init)
    check_overlap(fixed, moving, initial, fixed_name, moving_name, init)
    stages = [StageResult("initialisation", time.perf_counter() - start, float("nan"))]
    with _ctrl_c_stops_itk(cancel) as cancel:
        composite = _run_stages(stages_to_run, weights, fixed, moving, initial, settings, metric, fixed_mask,
                                moving_mask, stages, progress, cancel, fixed_name, moving_name)
    report(progress, 1.0, "registration done", cancel)
    return RegistrationResult(composite, stages)


def _run_stages(stages_to_run, weights, fixed, moving, initial, settings, metric, fixed_mask, moving_mask, stages,
                progress, cancel, fixed_name, moving_name) -> sitk.CompositeTransform:
    """Each stage in turn from the previous one's result; appends a :class:`StageResult` per stage."""
    total = sum(weights[name] for name in stages_to_run)
    linear: sitk.Transform = initial
    composite = sitk.CompositeTransform(fixed.GetDimension())
    done = 0.0
    for name in stages_to_run:
        report(progress, done / total, f"{name} registration", cancel)
        sub = scaled(progress, done / total, (done + weights[name]) / total)
        start = time.perf_counter()
        with _translated_errors(fixed_name, moving_name, name):
            if name in ("rigid", "affine"):
                linear, value, iterations = _linear_stage(name, fixed, moving, linear, settings, metric,
                                                          fixed_mask, moving_mask, sub, cancel)
                composite = sitk.CompositeTransform(linear)
            elif name == "deformable":
                local, value, iterations = _bspline_stage(fixed, moving, linear, settings, metric, fixed_mask,
                                                          moving_mask, sub, cancel)
                composite.AddTransform(local)
            else:
                local, value, iterations = _demons_stage(fixed, moving, linear, settings, sub, cancel)
                composite.AddTransform(local)
        stages.append(StageResult(name, time.perf_counter() - start, value, iterations))
        done += weights[name]
    return composite


class _LinkedToken(CancelToken):
    """Cancelled by its own :meth:`cancel` (Ctrl-C) or by the caller's token."""

    def __init__(self, parent: CancelToken | None) -> None:
        super().__init__()
        self._parent = parent

    @property
    def cancelled(self) -> bool:
        return super().cancelled or (self._parent is not None and self._parent.cancelled)

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise CancelledError("registration cancelled by the user")


@contextlib.contextmanager
def _ctrl_c_stops_itk(cancel: CancelToken | None) -> Iterator[CancelToken | None]:
    """Ctrl-C while ITK runs would raise inside ITK's Python callbacks (ITK prints that traceback and fails
    with its own error). In the main thread Ctrl-C instead stops the optimiser at its next iteration and
    :class:`KeyboardInterrupt` is raised once ITK has returned, so the command line ends with its one line."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield cancel
        return
    token = _LinkedToken(cancel)
    previous = signal.signal(signal.SIGINT, lambda signum, frame: token.cancel())
    try:
        yield token
    except BaseException:
        if not token.cancelled or (cancel is not None and cancel.cancelled):
            raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if token.cancelled and not (cancel is not None and cancel.cancelled):
        raise KeyboardInterrupt


# ----------------------------------------------------------------------------------------------- checks


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise InputError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def _checked_pair(fixed: sitk.Image, moving: sitk.Image, fixed_name: str,
                  moving_name: str) -> tuple[sitk.Image, sitk.Image]:
    check_scalar(fixed, fixed_name)
    check_scalar(moving, moving_name)
    if fixed.GetDimension() != moving.GetDimension():
        raise InputError(f"{moving_name}: is {moving.GetDimension()}D but {fixed_name} is {fixed.GetDimension()}D; "
                         "both images must have the same dimension")
    check_registrable(fixed, fixed_name)
    check_registrable(moving, moving_name)
    return sitk.Cast(fixed, sitk.sitkFloat32), sitk.Cast(moving, sitk.sitkFloat32)


def check_registrable(image: sitk.Image, name: str) -> None:
    """Raise :class:`InputError` for images no metric can be computed on: fewer than
    :data:`MIN_SIZE` voxels along an axis, non-finite values, or one constant value everywhere."""
    if min(image.GetSize()) < MIN_SIZE:
        raise InputError(f"{name}: size {image.GetSize()} is too small to register (at least {MIN_SIZE} voxels "
                         "along every axis are needed)")
    array = sitk.GetArrayViewFromImage(image)
    low, high = float(np.min(array)), float(np.max(array))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputError(f"{name}: holds NaN or infinite values; fix or mask them before registering")
    if low == high:
        raise InputError(f"{name}: every voxel has the value {low:g} (a constant image has nothing to align); "
                         "check that the right file was given")


def _checked_mask(mask: sitk.Image | None, image: sitk.Image, what: str, image_name: str) -> sitk.Image | None:
    if mask is None:
        return None
    from ...io import check_same_grid

    check_same_grid(mask, image, what, image_name)
    mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
    if not np.any(sitk.GetArrayViewFromImage(mask)):
        raise InputError(f"{what}: is empty; give a mask with the region to register, or no mask")
    return mask


def check_overlap(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, fixed_name: str = "fixed image",
                  moving_name: str = "moving image", init: str = "") -> float:
    """Fraction of a coarse grid of fixed-image points that the transform maps inside the moving image.

    Raises :class:`InputError` when the images barely overlap, since the metric would then have no samples.
    """
    steps = [np.linspace(0, size - 1, min(size, 12)) for size in fixed.GetSize()]
    grid = np.stack(np.meshgrid(*steps, indexing="ij"), axis=-1).reshape(-1, fixed.GetDimension())
    upper = np.array(moving.GetSize()) - 0.5
    inside = 0
    for index in grid:
        point = transform.TransformPoint(fixed.TransformContinuousIndexToPhysicalPoint(index.tolist()))
        continuous = np.array(moving.TransformPhysicalPointToContinuousIndex(point))
        inside += bool(np.all(continuous >= -0.5) and np.all(continuous <= upper))
    fraction = inside / len(grid)
    if fraction < MIN_OVERLAP_FRACTION:
        hint = ("try --init geometry or --init moments" if init == "none" else
                "try another --init (moments or geometry) or align the images roughly by hand first")
        raise InputError(f"{moving_name}: does not overlap {fixed_name} after the '{init or 'initial'}' "
                         f"initialisation ({100 * fraction:.0f}% of the fixed image maps inside it); {hint}")
    return fraction


@contextlib.contextmanager
def _translated_errors(fixed_name: str, moving_name: str, stage: str) -> Iterator[None]:
    """Turn ITK's failures into an :class:`InputError`: 'too few samples' with a hint, others with ITK's reason."""
    try:
        yield
    except RuntimeError as error:
        text = str(error)
        if "samples" in text or "outside" in text:
            raise InputError(f"{moving_name}: lost its overlap with {fixed_name} during the {stage} stage (too "
                             "few valid metric samples); try --init moments, masks, or align the images roughly "
                             "by hand first") from None
        reason = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "unknown")
        raise InputError(f"{moving_name}: the {stage} registration onto {fixed_name} failed in ITK "
                         f"({reason[:200]}); check that both images show the same anatomy") from None


# ----------------------------------------------------------------------------------------- initialisation


def initial_transform(fixed: sitk.Image, moving: sitk.Image, init: str = "geometry") -> sitk.Transform:
    """A rigid transform aligning the geometric centres, the centres of mass, the image axes and centres
    (``axes``), or nothing (``none``)."""
    dimension = fixed.GetDimension()
    rigid = sitk.Euler3DTransform() if dimension == 3 else sitk.Euler2DTransform()
    if init == "none":
        rigid.SetCenter(_centre(fixed))
        return rigid
    if init == "axes":
        return _axes_alignment(fixed, moving, rigid)
    if init == "moments":
        # Centres of mass need non-negative intensities (CT has -1000 HU air).
        fixed, moving = _non_negative(fixed), _non_negative(moving)
        mode = sitk.CenteredTransformInitializerFilter.MOMENTS
    else:
        mode = sitk.CenteredTransformInitializerFilter.GEOMETRY
    return sitk.Euler3DTransform(sitk.CenteredTransformInitializer(fixed, moving, rigid, mode)) if dimension == 3 \
        else sitk.Euler2DTransform(sitk.CenteredTransformInitializer(fixed, moving, rigid, mode))


def _axes_alignment(fixed: sitk.Image, moving: sitk.Image, rigid: sitk.Transform) -> sitk.Transform:
    """Rotate the fixed image's axes onto the moving image's and match the grid centres: for stacks planned the
    same way on the anatomy (e.g. cardiac short-axis series) whose scanner poses differ."""
    dimension = fixed.GetDimension()
    fixed_axes = np.array(fixed.GetDirection()).reshape(dimension, dimension)
    moving_axes = np.array(moving.GetDirection()).reshape(dimension, dimension)
    left, _, right = np.linalg.svd(moving_axes @ fixed_axes.T)
    rotation = left @ right  # the nearest exact rotation (stored directions are rounded)
    if np.linalg.det(rotation) < 0:  # one grid is mirrored: keep a proper rotation, align the centres only
        rotation = np.eye(dimension)
    rigid.SetCenter(_centre(fixed))
    rigid.SetMatrix(rotation.ravel().tolist())
    rigid.SetTranslation(np.subtract(_centre(moving), _centre(fixed)).tolist())
    return rigid


def _non_negative(image: sitk.Image) -> sitk.Image:
    low = float(np.percentile(sitk.GetArrayViewFromImage(image), 1))
    return sitk.Clamp(image - low, lowerBound=0.0, upperBound=float("inf"))


def _centre(image: sitk.Image) -> tuple[float, ...]:
    return image.TransformContinuousIndexToPhysicalPoint([(size - 1) / 2 for size in image.GetSize()])


# ----------------------------------------------------------------------------------------------- stages


def _method(fixed: sitk.Image, shrink: tuple[int, ...], sigmas: tuple[float, ...], samples: int, metric: str,
            fixed_mask: sitk.Image | None, moving_mask: sitk.Image | None,
            smooth_by_largest_spacing: bool = False) -> sitk.ImageRegistrationMethod:
    """A registration method with the metric, sampling and pyramid shared by all stages."""
    method = sitk.ImageRegistrationMethod()
    if metric == "mi":
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    else:
        method.SetMetricAsCorrelation()
    voxels = float(np.prod(fixed.GetSize()))
    level_voxels = [voxels / max(1.0, _shrunk_voxel_ratio(fixed, factor)) for factor in shrink]
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentagePerLevel([min(1.0, samples / count) for count in level_voxels], seed=7)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel(list(shrink))
    # Rigid/affine smooth relative to the finest spacing: on thick-slice stacks (cardiac short axis, 1.3 x 10 mm)
    # sigmas in units of the slice gap blurred the in-plane anatomy away and let inter-subject alignment drift
    # (leave-one-out Sunnybrook Dice 0.66 -> 0.78). The B-spline stage keeps the heavier smoothing it was tuned with.
    unit = max(fixed.GetSpacing()) if smooth_by_largest_spacing else min(fixed.GetSpacing())
    method.SetSmoothingSigmasPerLevel([sigma * unit for sigma in sigmas])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    if moving_mask is not None:
        method.SetMetricMovingMask(moving_mask)
    return method


def _shrunk_voxel_ratio(image: sitk.Image, factor: int) -> float:
    """How many times fewer voxels an image has after ITK's pyramid shrink (sizes never drop below 1)."""
    return float(np.prod([size / max(1, size // factor) for size in image.GetSize()]))


def _watch(method: sitk.ImageRegistrationMethod, progress: ProgressCallback | None,
           cancel: CancelToken | None, iterations: int, levels: int, label: str) -> None:
    """Report progress per iteration and stop the optimiser when cancelled."""
    state = {"level": -1}

    def on_level() -> None:  # fired when each resolution level starts
        state["level"] = min(levels - 1, state["level"] + 1)

    def on_iteration() -> None:
        if cancel is not None and cancel.cancelled:
            method.StopRegistration()
            return
        fraction = (max(0, state["level"]) + min(1.0, method.GetOptimizerIteration() / iterations)) / levels
        report(progress, fraction, f"{label} level {max(0, state['level']) + 1}/{levels}")

    method.AddCommand(sitk.sitkMultiResolutionIterationEvent, on_level)
    method.AddCommand(sitk.sitkIterationEvent, on_iteration)


def _linear_stage(name: str, fixed: sitk.Image, moving: sitk.Image, start: sitk.Transform, settings: Preset,
                  metric: str, fixed_mask, moving_mask, progress, cancel) -> tuple[sitk.Transform, float, int]:
    """Rigid (Euler) or affine optimisation starting from ``start``."""
    if name == "rigid":
        transform = (sitk.Euler3DTransform if fixed.GetDimension() == 3 else sitk.Euler2DTransform)(start)
    else:
        transform = sitk.AffineTransform(fixed.GetDimension())
        transform.SetCenter(start.GetCenter())
        transform.SetMatrix(start.GetMatrix())
        transform.SetTranslation(start.GetTranslation())
    method = _method(fixed, settings.shrink_factors, settings.smoothing_sigmas_mm, settings.linear_samples, metric,
                     fixed_mask, moving_mask)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4,
                                                    numberOfIterations=settings.linear_iterations,
                                                    relaxationFactor=0.6, gradientMagnitudeTolerance=1e-8)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(transform, inPlace=True)
    _watch(method, progress, cancel, settings.linear_iterations, len(settings.shrink_factors), name)
    method.Execute(fixed, moving)
    _raise_if_cancelled(cancel)
    return transform, float(method.GetMetricValue()), int(method.GetOptimizerIteration())


def _bspline_stage(fixed: sitk.Image, moving: sitk.Image, linear: sitk.Transform, settings: Preset, metric: str,
                   fixed_mask, moving_mask, progress, cancel) -> tuple[sitk.Transform, float, int]:
    """Cubic B-spline free-form deformation on top of ``linear``, its mesh doubled at every finer level."""
    levels = len(settings.shrink_factors)
    extent = [(size - 1) * spacing for size, spacing in zip(fixed.GetSize(), fixed.GetSpacing())]
    mesh = _coarse_mesh(extent, settings.bspline_grid_mm, levels)
    bspline = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
    method = _method(fixed, settings.shrink_factors, settings.smoothing_sigmas_mm, settings.bspline_samples, metric,
                     fixed_mask, moving_mask, smooth_by_largest_spacing=True)
    method.SetOptimizerAsLBFGS2(solutionAccuracy=1e-4, numberOfIterations=settings.bspline_iterations,
                                deltaConvergenceTolerance=1e-5)
    method.SetMovingInitialTransform(linear)
    method.SetInitialTransformAsBSpline(bspline, inPlace=True, scaleFactors=[2 ** level for level in range(levels)])
    _watch(method, progress, cancel, settings.bspline_iterations, levels, "deformable")
    method.Execute(fixed, moving)
    _raise_if_cancelled(cancel)
    return bspline, float(method.GetMetricValue()), int(method.GetOptimizerIteration())


def _coarse_mesh(extent: list[float], grid_mm: float, levels: int) -> list[int]:
    """B-spline mesh of the coarsest level (doubled at each finer one) for a finest spacing of ``grid_mm``,
    coarsened until the finest level has at most :data:`MAX_BSPLINE_PARAMETERS` parameters."""
    coarse_grid = grid_mm * 2 ** (levels - 1)
    while True:
        mesh = [max(1, int(math.ceil(length / coarse_grid))) for length in extent]
        finest = [cells * 2 ** (levels - 1) + 3 for cells in mesh]  # a cubic B-spline adds 3 control points
        if int(np.prod(finest)) * len(extent) <= MAX_BSPLINE_PARAMETERS or max(mesh) == 1:
            return mesh
        coarse_grid *= 1.2


def _demons_stage(fixed: sitk.Image, moving: sitk.Image, linear: sitk.Transform, settings: Preset, progress,
                  cancel) -> tuple[sitk.Transform, float, int]:
    """Diffeomorphic demons on the linearly aligned, histogram-matched moving image, coarse to fine."""
    target = fixed
    aligned = sitk.Resample(moving, fixed, linear, sitk.sitkLinear, float(np.min(sitk.GetArrayViewFromImage(moving))))
    aligned = sitk.HistogramMatching(aligned, target, numberOfHistogramLevels=128, numberOfMatchPoints=15,
                                     thresholdAtMeanIntensity=False)
    field: sitk.Image | None = None
    demons = sitk.DiffeomorphicDemonsRegistrationFilter()
    demons.SetNumberOfIterations(settings.demons_iterations)
    demons.SetSmoothDisplacementField(True)
    demons.SetUseImageSpacing(True)  # displacements in mm, right on oblique and anisotropic grids
    demons.SetMaximumUpdateStepLength(2.0)
    factors = settings.demons_shrink_factors
    for level, factor in enumerate(factors):
        _raise_if_cancelled(cancel)
        report(progress, level / len(factors), f"diffeomorphic level {level + 1}/{len(factors)}")
        level_fixed = _shrink(target, factor)
        level_moving = _shrink(aligned, factor)  # same smoothing and grid as the fixed level
        demons.SetStandardDeviations([spacing for spacing in level_fixed.GetSpacing()])  # one voxel
        if field is None:
            field = demons.Execute(level_fixed, level_moving)
        else:
            start = sitk.Resample(field, level_fixed, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
            field = demons.Execute(level_fixed, level_moving, start)
    field = sitk.Cast(field, sitk.sitkVectorFloat64)
    return sitk.DisplacementFieldTransform(field), float(demons.GetMetric()), int(demons.GetElapsedIterations())


def _shrink(image: sitk.Image, factor: int) -> sitk.Image:
    """Gaussian-smoothed image on a grid ``factor`` times coarser (only along axes with enough voxels)."""
    factors = [factor if size // factor >= 8 else 1 for size in image.GetSize()]
    if max(factors) == 1:
        return image
    sigmas = [0.5 * f * spacing if f > 1 else 0.0 for f, spacing in zip(factors, image.GetSpacing())]
    smoothed = sitk.DiscreteGaussian(image, variance=[sigma ** 2 for sigma in sigmas], maximumKernelWidth=64)
    return sitk.Shrink(smoothed, factors)


def _raise_if_cancelled(cancel: CancelToken | None) -> None:
    if cancel is not None and cancel.cancelled:
        raise CancelledError("registration cancelled by the user")


# --------------------------------------------------------------------------------------- apply, save, load


def resample_image(image: sitk.Image, reference: sitk.Image, transform: sitk.Transform,
                   interpolator: int = sitk.sitkLinear, default_value: float | None = None) -> sitk.Image:
    """``image`` moved onto the grid of ``reference`` (transform maps reference points to ``image`` points).

    Voxels that map outside ``image`` get ``default_value`` (default: the image's minimum, e.g. air in CT).
    """
    if default_value is None:
        array = sitk.GetArrayViewFromImage(image)
        default_value = float(array.min()) if array.size else 0.0
    return sitk.Resample(image, reference, transform, interpolator, default_value, image.GetPixelID())


def save_transform(transform: sitk.Transform, path: Path | str) -> Path:
    """Write a transform ITK and 3D Slicer can read (.tfm/.txt text, .h5 HDF5, .mat), atomically.

    Dense displacement fields need ``.h5`` (text files would be enormous and lose precision).
    """
    path = check_transform_path(path, "diffeomorphic" if _has_displacement_field(transform) else "affine")
    with atomic_output(path) as tmp:
        try:
            sitk.WriteTransform(transform, str(tmp))
        except RuntimeError as error:
            raise OutputError(f"{path}: cannot write transform ({str(error).strip().splitlines()[-1][:200]})") \
                from None
    return path


def check_transform_path(path: Path | str, transform: str = "affine", inputs=()) -> Path:
    """Check a transform output path before any work: writable, a known extension, .h5 for displacement fields."""
    path = check_output_path(path, inputs)
    suffix = compound_suffix(path)
    if suffix not in TRANSFORM_SUFFIXES:
        raise OutputError(f"{path}: unsupported transform file type {suffix or '(no extension)'}; use one of "
                          f"{', '.join(TRANSFORM_SUFFIXES)}")
    if transform == "diffeomorphic" and suffix not in (".h5", ".hdf5"):
        raise OutputError(f"{path}: a diffeomorphic (displacement field) transform must be saved as .h5")
    return path


def load_transform(path: Path | str) -> sitk.Transform:
    """Read a transform file written by SegToolkit, ITK, elastix (ITK format) or 3D Slicer."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: transform file not found")
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError:
        raise InputError(f"{path}: not a transform file ITK can read (.tfm, .txt, .h5, .mat)") from None
    return _flattened(transform)


def _flattened(transform: sitk.Transform) -> sitk.Transform:
    """A composite transform read from file holding a single transform is returned as that transform's type."""
    if transform.GetName() == "CompositeTransform":
        composite = sitk.CompositeTransform(transform)
        if composite.GetNumberOfTransforms() == 1:
            return composite.GetNthTransform(0).Downcast()
        return composite
    return transform.Downcast()


def _has_displacement_field(transform: sitk.Transform) -> bool:
    if transform.GetName() == "CompositeTransform":
        composite = sitk.CompositeTransform(transform)
        return any(_has_displacement_field(composite.GetNthTransform(i))
                   for i in range(composite.GetNumberOfTransforms()))
    return transform.GetName() == "DisplacementFieldTransform"
