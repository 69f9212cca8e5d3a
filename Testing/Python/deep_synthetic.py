"""Tiny synthetic training datasets for the deep-engine tests: bright blobs in noise, 2D or 3D."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk


def blob_case(rng: np.random.Generator, size: Sequence[int], spacing: Sequence[float], labels: int = 1,
              direction: Sequence[float] | None = None) -> tuple[sitk.Image, sitk.Image]:
    """An image with ``labels`` bright balls (label k has intensity k) in Gaussian noise, and its label map."""
    shape = tuple(reversed(size))
    array_spacing = tuple(reversed(spacing))
    grid = np.indices(shape).astype(np.float32)
    image = rng.normal(0, 0.25, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    extent = min(s * d for s, d in zip(shape[-2:], array_spacing[-2:]))
    for value in range(1, labels + 1):
        centre = [rng.uniform(0.35, 0.65) * s for s in shape]
        centre[-1] = (value / (labels + 1) + rng.uniform(-0.05, 0.05)) * shape[-1]  # side by side along x
        radius = rng.uniform(0.12, 0.18 if labels == 1 else 0.14) * extent
        distance = np.sqrt(sum(((g - c) * d) ** 2 for g, c, d in zip(grid, centre, array_spacing)))
        inside = distance < radius
        label[inside] = value
        image[inside] += value
    image_sitk = sitk.GetImageFromArray(image)
    image_sitk.SetSpacing([float(s) for s in spacing])
    if direction is not None:
        image_sitk.SetDirection(direction)
    label_sitk = sitk.GetImageFromArray(label)
    label_sitk.CopyInformation(image_sitk)
    return image_sitk, label_sitk


def make_blob_dataset(folder: Path, cases: int = 6, size: Sequence[int] = (32, 32, 12),
                      spacing: Sequence[float] = (1.0, 1.0, 2.0), labels: int = 1, seed: int = 0,
                      nnunet: bool = False, modality: str = "MR") -> Path:
    """Write a dataset folder (our layout, or nnU-Net's with ``nnunet=True``) and return it."""
    rng = np.random.default_rng(seed)
    image_dir = folder / ("imagesTr" if nnunet else "images")
    label_dir = folder / ("labelsTr" if nnunet else "labels")
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    for index in range(cases):
        image, label = blob_case(rng, size, spacing, labels)
        name = f"case{index:02d}"
        sitk.WriteImage(image, str(image_dir / (f"{name}_0000.nii.gz" if nnunet else f"{name}.nii.gz")))
        sitk.WriteImage(label, str(label_dir / f"{name}.nii.gz"))
    if nnunet:
        meta = {"channel_names": {"0": modality}, "labels": {"background": 0, **{f"blob{v}": v for v in
                range(1, labels + 1)}}, "numTraining": cases, "file_ending": ".nii.gz"}
    else:
        meta = {"modality": modality, "labels": {str(v): f"blob{v}" for v in range(labels + 1)}}
    (folder / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder


def small_plan(plan: dict, filters: int = 8, iterations: int = 10) -> dict:
    """Make a plan cheap for tests: narrow network, few iterations, small validation set."""
    plan["network"]["filters"] = [min(filters * 2 ** i, 64) for i in range(len(plan["network"]["filters"]))]
    plan["training"].update({"iterations_per_epoch": iterations, "validation_patches": 4})
    return plan


def dice(a: np.ndarray, b: np.ndarray, value: int = 1) -> float:
    a, b = a == value, b == value
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))
