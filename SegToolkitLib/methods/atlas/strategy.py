"""Automatic atlas registration settings: is the atlas the same subject (or already in the target's space), or
another subject scanned elsewhere?

The two cases need opposite settings. Two phases of one acquisition (cardiac ED and ES, or an image already
resampled into a template space) overlap in physical space and look alike voxel by voxel: they are registered from
their own positions (no initialisation) up to a deformation: diffeomorphic demons when the intensities agree
(correlation at identity >= :data:`SAME_CONTRAST_CORRELATION`; Sunnybrook ED -> ES blood pool 0.866 against 0.844
for the B-spline, at 0.4 GB instead of 2.3 GB), else a B-spline on mutual information. Between subjects
(different bodies, scanners and slice planning) the field of view around the structures differs and deformable stages
follow unrelated anatomy, so the atlas is started at the target's geometric centre, registered rigid then affine with
the metric sampled only around its labelled structures (labels dilated by :data:`BETWEEN_SUBJECTS_MARGIN_MM`), and its
labels are then adapted to the target's own intensities (:mod:`.refinement`). Measured on the public Sunnybrook
patients (benchmarks/atlas_accuracy.py): two ED images of one patient correlate 0.95-0.99 at identity, different
patients 0.11-0.33; the MS patients in MNI space correlate 0.51-0.63 with the MNI template even across contrasts,
which is why :data:`ALIGNED_CORRELATION` sits at 0.45.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

AUTO = "auto"
# the atlas command's and the Slicer panel's choices: ``auto`` first, then the fixed settings
ATLAS_TRANSFORMS = ("auto", "rigid", "affine", "deformable", "diffeomorphic")
ATLAS_FUSIONS = ("auto", "majority", "staple", "weighted")
ALIGNED_CORRELATION = 0.45  # intensity correlation at identity above which the images are taken as aligned
ALIGNED_OVERLAP = 0.5  # ... and at least this fraction of the target must lie inside the atlas image
SAME_CONTRAST_CORRELATION = 0.8  # aligned images this alike are registered by demons (intensity-based)
BETWEEN_SUBJECTS_MARGIN_MM = 20.0  # atlas labels dilated by this much make the metric mask between subjects
CHECK_GRID_SIZE = 64  # voxels per axis at most when comparing the images (a quick look, not a registration)


@dataclass(frozen=True)
class PairCheck:
    """How an atlas image and the target compare where they lie on each other without any transform."""

    overlap: float  # fraction of the target's voxels inside the atlas image
    correlation: float  # Pearson correlation of the intensities there (0 when there is too little overlap)

    @property
    def aligned(self) -> bool:
        """Same subject or same space: the images already overlap and look alike voxel by voxel."""
        return self.overlap >= ALIGNED_OVERLAP and self.correlation >= ALIGNED_CORRELATION

    def describe(self) -> str:
        return f"intensity correlation {self.correlation:.2f} over {100 * self.overlap:.0f}% overlap at identity"


@dataclass(frozen=True)
class AtlasPlan:
    """The registration settings chosen for one atlas, and why."""

    relation: str  # "aligned", "between subjects" or "as given" (every setting chosen by the caller)
    transform: str
    init: str
    metric: str  # ``auto``: both metrics are tried, see :func:`label_fit`
    mask_margin_mm: float | None
    check: PairCheck | None = None
    metric_choice: str = ""  # why the metric was chosen, once an ``auto`` metric was resolved

    @property
    def between_subjects(self) -> bool:
        return self.relation == "between subjects"

    def describe(self) -> str:
        """One line: what the atlas looks like relative to the target and what registration that implies."""
        if self.relation == "aligned":
            why = "same subject or space"
        elif self.relation == "between subjects":
            why = "a different subject"
        else:
            why = "settings as given"
        seen = f" ({self.check.describe()})" if self.check is not None else ""
        start = {"none": "its own position", "geometry": "the geometric centres", "moments": "the centres of mass",
                 "axes": "the image axes"}.get(self.init, self.init)
        stages = {"rigid": "rigid", "affine": "rigid + affine", "deformable": "rigid + affine + B-spline",
                  "diffeomorphic": "rigid + affine + demons"}.get(self.transform, self.transform)
        mask = (f" on its labels dilated by {self.mask_margin_mm:g} mm" if self.mask_margin_mm is not None
                else " on the whole image")
        metric = "mi or correlation, whichever fits better" if self.metric == AUTO else self.metric
        choice = f"; {self.metric_choice}" if self.metric_choice else ""
        return f"{why}{seen}: start from {start}, {stages} ({metric}){mask}{choice}"


def compare_images(target: sitk.Image, atlas_image: sitk.Image) -> PairCheck:
    """Overlap and intensity correlation of the atlas image resampled onto a coarse copy of the target grid
    with the identity transform (physical positions as stored)."""
    target = sitk.Cast(target, sitk.sitkFloat32)
    factors = [max(1, -(-size // CHECK_GRID_SIZE)) for size in target.GetSize()]
    coarse = sitk.Shrink(target, factors) if max(factors) > 1 else target
    ones = sitk.Image(atlas_image.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(atlas_image)
    inside = sitk.GetArrayFromImage(sitk.Resample(ones, coarse, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
    moved = sitk.Resample(sitk.Cast(atlas_image, sitk.sitkFloat32), coarse, sitk.Transform(), sitk.sitkLinear, 0.0)
    overlap = float(inside.mean())
    if inside.sum() < 64:
        return PairCheck(overlap, 0.0)
    x = sitk.GetArrayViewFromImage(coarse)[inside].astype(np.float64)
    y = sitk.GetArrayViewFromImage(moved)[inside].astype(np.float64)
    if x.std() == 0 or y.std() == 0:
        return PairCheck(overlap, 0.0)
    return PairCheck(overlap, float(np.corrcoef(x, y)[0, 1]))


def plan_registration(target: sitk.Image, atlas_image: sitk.Image, transform: str = AUTO, init: str = AUTO,
                      metric: str = AUTO, mask_margin_mm: float | str | None = AUTO) -> AtlasPlan:
    """Resolve the ``auto`` settings for one atlas from how it compares with the target; settings given
    explicitly are kept as they are. An ``auto`` metric stays ``auto`` between subjects (both are tried)."""
    if AUTO not in (transform, init, mask_margin_mm, metric):
        return AtlasPlan("as given", transform, init, metric, _margin(mask_margin_mm))
    check = compare_images(target, atlas_image)
    if check.aligned:
        deformation = "diffeomorphic" if check.correlation >= SAME_CONTRAST_CORRELATION else "deformable"
        relation, defaults = "aligned", (deformation, "none", None)
    else:
        relation, defaults = "between subjects", ("affine", "geometry", BETWEEN_SUBJECTS_MARGIN_MM)
    return AtlasPlan(relation,
                     defaults[0] if transform == AUTO else transform,
                     defaults[1] if init == AUTO else init,
                     "mi" if metric == AUTO and check.aligned else metric,
                     defaults[2] if mask_margin_mm == AUTO else _margin(mask_margin_mm),
                     check)


def label_fit(target: sitk.Image, labels: sitk.Image, band_mm: float = 10.0) -> float:
    """How well propagated labels explain the target's intensities: the correlation ratio (share of the intensity
    variance explained by the label groups) over the labelled voxels and a ``band_mm`` background band around
    them. It depends on the target's intensities only, not on the registration metric, and fits any modality.

    Between Sunnybrook patients, keeping whichever of the mutual-information and correlation registrations
    scored higher picked the better one in 12 of 12 pairs (blood pool Dice 0.777 / 0.797 -> 0.829)."""
    label_array = sitk.GetArrayViewFromImage(labels)
    mask = sitk.Cast(labels > 0, sitk.sitkUInt8)
    radius = [max(1, int(round(band_mm / spacing))) for spacing in labels.GetSpacing()]
    region = sitk.GetArrayFromImage(sitk.BinaryDilate(mask, radius)) > 0
    values = sitk.GetArrayViewFromImage(target)[region].astype(np.float64)
    groups = label_array[region]
    if values.size < 2 or values.std() == 0:
        return 0.0
    mean = values.mean()
    between = sum(float(np.sum(groups == value)) * (float(values[groups == value].mean()) - mean) ** 2
                  for value in np.unique(groups))
    return between / float(np.sum((values - mean) ** 2))


def _margin(value: float | str | None) -> float | None:
    return None if value is None or value == AUTO else float(value)
