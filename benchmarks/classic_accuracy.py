"""Accuracy of the classic methods on all public cases with the commands' default settings (no flags).

* MSD spleen CT crop: ``grow`` and ``snake`` from one seed (the deepest point of the reference), from three seeds
  and from an initial mask (the reference shrunk or grown by 3 voxels in-plane, as a network's output may be);
* TotalSegmentator CT example: ``snake`` from one seed on liver, kidneys and spleen where larger than 20 mL (scored
  on the reference labels there), with the time of each 3D snake;
* Sunnybrook LV blood pool: ``grow`` and ``snake`` (annotated slices only; seed at the deepest point of the blood pool
  on the middle annotated slice);
* HC18 fetal head: ``snake`` from the head centre, then ``measure``'s fitted-ellipse circumference against the
  reference head circumference in ``dataset.json``, on all images and on each half (even and odd case numbers: the
  ridge-fit settings were tuned on the even half, the odd half confirms them); outliers (error > 4 mm) are listed.

Run: ``nice python benchmarks/classic_accuracy.py [--only spleen,ct,sunnybrook,hc18] [--hc18-every N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import SimpleITK as sitk
from _common import cpu_description, require_shared_data
from scipy import ndimage

from SegToolkitLib.errors import InputError
from SegToolkitLib.io import LabelMap, LabelTable
from SegToolkitLib.measurement.shape import measure
from SegToolkitLib.methods.classic import grow, snake

CT_ORGANS = ("liver", "kidney_right", "kidney_left", "spleen")
MIN_ML = 20.0
HC_OUTLIER_MM = 4.0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def deepest_point(image: sitk.Image, mask: np.ndarray, offset: tuple = ()) -> tuple:
    """The physical point of the mask farthest from its border (where a user clicks "in the middle")."""
    spacing = np.array(image.GetSpacing())[::-1][-mask.ndim:]
    distance = ndimage.distance_transform_edt(mask, sampling=spacing)
    index = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return image.TransformContinuousIndexToPhysicalPoint([float(v) for v in (*index[::-1], *offset)])


def three_seeds(image: sitk.Image, mask: np.ndarray) -> list[tuple]:
    """The deepest point, and the deepest points of the slices at 1/3 and 2/3 of the mask's slice extent."""
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    seeds = [deepest_point(image, mask)]
    for fraction in (1 / 3, 2 / 3):
        k = int(slices[int(fraction * (len(slices) - 1))])
        seeds.append(deepest_point(image, mask[k], (k,)))
    return seeds


