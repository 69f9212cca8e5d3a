"""Label fusion: combine several label maps on one grid (atlases propagated onto a target) into one.

* ``majority``: the label most atlases vote for; ties go to the lowest tied label value (background first),
  which keeps the result conservative.
* ``staple``: multi-label STAPLE (Warfield et al. 2004, SimpleITK's ``MultiLabelSTAPLE``), which weighs each
  atlas by its estimated performance; voxels STAPLE leaves undecided take the majority vote.
* ``weighted``: locally weighted voting (Artaechevarria et al. 2009): each atlas votes with weight
  ``(local mean squared difference + eps) ** -gain``, the difference being between the target and that atlas's
  warped image (intensities matched linearly), averaged with a Gaussian of ``sigma_mm``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ...errors import InputError
from ...io import grid_difference

FUSION_METHODS = ("majority", "staple", "weighted")


def fuse_labels(label_images: Sequence[sitk.Image], method: str = "majority",
                atlas_images: Sequence[sitk.Image] | None = None, target: sitk.Image | None = None,
                sigma_mm: float = 3.0, gain: float = 2.0) -> sitk.Image:
    """Fuse label maps on one grid with ``method`` (see the module docstring).

    ``weighted`` also needs the warped ``atlas_images`` (same order as ``label_images``) and the ``target``.
    """
    if method not in FUSION_METHODS:
        raise InputError(f"unknown fusion method {method!r}; choose one of {', '.join(FUSION_METHODS)}")
    _check_grids(label_images, "label map")
    if method == "majority":
        return majority_vote(label_images)
    if method == "staple":
        return staple(label_images)
    if atlas_images is None or target is None:
        raise InputError("weighted fusion needs the warped atlas images and the target image")
    return weighted_vote(label_images, atlas_images, target, sigma_mm, gain)


def majority_vote(label_images: Sequence[sitk.Image]) -> sitk.Image:
    """Per voxel the most frequent label; ties go to the lowest label value."""
    _check_grids(label_images, "label map")
    return _vote(label_images, [np.ones(1, dtype=np.float32)] * len(label_images))


def staple(label_images: Sequence[sitk.Image]) -> sitk.Image:
    """Multi-label STAPLE; undecided voxels take the majority vote."""
    _check_grids(label_images, "label map")
    if len(label_images) == 1:
        return label_images[0]
    arrays = [sitk.GetArrayViewFromImage(image) for image in label_images]
    undecided = int(max(int(array.max()) for array in arrays)) + 1
    pixel_type = sitk.sitkUInt16 if undecided < 65535 else sitk.sitkUInt32
    images = [sitk.Cast(image, pixel_type) for image in label_images]
    fused = sitk.GetArrayFromImage(sitk.MultiLabelSTAPLE(images, undecided))
    majority = sitk.GetArrayFromImage(majority_vote(label_images))
    fused[fused == undecided] = majority[fused == undecided]
    return _like(fused.astype(arrays[0].dtype), label_images[0])


def weighted_vote(label_images: Sequence[sitk.Image], atlas_images: Sequence[sitk.Image], target: sitk.Image,
                  sigma_mm: float = 3.0, gain: float = 2.0) -> sitk.Image:
    """Locally weighted voting by Gaussian-weighted squared intensity difference to the target."""
    _check_grids(label_images, "label map")
    if len(atlas_images) != len(label_images):
        raise InputError(f"weighted fusion: {len(atlas_images)} atlas images for {len(label_images)} label maps")
    _check_grids([target, *atlas_images, label_images[0]], "warped atlas image")
    target_array = sitk.GetArrayFromImage(target).astype(np.float32)
    low, high = np.percentile(target_array, [2, 98])
    scale = float(high - low) or 1.0
    target_array = (target_array - low) / scale
    eps = 1e-3
    weights = []
    for atlas in atlas_images:
        matched = _match_linear(sitk.GetArrayFromImage(atlas).astype(np.float32))
        difference = _like((matched - target_array) ** 2, target)
        local = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(difference, sigma_mm))
        weights.append((np.maximum(local, 0.0) + eps) ** -gain)
    return _vote(label_images, weights)


def _match_linear(array: np.ndarray) -> np.ndarray:
    """Map the 2nd..98th percentile range of an atlas image onto 0..1 (the target's range after scaling)."""
    low, high = np.percentile(array, [2, 98])
    return (array - low) / (float(high - low) or 1.0)


def _vote(label_images: Sequence[sitk.Image], weights: Sequence[np.ndarray]) -> sitk.Image:
    """Weighted vote per voxel with a running argmax over label values in ascending order (ties: lowest)."""
    arrays = [sitk.GetArrayViewFromImage(image) for image in label_images]
    values = np.unique(np.concatenate([np.unique(array) for array in arrays]))
    best_score = np.full(arrays[0].shape, -1.0, dtype=np.float32)
    result = np.zeros(arrays[0].shape, dtype=arrays[0].dtype)
    for value in values:
        score = np.zeros(arrays[0].shape, dtype=np.float32)
        for array, weight in zip(arrays, weights):
            score += (array == value) * weight
        wins = score > best_score
        best_score[wins] = score[wins]
        result[wins] = value
    return _like(result, label_images[0])


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def _check_grids(images: Sequence[sitk.Image], what: str) -> None:
    if not images:
        raise InputError(f"fusion needs at least one {what}")
    for number, image in enumerate(images[1:], start=2):
        problem = grid_difference(image, images[0])
        if problem:
            raise InputError(f"{what} {number}: not on the grid of the first one ({problem}); propagate all atlases "
                             "onto the target grid first")
