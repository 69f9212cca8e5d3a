"""Preprocessing shared by training and inference: resampling to the plan's spacing and intensity normalisation.

Arrays are in NumPy/SimpleITK order (z, y, x); 2D images get a leading axis of length 1 so that every case is a
``(channels, depth, height, width)`` array. The resampled grid keeps the image's origin corner and direction and
covers exactly the same physical extent, so results map back onto the input grid without losing edge voxels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk

IGNORE_INDEX = -1


def working_grid(image: sitk.Image, target_spacing: Sequence[float | None],
                 target_size: Sequence[int | None] | None = None) -> sitk.Image:
    """An empty image on the grid the network sees: the plan's spacing (None = keep), or on the axes where
    ``target_size`` is given that many voxels; same extent and direction."""
    dimension = image.GetDimension()
    spacing, size = np.array(image.GetSpacing()), np.array(image.GetSize())
    target = np.array([spacing[a] if a >= len(target_spacing) or target_spacing[a] is None else target_spacing[a]
                       for a in range(dimension)], dtype=float)
    new_size = np.maximum(1, np.round(size * spacing / target)).astype(int)
    for axis, value in enumerate(list(target_size or [])[:dimension]):
        if value is not None:
            new_size[axis] = int(value)
    new_spacing = size * spacing / new_size
    direction = np.array(image.GetDirection()).reshape(dimension, dimension)
    origin = np.array(image.GetOrigin()) + direction @ ((new_spacing - spacing) / 2)
    grid = sitk.Image([int(s) for s in new_size], sitk.sitkUInt8)
    grid.SetSpacing([float(s) for s in new_spacing])
    grid.SetOrigin([float(o) for o in origin])
    grid.SetDirection(image.GetDirection())
    return grid


def plan_grid(image: sitk.Image, plan: dict) -> sitk.Image:
    """The working grid of ``image`` under ``plan`` (its target spacing, or its target size where set)."""
    return working_grid(image, plan["target_spacing"], plan.get("target_size"))


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-6)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6))


def resample(image: sitk.Image, grid: sitk.Image, interpolator: int, default: float = 0.0,
             pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
    """``image`` on ``grid`` (a no-op when it is already there)."""
    if same_grid(image, grid):
        return sitk.Cast(image, pixel_type) if image.GetPixelID() != pixel_type else image
    return sitk.Resample(image, grid, sitk.Transform(), interpolator, default, pixel_type)


def as_volume(array: np.ndarray) -> np.ndarray:
    """A 2D array as a one-slice volume; 3D arrays unchanged."""
    return array[None] if array.ndim == 2 else array


def normalise(array: np.ndarray, scheme: dict) -> np.ndarray:
    """Apply one channel's normalisation scheme from the plan (float32 result)."""
    array = array.astype(np.float32, copy=False)
    if scheme["scheme"] == "ct":
        low, high = scheme["clip"]
        return ((np.clip(array, low, high) - scheme["mean"]) / scheme["std"]).astype(np.float32)
    mean, std = float(array.mean()), float(array.std())
    return ((array - mean) / max(std, 1e-8)).astype(np.float32)


def preprocess_images(images: Sequence[sitk.Image], plan: dict) -> tuple[np.ndarray, sitk.Image]:
    """Channels resampled to the plan's grid and normalised: ``(C, D, H, W)`` float32, and that grid."""
    grid = plan_grid(images[0], plan)
    channels = []
    for image, scheme in zip(images, plan["normalisation"]):
        array = sitk.GetArrayFromImage(resample(image, grid, sitk.sitkLinear))
        channels.append(as_volume(normalise(array, scheme)))
    return np.stack(channels), grid


def preprocess_labels(labels: np.ndarray, reference: sitk.Image, grid: sitk.Image, class_values: Sequence[int],
                      ignore_label: int) -> np.ndarray:
    """Label values mapped to class indices (0..C-1) on the working grid, unannotated voxels = IGNORE_INDEX."""
    image = sitk.GetImageFromArray(labels.astype(np.int32))
    image.CopyInformation(reference)
    array = sitk.GetArrayFromImage(resample(image, grid, sitk.sitkNearestNeighbor, ignore_label, sitk.sitkInt32))
    lookup = np.full(max(max(class_values), ignore_label) + 1, IGNORE_INDEX, dtype=np.int16)
    for index, value in enumerate(class_values):
        lookup[value] = index
    return as_volume(lookup[array])
