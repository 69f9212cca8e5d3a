"""A deterministic synthetic abdominal CT phantom with a known true label map.

The anatomy is made of simple analytic shapes (elliptic cylinders for the body wall, ellipsoids for the organs,
stacked elliptic cylinders for the vertebral bodies, a cylinder for the aorta) placed in physical LPS
coordinates (x to the patient's left, y posterior, z superior, millimetres, relative to :data:`ANATOMY_CENTER`).
Each shape has an approximate signed distance; a voxel's share of a shape is a linear ramp of that distance over
the voxel's width along the surface normal, which mimics the partial-volume blur of a real scanner (edge voxels
take intermediate HU). The true label of a voxel is the last painted shape that covers its centre.

Different ``subject`` numbers shift, scale and turn the organs by a few millimetres, degrees and per cent
(deterministic per subject; subject 0 is the nominal anatomy), so phantoms can serve as atlas subjects and
training cases. Noise is Gaussian, slightly correlated between neighbouring voxels, seeded by ``noise_seed``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError
from ..io import LabelMap, LabelTable

LIVER, SPLEEN, LEFT_KIDNEY, RIGHT_KIDNEY, VERTEBRAE, LIVER_LESION, AORTA = 1, 2, 3, 4, 5, 6, 7

# value: (name, colour as in Slicer's generic anatomy colour table, nominal HU)
ORGANS: dict[int, tuple[str, tuple[float, float, float], float]] = {
    LIVER: ("liver", (0.867, 0.510, 0.396), 60.0),
    SPLEEN: ("spleen", (0.616, 0.424, 0.635), 90.0),
    LEFT_KIDNEY: ("left kidney", (0.725, 0.400, 0.325), 160.0),
    RIGHT_KIDNEY: ("right kidney", (0.600, 0.330, 0.270), 160.0),
    VERTEBRAE: ("vertebrae", (0.945, 0.839, 0.569), 500.0),
    LIVER_LESION: ("liver lesion", (0.565, 0.933, 0.565), 10.0),
    AORTA: ("aorta", (0.847, 0.396, 0.310), 200.0),
}
AIR_HU, FAT_HU, MUSCLE_HU, CAVITY_HU = -1000.0, -100.0, 45.0, -40.0  # CAVITY: mesenteric fat and bowel mix
NOISE_SD_HU = 12.0

DEFAULT_SHAPE = (128, 112, 48)          # x, y, z voxels (SimpleITK order)
DEFAULT_SPACING = (1.5, 1.5, 3.0)       # mm
ANATOMY_CENTER = (-5.0, 15.0, -120.0)   # LPS mm: the centre of the field of view, deliberately not the origin


@dataclass
class Phantom:
    """A synthetic CT (HU, float32) with its true label map and volumes.

    ``truth_volumes_ml`` counts the voxels of each label in ``labels``; ``analytic_volumes_ml`` are the exact
    volumes of the continuous shapes (equal up to discretisation when the organs lie inside the field of view).
    ``seeds`` holds, per label, an LPS point (mm) deep inside the label (the voxel farthest from its border).
    """

    image: sitk.Image
    labels: LabelMap
    truth_volumes_ml: dict[int, float]
    analytic_volumes_ml: dict[int, float]
    seeds: dict[int, tuple[float, float, float]]
    subject: int
    nominal_hu: dict[int, float] = field(default_factory=lambda: {value: hu for value, (_, _, hu) in ORGANS.items()})


def make_phantom(subject: int = 0, noise_seed: int = 0, shape: Sequence[int] | None = None,
                 spacing: Sequence[float] | None = None, direction: Sequence[float] | None = None) -> Phantom:
    """Build the phantom of ``subject`` (0 = nominal anatomy) with noise drawn from ``noise_seed``.

    ``shape`` (x, y, z voxels, default 128×112×48) and ``spacing`` (mm, default 1.5×1.5×3) set the grid, centred
    on the anatomy; ``direction`` (9 numbers, row-major, orthonormal) gives an oblique grid while the anatomy stays
    where it is in physical space.
    """
    for what, number in (("subject", subject), ("noise seed", noise_seed)):
        if int(number) != number or number < 0:
            raise InputError(f"phantom {what} {number!r}: give a whole number >= 0")
    grid = _make_grid(shape or DEFAULT_SHAPE, spacing or DEFAULT_SPACING, direction)
    points = _voxel_points(grid)
    axes = np.asarray(grid.GetDirection(), dtype=float).reshape(3, 3) * np.asarray(grid.GetSpacing())
    anatomy = _anatomy(int(subject))
    hu, label_array = _render(anatomy, points, axes)
    hu += _correlated_noise(grid.GetSize(), np.random.default_rng([int(noise_seed), int(subject), 7]))

    image = sitk.GetImageFromArray(hu.astype(np.float32))
    image.CopyInformation(grid)
    label_image = sitk.GetImageFromArray(label_array)
    label_image.CopyInformation(grid)
    table = LabelTable()
    for value, (name, color, _) in ORGANS.items():
        table.add(value, name, color)
    voxel_ml = float(np.prod(grid.GetSpacing())) / 1000.0
    counts = np.bincount(label_array.ravel(), minlength=max(ORGANS) + 1)
    return Phantom(
        image=image,
        labels=LabelMap(label_image, table),
        truth_volumes_ml={value: float(counts[value]) * voxel_ml for value in ORGANS},
        analytic_volumes_ml=_analytic_volumes(anatomy),
        seeds=_deep_points(label_image),
        subject=int(subject),
    )


# --- shapes -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid (optionally cut by the half-space ``n·(p - center) <= offset``)."""

    center: np.ndarray
    semi_axes: np.ndarray
    rotation: np.ndarray                 # columns: the local axes in LPS
    cut_normal: np.ndarray | None = None
    cut_offset: float = 0.0

    def distance(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Approximate signed distance (mm, < 0 inside) and outward unit normal at each point."""
        local = _transform(points - self.center, self.rotation)
        scaled = local / self.semi_axes
        radius = np.maximum(np.linalg.norm(scaled, axis=1), 1e-9)
        gradient = _transform(scaled / (radius[:, None] * self.semi_axes), self.rotation.T)
        gradient_norm = np.linalg.norm(gradient, axis=1)
        distance = (radius - 1.0) / gradient_norm  # first-order distance to the surface; exact enough near it
        normal = gradient / gradient_norm[:, None]
        if self.cut_normal is None:
            return distance, normal
        plane = (points - self.center) @ self.cut_normal - self.cut_offset
        use_plane = plane > distance
        return np.where(use_plane, plane, distance), np.where(use_plane[:, None], self.cut_normal, normal)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounding box (LPS mm)."""
        extent = np.sqrt(((self.rotation * self.semi_axes) ** 2).sum(axis=1))
        return self.center - extent, self.center + extent

    def volume_mm3(self) -> float:
        volume = 4.0 / 3.0 * np.pi * float(np.prod(self.semi_axes))
        if self.cut_normal is None:
            return volume
        # In the unit-sphere frame the cut plane is m·u <= offset; keep the part of the sphere below it.
        m = self.semi_axes * (self.rotation.T @ self.cut_normal)
        height = float(np.clip(self.cut_offset / np.linalg.norm(m), -1.0, 1.0))
        removed_cap = np.pi * (1.0 - height) ** 2 * (2.0 + height) / 3.0
        return volume * (1.0 - removed_cap / (4.0 / 3.0 * np.pi))


@dataclass(frozen=True)
class EllipticCylinder:
    """An elliptic cylinder along the local z axis, ``half_length`` either side of its centre (inf = endless)."""

    center: np.ndarray
    semi_axes: np.ndarray                # in-plane semi-axes (2,)
    rotation: np.ndarray
    half_length: float = np.inf

    def distance(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        offset = points - self.center
        scaled = _transform(offset, self.rotation[:, :2] / self.semi_axes)  # in-plane, unit-circle frame
        radius = np.maximum(np.sqrt((scaled ** 2).sum(axis=1)), 1e-9)
        gradient = scaled / (radius[:, None] * self.semi_axes)
        gradient_norm = np.sqrt((gradient ** 2).sum(axis=1))
        radial = (radius - 1.0) / gradient_norm
        normal = _transform(gradient / gradient_norm[:, None], self.rotation[:, :2].T)
        if np.isinf(self.half_length):
            return radial, normal
        height = offset @ self.rotation[:, 2]
        axial = np.abs(height) - self.half_length
        use_axial = axial > radial
        axial_normal = np.sign(height)[:, None] * self.rotation[:, 2]
        return np.where(use_axial, axial, radial), np.where(use_axial[:, None], axial_normal, normal)

    def bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Axis-aligned bounding box (LPS mm); None for an endless cylinder."""
        if np.isinf(self.half_length):
            return None
        extent = np.abs(self.rotation) @ np.array([*self.semi_axes, self.half_length])
        return self.center - extent, self.center + extent

    def volume_mm3(self) -> float:
        return float(np.pi * np.prod(self.semi_axes) * 2.0 * self.half_length)


# --- anatomy ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layer:
    """One painted tissue: its shapes, HU and label value (0 = unlabelled tissue such as fat or muscle)."""

    shapes: tuple
    hu: float
    label: int = 0


def _rotation(z_degrees: float = 0.0, x_degrees: float = 0.0, y_degrees: float = 0.0) -> np.ndarray:
    """Rotation about z, then x, then y (degrees), as a matrix whose columns are the turned axes."""
    rz, rx, ry = np.radians([z_degrees, x_degrees, y_degrees])
    about_z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    about_y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    return about_y @ about_x @ about_z


class _Variation:
    """Per-subject perturbations: none for subject 0, else a few mm, degrees and per cent from a seeded RNG."""

    def __init__(self, subject: int) -> None:
        self.rng = np.random.default_rng([int(subject), 20240601]) if subject else None

    def shift(self, sd_mm: float = 2.0) -> np.ndarray:
        return np.zeros(3) if self.rng is None else np.clip(self.rng.normal(0.0, sd_mm, 3), -2 * sd_mm, 2 * sd_mm)

    def scale(self, sd: float = 0.05, n: int = 3) -> np.ndarray:
        return np.ones(n) if self.rng is None else 1.0 + np.clip(self.rng.normal(0.0, sd, n), -2 * sd, 2 * sd)

    def angle(self, sd_degrees: float = 4.0) -> float:
        return 0.0 if self.rng is None else float(np.clip(self.rng.normal(0.0, sd_degrees), -2 * sd_degrees,
                                                          2 * sd_degrees))


def _anatomy(subject: int) -> list[Layer]:
    """The painted layers, outermost first, for one subject (coordinates relative to ANATOMY_CENTER)."""
    vary = _Variation(subject)
    body_scale = vary.scale(0.03, 1)[0]
    identity = np.eye(3)

    def cylinder(x, y, a, b, shrink=0.0):
        return EllipticCylinder(np.array([x, y, 0.0]), np.array([a - shrink, b - shrink]) * body_scale, identity)

    def organ(center, semi_axes, z_degrees=0.0, x_degrees=0.0):
        return Ellipsoid(np.asarray(center, float) + vary.shift(), np.asarray(semi_axes, float) * vary.scale(),
                         _rotation(z_degrees + vary.angle(), x_degrees + vary.angle(3.0)))

    liver_rotation_z = -20.0 + vary.angle()
    liver_rotation = _rotation(liver_rotation_z)
    liver = Ellipsoid(np.array([-32.0, -12.0, 22.0]) + vary.shift(), np.array([38.0, 29.0, 40.0]) * vary.scale(),
                      liver_rotation, cut_normal=_unit([0.5, 0.2, -0.8]), cut_offset=8.0)
    # The lesion sits at a fixed place in the liver's own normalised frame, so it stays inside for every subject.
    lesion_center = liver.center + liver.rotation @ (liver.semi_axes * np.array([-0.35, -0.30, 0.30]))
    lesion_radius = 9.0 * vary.scale(0.05, 1)[0]
    spine_x, spine_y = vary.shift(1.0)[:2]
    vertebrae = tuple(EllipticCylinder(np.array([spine_x, 30.0 + spine_y, z]), np.array([14.0, 11.0]), identity,
                                       half_length=12.0) for z in (-45.0, -15.0, 15.0, 45.0))
    return [
        Layer((cylinder(0.0, 0.0, 90.0, 68.0),), FAT_HU),
        Layer((cylinder(0.0, 0.0, 90.0, 68.0, shrink=9.0),), MUSCLE_HU),
        Layer((cylinder(0.0, -3.0, 74.0, 47.0),), CAVITY_HU),
        Layer(vertebrae, ORGANS[VERTEBRAE][2], VERTEBRAE),
        Layer((EllipticCylinder(np.array([12.0 + spine_x, 6.0 + spine_y, 0.0]), np.array([8.0, 8.0]) *
                                vary.scale(0.05, 1)[0], identity, half_length=55.0),), ORGANS[AORTA][2], AORTA),
        Layer((liver,), ORGANS[LIVER][2], LIVER),
        Layer((Ellipsoid(lesion_center, np.full(3, lesion_radius), identity),), ORGANS[LIVER_LESION][2],
              LIVER_LESION),
        Layer((organ([47.0, 12.0, 30.0], [14.0, 24.0, 24.0], z_degrees=35.0),), ORGANS[SPLEEN][2], SPLEEN),
        Layer((organ([44.0, 26.0, -30.0], [14.0, 18.0, 28.0], z_degrees=25.0, x_degrees=-10.0),),
              ORGANS[LEFT_KIDNEY][2], LEFT_KIDNEY),
        Layer((organ([-42.0, 26.0, -34.0], [14.0, 18.0, 27.0], z_degrees=-25.0, x_degrees=-10.0),),
              ORGANS[RIGHT_KIDNEY][2], RIGHT_KIDNEY),
    ]


def _analytic_volumes(anatomy: list[Layer]) -> dict[int, float]:
    """Exact volumes (mL) of the labelled shapes; the lesion is carved out of the liver."""
    volumes = {layer.label: sum(shape.volume_mm3() for shape in layer.shapes) / 1000.0
               for layer in anatomy if layer.label}
    volumes[LIVER] -= volumes[LIVER_LESION]
    return volumes


def _transform(rows: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``rows @ matrix`` for many 3-vectors (einsum: NumPy's matmul is slow for an (N, 3) by (3, 3) product)."""
    return np.einsum("...i,ij->...j", rows, matrix)


def _unit(vector: Sequence[float]) -> np.ndarray:
    vector = np.asarray(vector, dtype=float)
    return vector / np.linalg.norm(vector)


# --- rendering ----------------------------------------------------------------------------------------------

def _make_grid(shape: Sequence[int], spacing: Sequence[float], direction: Sequence[float] | None) -> sitk.Image:
    """An empty image whose grid is centred on ANATOMY_CENTER."""
    if len(shape) != 3 or any(int(n) < 1 for n in shape):
        raise InputError(f"phantom shape {tuple(shape)}: give three positive voxel counts (x, y, z)")
    if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise InputError(f"phantom spacing {tuple(spacing)}: give three positive spacings in mm")
    matrix = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    if matrix.size != 9 or not np.allclose(matrix.reshape(3, 3) @ matrix.reshape(3, 3).T, np.eye(3), atol=1e-6):
        raise InputError(f"phantom direction {tuple(np.ravel(matrix))}: give 9 numbers of an orthonormal "
                         "3x3 matrix (row-major)")
    matrix = matrix.reshape(3, 3)
    grid = sitk.Image([int(n) for n in shape], sitk.sitkUInt8)
    grid.SetSpacing([float(s) for s in spacing])
    grid.SetDirection(matrix.ravel().tolist())
    half_extent = (np.asarray(shape, dtype=float) - 1.0) / 2.0 * np.asarray(spacing, dtype=float)
    grid.SetOrigin((np.asarray(ANATOMY_CENTER) - matrix @ half_extent).tolist())
    return grid


def _voxel_points(grid: sitk.Image) -> np.ndarray:
    """Physical position of every voxel centre relative to ANATOMY_CENTER, as a (z, y, x, 3) array."""
    size = grid.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in reversed(size)), indexing="ij")
    index = np.stack([i, j, k], axis=-1)
    matrix = np.asarray(grid.GetDirection()).reshape(3, 3) * np.asarray(grid.GetSpacing())
    return _transform(index, matrix.T) + (np.asarray(grid.GetOrigin()) - np.asarray(ANATOMY_CENTER))


