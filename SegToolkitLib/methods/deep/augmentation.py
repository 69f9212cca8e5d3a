"""Fast batch augmentation in torch: rotation, scaling, mirroring and optional elastic deformation in one
resampling pass, then gamma, brightness, contrast and noise. Labels are resampled by nearest neighbour and
voxels that come from outside the patch become "ignore" (-1)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as nnf


def augment(images: torch.Tensor, labels: torch.Tensor, settings: dict, rng: np.random.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch ``images (B, C, *S)`` with ``labels (B, *S)`` (long, -1 = ignore)."""
    images, labels = _spatial(images, labels, settings, rng)
    return _intensity(images, settings, rng), labels


def _rotation(dims: int, angles: np.ndarray) -> np.ndarray:
    if dims == 2:
        c, s = math.cos(angles[0]), math.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    matrix = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = math.cos(angle), math.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        rot = np.eye(3)
        rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
        matrix = rot @ matrix
    return matrix


def _spatial(images: torch.Tensor, labels: torch.Tensor, settings: dict, rng: np.random.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
    batch, dims = images.shape[0], images.ndim - 2
    shape = np.array(images.shape[2:], dtype=float)
    probability = settings.get("probability", 0.3)
    thetas = []
    for _ in range(batch):
        matrix = np.eye(dims)
        if rng.random() < probability:
            limit = math.radians(settings.get("rotation_degrees", 0.0))
            matrix = _rotation(dims, rng.uniform(-limit, limit, 1 if dims == 2 else 3)) @ matrix
        if rng.random() < probability:
            low, high = settings.get("scale", (1.0, 1.0))
            matrix = matrix / rng.uniform(low, high)
        if settings.get("mirror", False):
            matrix = matrix @ np.diag([-1.0 if rng.random() < 0.5 else 1.0 for _ in range(dims)])
        # affine_grid works in normalised coordinates (-1..1 per axis, x first): rotate in voxel units instead.
        half = np.diag(shape[::-1] / 2)
        thetas.append(np.linalg.inv(half) @ matrix @ half)
    if all(np.allclose(theta, np.eye(dims)) for theta in thetas) and not settings.get("elastic", False):
        return images, labels
    theta = torch.zeros(batch, dims, dims + 1, dtype=torch.float32)
    theta[:, :, :dims] = torch.as_tensor(np.stack(thetas), dtype=torch.float32)
    grid = nnf.affine_grid(theta, list(images.shape), align_corners=False).to(images.device)
    if settings.get("elastic", False):
        grid = grid + _elastic_field(batch, dims, images.shape[2:], rng).to(images.device)
    images = nnf.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border",
                           align_corners=False)
    shifted = (labels + 1).unsqueeze(1).to(images.dtype)
    labels = nnf.grid_sample(shifted, grid.to(images.dtype), mode="nearest", padding_mode="zeros",
                           align_corners=False).squeeze(1).round().long() - 1
    return images, labels


def _elastic_field(batch: int, dims: int, shape, rng: np.random.Generator, magnitude: float = 0.03) -> torch.Tensor:
    """A smooth random displacement (normalised units): coarse noise upsampled to the patch."""
    coarse = torch.as_tensor(rng.normal(0, magnitude, (batch, dims) + (4,) * dims), dtype=torch.float32)
    field = nnf.interpolate(coarse, size=tuple(shape), mode="bilinear" if dims == 2 else "trilinear",
                          align_corners=False)
    return field.movedim(1, -1)


def _intensity(images: torch.Tensor, settings: dict, rng: np.random.Generator) -> torch.Tensor:
    probability = settings.get("probability", 0.3)
    out = []
    for sample in images:
        if rng.random() < probability and settings.get("gamma"):
            low, high = sample.min(), sample.max()
            span = torch.clamp(high - low, min=1e-6)
            sample = ((sample - low) / span) ** float(rng.uniform(*settings["gamma"])) * span + low
        if rng.random() < probability and settings.get("brightness"):
            sample = sample * float(1 + rng.uniform(-settings["brightness"], settings["brightness"]))
        if rng.random() < probability and settings.get("contrast"):
            mean = sample.mean()
            sample = (sample - mean) * float(1 + rng.uniform(-settings["contrast"], settings["contrast"])) + mean
        if rng.random() < probability and settings.get("noise_std"):
            sample = sample + torch.randn_like(sample) * float(rng.uniform(0, settings["noise_std"]))
        out.append(sample)
    return torch.stack(out)
