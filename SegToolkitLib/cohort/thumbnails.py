"""Small PNG thumbnails for visual QC: an axial and a coronal slice through the labels, label outlines in colour.

Both images are first turned to LPS index order (``sitk.DICOMOrient``), so every thumbnail shows the patient the
same way whatever the scan's direction: radiological convention (patient's right on the left), anterior up in the
axial view, superior up in the coronal view. Pixels are stretched to their physical aspect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..io import LabelTable, atomic_output

THUMBNAIL_PIXELS = 180  # longest side of each view
CT_WINDOW = (-160.0, 240.0)  # soft-tissue window (HU)


def write_thumbnail(image: sitk.Image | None, labels: sitk.Image, table: LabelTable, path: Path, ct: bool) -> Path:
    """Write the thumbnail of a case (``image`` may be None: outlines on black) atomically as PNG."""
    from PIL import Image

    views = [_render(view_image, view_labels, table) for view_image, view_labels in _views(image, labels, ct)]
    height = max(v.shape[0] for v in views)
    gap = np.zeros((height, 4, 3), np.uint8)
    padded = [np.pad(v, ((0, height - v.shape[0]), (0, 0), (0, 0))) for v in views]
    strip = np.concatenate([part for view in padded for part in (view, gap)][:-1], axis=1)
    with atomic_output(path) as tmp:
        Image.fromarray(strip).save(tmp, format="PNG", optimize=True)
    return path


def _views(image: sitk.Image | None, labels: sitk.Image, ct: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """(grey 0..1, label) 2D pairs at the physical aspect, largest side THUMBNAIL_PIXELS."""
    if labels.GetDimension() == 3:
        labels = sitk.DICOMOrient(labels, "LPS")
        image = sitk.DICOMOrient(image, "LPS") if image is not None else None
    label_array = sitk.GetArrayFromImage(labels)
    grey = _windowed(sitk.GetArrayFromImage(image) if image is not None else np.zeros(label_array.shape), ct)
    spacing = labels.GetSpacing()
    if label_array.ndim == 2:
        return [_resize(grey, label_array, spacing[1], spacing[0])]
    k, j = _busiest_planes(label_array)
    axial = _resize(grey[k], label_array[k], spacing[1], spacing[0])
    # coronal: rows are slices (z up = superior at the top after the flip), columns x
    coronal = _resize(grey[::-1, j, :], label_array[::-1, j, :], spacing[2], spacing[0])
    return [axial, coronal]


def _busiest_planes(label_array: np.ndarray) -> tuple[int, int]:
    """The axial slice and coronal row with the most labelled voxels (the middle ones when there are none)."""
    foreground = label_array > 0
    if not foreground.any():
        return label_array.shape[0] // 2, label_array.shape[1] // 2
    return int(foreground.sum(axis=(1, 2)).argmax()), int(foreground.sum(axis=(0, 2)).argmax())


def _windowed(array: np.ndarray, ct: bool) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    if ct:
        low, high = CT_WINDOW
    else:
        sample = array[:: max(1, array.shape[0] // 16)]
        low, high = (np.percentile(sample, (1, 99)) if sample.size else (0.0, 1.0))
    return np.clip((array - low) / max(float(high - low), 1e-6), 0.0, 1.0)


def _resize(grey: np.ndarray, labels: np.ndarray, row_mm: float, column_mm: float) -> tuple[np.ndarray, np.ndarray]:
    height_mm, width_mm = grey.shape[0] * row_mm, grey.shape[1] * column_mm
    scale = THUMBNAIL_PIXELS / max(height_mm, width_mm, 1e-6)
    shape = (max(1, round(height_mm * scale)), max(1, round(width_mm * scale)))
    zoom = (shape[0] / grey.shape[0], shape[1] / grey.shape[1])
    grey = ndimage.zoom(grey, zoom, order=1, grid_mode=True, mode="nearest")
    labels = ndimage.zoom(labels, zoom, order=0, grid_mode=True, mode="nearest")
    return grey, labels


def _render(grey: np.ndarray, labels: np.ndarray, table: LabelTable) -> np.ndarray:
    """RGB uint8: the grey slice with a one-pixel outline of each label in its colour."""
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    for value in np.unique(labels):
        if value == 0:
            continue
        mask = labels == value
        outline = mask & ~ndimage.binary_erosion(mask, border_value=0)
        color = table.get(int(value)).color
        rgb[outline] = (np.asarray(color) * 255).astype(np.uint8)
    return rgb
