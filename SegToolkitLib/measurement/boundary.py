"""Labels cut off by the scan: a label that touches the image's outer faces was probably cropped by the field of
view, so its volume (and its diameters) are lower bounds.

Used by ``measure``, ``compare``, ``predict`` summaries, the Slicer table and cohort QC, so every place says the
same thing with the same words (:data:`CUT_OFF_WARNING`).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

CUT_OFF_WARNING = "touches the scan's edge: the volume is a lower bound"


def edge_faces(label_array: np.ndarray) -> dict[int, list[str]]:
    """For each label value (> 0) on an outer face of ``label_array``, the faces it lies on.

    Faces are named by numpy axis and side (``"axis0-first"``, ``"axis2-last"``...). For 3D arrays from
    SimpleITK (z, y, x order) axis 0 is the slice axis. A 2D array has four faces. Axes along which the image has
    a single voxel (a 2D image stored as a one-slice volume) have no edge there: every label lies on those faces,
    and nothing was cut.
    """
    faces: dict[int, list[str]] = {}
    for axis in range(label_array.ndim):
        if label_array.shape[axis] == 1:
            continue
        for side, index in (("first", 0), ("last", -1)):
            face = np.take(label_array, index, axis=axis)
            for value in np.unique(face):
                if value > 0:
                    faces.setdefault(int(value), []).append(f"axis{axis}-{side}")
    return faces


def labels_touching_edge(label_image: sitk.Image) -> dict[int, list[str]]:
    """For each label of a SimpleITK label image that touches the image boundary, the faces it touches.

    Faces are named in the image's index order (``"i-first"``, ``"k-last"``: i = x/columns, j = y/rows,
    k = z/slices), which is what a person compares with the image's size.
    """
    array = sitk.GetArrayViewFromImage(label_image)
    names = "ijk"[: array.ndim][::-1]  # numpy axis 0 is the last index axis
    return {value: [_index_face_name(face, names) for face in faces] for value, faces in edge_faces(array).items()}


def _index_face_name(face: str, names: str) -> str:
    axis, side = face.removeprefix("axis").split("-")
    return f"{names[int(axis)]}-{side}"


def cut_off_note(label_image: sitk.Image, separator: str = "; ") -> str:
    """For one-line summaries: ``"; labels 1, 5 touch the scan's edge: ..."`` (the :data:`CUT_OFF_WARNING` words
    after the label values), or ``""`` when no label touches the image boundary."""
    values = sorted(labels_touching_edge(label_image))
    if not values:
        return ""
    return f"{separator}label{'s' if len(values) > 1 else ''} {', '.join(map(str, values))}: {CUT_OFF_WARNING}"