def _render(anatomy: list[Layer], points: np.ndarray, axes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paint the layers with partial-volume edges; return HU and the true labels as (z, y, x) arrays."""
    hu = np.full(points.shape[:3], AIR_HU)
    labels = np.zeros(points.shape[:3], dtype=np.uint8)
    margin = float(np.abs(axes).sum(axis=1).max()) + 1.0  # beyond this a shape no longer shades a voxel
    for layer in anatomy:
        for shape in layer.shapes:
            box = _index_box(shape.bounds(), margin, points, axes)
            distance, normal = shape.distance(points[box].reshape(-1, 3))
            # A voxel (a box with edge vectors `axes`) spans sum|n·edge| mm along the normal n: ramp over that.
            # (no normal at a shape's very centre: a tiny width keeps that voxel fully inside, never NaN)
            width = np.maximum(np.abs(_transform(normal, axes)).sum(axis=1), 1e-6)
            fraction = np.clip(0.5 - distance / width, 0.0, 1.0).reshape(hu[box].shape)
            hu[box] += fraction * (layer.hu - hu[box])
            if layer.label:
                labels[box][distance.reshape(fraction.shape) < 0] = layer.label
    return hu.astype(np.float32), labels


def _index_box(bounds: tuple[np.ndarray, np.ndarray] | None, margin: float, points: np.ndarray,
               axes: np.ndarray) -> tuple[slice, ...]:
    """The (z, y, x) slices of the voxels within ``margin`` mm of a shape's bounding box (all for endless ones)."""
    if bounds is None:
        return (slice(None),) * 3
    low, high = bounds[0] - margin, bounds[1] + margin
    corners = np.array(list(itertools.product(*zip(low, high))))
    indices = np.linalg.solve(axes, (corners - points[0, 0, 0]).T).T  # continuous (i, j, k) of each corner
    size = points.shape[2::-1]  # (x, y, z) voxel counts
    first = np.clip(np.floor(indices.min(axis=0)).astype(int), 0, size)
    last = np.clip(np.ceil(indices.max(axis=0)).astype(int) + 1, 0, size)
    return tuple(slice(int(a), int(b)) for a, b in zip(reversed(first), reversed(last)))


def _correlated_noise(size: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with SD NOISE_SD_HU, blurred slightly in-plane as reconstruction kernels do."""
    white = rng.standard_normal(tuple(reversed(size)), dtype=np.float32)
    noise = ndimage.gaussian_filter(white, sigma=(0.3, 0.7, 0.7), mode="wrap")
    return noise * np.float32(NOISE_SD_HU / max(float(noise.std()), 1e-6))


def _deep_points(label_image: sitk.Image) -> dict[int, tuple[float, float, float]]:
    """Per label, the LPS position of the voxel farthest (in mm) from the label's border."""
    array = sitk.GetArrayViewFromImage(label_image)
    sampling = tuple(reversed(label_image.GetSpacing()))
    seeds = {}
    for value, box in enumerate(ndimage.find_objects(array), start=1):
        if box is None:
            continue
        padded = np.pad(array[box] == value, 1)
        depth = ndimage.distance_transform_edt(padded, sampling=sampling)
        k, j, i = (int(c) - 1 + s.start for c, s in zip(np.unravel_index(np.argmax(depth), depth.shape), box))
        seeds[value] = tuple(float(c) for c in label_image.TransformIndexToPhysicalPoint((i, j, k)))
    return seeds