def timed(function, *args, **options):
    """(the result as a bool array or None when it failed, (wall seconds, CPU seconds of this process)) of
    ``function(*args, **options)``. The CPU time does not grow with other jobs on the cores: on a quiet machine the
    wall time is at most about that (ITK runs some filters on both cores)."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        result = sitk.GetArrayFromImage(function(*args, **options)) > 0
    except InputError as error:
        print(f"    failed: {error}")
        result = None
    return result, (time.perf_counter() - start, time.process_time() - cpu)


def line(name: str, outcome: tuple, truth: np.ndarray, target: float, slices=None) -> float:
    """Print and return the Dice of ``outcome`` = (result or None, (wall seconds, CPU seconds))."""
    result, (wall, cpu) = outcome
    score = 0.0 if result is None else dice(result[slices], truth[slices]) if slices is not None else \
        dice(result, truth)
    status = "reached" if score >= target else "NOT reached"
    print(f"  {name}: Dice {score:.3f} (target >= {target}: {status}), {wall:.2f} s wall, {cpu:.2f} s CPU",
          flush=True)
    return score


def spleen(data) -> None:
    folder = data / "msd_spleen_ct_crop"
    case = json.loads((folder / "dataset.json").read_text())["cases"][0]
    image = sitk.ReadImage(str(folder / case["image"]))
    reference = sitk.ReadImage(str(folder / case["label"]))
    truth = sitk.GetArrayFromImage(reference) > 0
    seed = deepest_point(image, truth)
    print("MSD spleen CT crop")
    line("grow, one seed", timed(grow, image, [seed]), truth, 0.90)
    line("snake, one seed", timed(snake, image, [seed]), truth, 0.88)
    line("snake, three seeds", timed(snake, image, three_seeds(image, truth)), truth, 0.88)
    shrunk = sitk.BinaryErode(reference, [3, 3, 0])
    grown = sitk.BinaryDilate(reference, [3, 3, 0])
    line("snake --init (reference shrunk 3 voxels)", timed(snake, image, initial_mask=shrunk), truth, 0.88)
    line("snake --init (reference grown 3 voxels)", timed(snake, image, initial_mask=grown), truth, 0.88)


def totalsegmentator(data) -> None:
    folder = data / "totalsegmentator_ct_examples"
    meta = json.loads((folder / "dataset.json").read_text())
    names = {name: int(value) for value, name in meta["labels"].items()}
    case = meta["cases"][0]
    image = sitk.ReadImage(str(folder / case["image"]))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / case["label"])))
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    print(f"TotalSegmentator CT example (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    for organ in CT_ORGANS:
        truth = labels == names[organ]
        if truth.sum() * voxel_ml < MIN_ML:
            print(f"  {organ}: absent or under {MIN_ML:g} mL in this case, not scored")
            continue
        line(f"snake, one seed, {organ} ({truth.sum() * voxel_ml:.0f} mL)",
             timed(snake, image, [deepest_point(image, truth)]), truth, 0.85)


def sunnybrook(data) -> None:
    folder = data / "sunnybrook_cardiac_lv"
    scores = {"grow": [], "snake": [], "snake --init (reference grown 3 voxels in-plane)": []}
    print("Sunnybrook LV blood pool (annotated slices)")
    for case in json.loads((folder / "dataset.json").read_text())["cases"]:
        image = sitk.ReadImage(str(folder / case["image"]))
        reference = sitk.ReadImage(str(folder / case["label"]))
        truth = sitk.GetArrayFromImage(reference) == 1
        slices = case["annotated_slices_0_based"]["1"]
        middle = slices[len(slices) // 2]
        seed = deepest_point(image, truth[middle], (middle,))
        for name, method in (("grow", grow), ("snake", snake)):
            scores[name].append(line(f"{case['case']} {name}", timed(method, image, [seed]), truth, 0.85,
                                     slices))
        grown = sitk.BinaryDilate(sitk.Cast(reference == 1, sitk.sitkUInt8), [3, 3, 0])
        name = "snake --init (reference grown 3 voxels in-plane)"
        scores[name].append(line(f"{case['case']} {name}", timed(snake, image, initial_mask=grown), truth, 0.85,
                                 slices))
    for name, values in scores.items():
        print(f"  {name}: mean Dice {np.mean(values):.3f}, worst {np.min(values):.3f} (target mean >= 0.85)")


def hc18(data, every: int) -> None:
    folder = data / "hc18_fetal_head_ultrasound"
    names, scores, errors, outliers, seconds = [], [], [], [], []
    print("HC18 fetal head: snake from the head centre, measure's ellipse circumference")
    for case in json.loads((folder / "dataset.json").read_text())["cases"][::every]:
        image = sitk.ReadImage(str(folder / case["image"]), sitk.sitkFloat32)
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / case["label"]))) > 0
        centre = np.argwhere(truth).mean(axis=0)[::-1]
        seed = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in centre])
        start = time.perf_counter()
        try:
            result = snake(image, [seed])
            row = measure(LabelMap(result, LabelTable())).rows()[0]
            circumference = row["ellipse_circumference_mm"] or 0.0
            score = dice(sitk.GetArrayFromImage(result) > 0, truth)
        except InputError:
            circumference, score = 0.0, 0.0
        seconds.append(time.perf_counter() - start)
        error = circumference - case["reference_head_circumference_mm"]
        names.append(case["case"])
        scores.append(score)
        errors.append(error)
        if abs(error) > HC_OUTLIER_MM:
            outliers.append((case["case"], score, error))
    print(f"  {np.mean(seconds):.1f} s per image; HC error targets: median <= 2 mm, mean <= 4 mm; Dice mean >= 0.93")
    even = np.array([int(name.rsplit("_", 1)[-1]) % 2 == 0 for name in names])
    for part, chosen in (("all", np.ones_like(even)), ("even case numbers (tuning half)", even),
                         ("odd case numbers (check half)", ~even)):
        hc18_summary(part, np.array(scores)[chosen], np.array(errors)[chosen])
    print(f"  {len(outliers)} outliers over {HC_OUTLIER_MM:g} mm:")
    for name, score, error in sorted(outliers, key=lambda item: -abs(item[2])):
        print(f"    {name}: HC error {error:+.1f} mm, Dice {score:.3f}")


def hc18_summary(part: str, scores: np.ndarray, errors: np.ndarray) -> None:
    if not len(scores):
        return
    absolute = np.abs(errors)
    print(f"  {part}, n={len(scores)}: HC error median {np.median(absolute):.2f} mm, mean {np.mean(absolute):.2f} mm, "
          f"signed median {np.median(errors):+.2f} mm, {np.count_nonzero(absolute > 10)} over 10 mm; "
          f"Dice mean {np.mean(scores):.3f}, median {np.median(scores):.3f}, worst {np.min(scores):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="spleen,ct,sunnybrook,hc18", help="comma-separated parts to run")
    parser.add_argument("--hc18-every", type=int, default=1, help="use every N-th HC18 image (default all 150)")
    args = parser.parse_args()
    data = require_shared_data()
    print(f"CPU: {cpu_description()}")
    parts = set(args.only.split(","))
    if "spleen" in parts:
        spleen(data)
    if "ct" in parts:
        totalsegmentator(data)
    if "sunnybrook" in parts:
        sunnybrook(data)
    if "hc18" in parts:
        hc18(data, args.hc18_every)


if __name__ == "__main__":
    main()
