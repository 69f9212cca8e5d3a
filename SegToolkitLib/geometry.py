"""Physical coordinates, voxel indices and the LPS/RAS conventions.

SimpleITK (like DICOM and ITK) works in LPS: x grows to the patient's Left, y to Posterior, z to Superior.
3D Slicer shows RAS (x Right, y Anterior): the same point has x and y negated. Every point SegToolkit takes or
prints says which of the two it is in; the default is LPS.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk

from .errors import InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def lps_to_ras(point: Sequence[float]) -> tuple[float, ...]:
    """Convert a 3D (or 2D) point from LPS to RAS (negate x and y)."""
    return tuple(-float(v) if axis < 2 else float(v) for axis, v in enumerate(point))


ras_to_lps = lps_to_ras  # the flip is its own inverse


def parse_point(text: str, dimension: int, what: str = "point") -> tuple[float, ...]:
    """Parse ``"X,Y,Z"`` (or ``"X,Y"`` for 2D images) into floats, with a clear error when malformed."""
    parts = [part.strip() for part in str(text).replace(" ", ",").split(",") if part.strip()]
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        raise InputError(f"{what} {text!r}: expected numbers separated by commas, like "
                         f"{'10.5,-20,33' if dimension == 3 else '10.5,-20'}") from None
    if len(values) != dimension:
        raise InputError(f"{what} {text!r}: has {len(values)} coordinates but the image is {dimension}D; give "
                         f"{dimension} values ({'X,Y,Z' if dimension == 3 else 'X,Y'})")
    if not all(np.isfinite(values)):
        raise InputError(f"{what} {text!r}: coordinates must be finite numbers")
    return values


def physical_to_index(image: sitk.Image, point: Sequence[float], what: str = "seed") -> tuple[int, ...]:
    """The voxel index (i, j, k) nearest to a physical LPS point, through the image's full geometry.

    Raises :class:`InputError` when the point lies outside the image.
    """
    if len(point) != image.GetDimension():
        raise InputError(f"{what} {_fmt(point)}: has {len(point)} coordinates but the image is "
                         f"{image.GetDimension()}D")
    continuous = image.TransformPhysicalPointToContinuousIndex([float(v) for v in point])
    index = tuple(int(np.floor(c + 0.5)) for c in continuous)
    check_index_inside(image, index, what, physical=point)
    return index


def index_to_physical(image: sitk.Image, index: Sequence[float]) -> tuple[float, ...]:
    """The LPS physical position of a (possibly fractional) voxel index."""
    return tuple(image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index]))


def check_index_inside(image: sitk.Image, index: Sequence[int], what: str = "seed",
                       physical: Sequence[float] | None = None) -> None:
    """Raise :class:`InputError` when a voxel index is outside the image."""
    size = image.GetSize()
    if len(index) != len(size):
        raise InputError(f"{what} {_fmt(index)}: has {len(index)} coordinates but the image is {len(size)}D")
    if any(i < 0 or i >= s for i, s in zip(index, size)):
        where = f"at LPS {_fmt(physical)} mm (voxel {_fmt(index)})" if physical is not None else \
            f"at voxel {_fmt(index)}"
        bounds = physical_bounds(image)
        raise InputError(f"{what} {where} is outside the image (voxel size {_fmt(size)}, LPS extent "
                         f"{' x '.join(f'[{lo:.1f}, {hi:.1f}]' for lo, hi in bounds)} mm)")


def seeds_to_indices(image: sitk.Image, points: Iterable[Sequence[float]], ijk: bool = False,
                     ras: bool = False, what: str = "seed") -> list[tuple[int, ...]]:
    """Map seed points to voxel indices: physical LPS (default), physical RAS, or voxel indices (``ijk``)."""
    indices = []
    for point in points:
        if ijk:
            index = tuple(int(round(v)) for v in point)
            check_index_inside(image, index, what)
        else:
            lps = ras_to_lps(point) if ras else tuple(point)
            index = physical_to_index(image, lps, what)
        indices.append(index)
    return indices


def physical_bounds(image: sitk.Image) -> list[tuple[float, float]]:
    """Axis-aligned LPS bounds of the image's voxel centres."""
    corners = np.array([index_to_physical(image, corner) for corner in _corner_indices(image.GetSize())])
    return [(float(lo), float(hi)) for lo, hi in zip(corners.min(axis=0), corners.max(axis=0))]


def voxel_volume_mm3(image: sitk.Image) -> float:
    """Volume (area in 2D) of one voxel in mm³ (mm²)."""
    return float(np.prod(image.GetSpacing()))


def direction_matrix(image: sitk.Image) -> np.ndarray:
    """The image's direction cosines as a (D, D) matrix (columns are the index axes in LPS)."""
    dimension = image.GetDimension()
    return np.array(image.GetDirection(), dtype=float).reshape(dimension, dimension)


def index_to_physical_matrix(image: sitk.Image) -> np.ndarray:
    """The (D+1)x(D+1) homogeneous matrix mapping a voxel index (i, j, k, 1) to LPS millimetres."""
    dimension = image.GetDimension()
    matrix = np.eye(dimension + 1)
    matrix[:dimension, :dimension] = direction_matrix(image) @ np.diag(image.GetSpacing())
    matrix[:dimension, dimension] = image.GetOrigin()
    return matrix


def _corner_indices(size: Sequence[int]) -> list[tuple[int, ...]]:
    corners: list[tuple[int, ...]] = [()]
    for extent in size:
        corners = [corner + (value,) for corner in corners for value in (0, extent - 1)]
    return corners


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"
