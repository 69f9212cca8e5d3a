"""Accuracy of the classic methods on all public cases with one seed and the commands' default settings.

Spleen CT (region growing), Sunnybrook LV blood pool (region growing, annotated slices only; seed = centroid of
the reference blood pool on the middle annotated slice), HC18 fetal head (snake; seed = centroid of the reference
head; Dice and head-circumference error in mm from an ellipse fitted to the result).
Run: ``python benchmarks/classic_accuracy.py [--hc18-every N]``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import SimpleITK as sitk
from _common import require_shared_data

from SegToolkitLib.errors import InputError
from SegToolkitLib.methods.classic import grow, snake


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def centroid_point(image: sitk.Image, mask: np.ndarray, offset: tuple = ()) -> tuple:
    centre = np.argwhere(mask).mean(axis=0)[::-1]
    return image.TransformContinuousIndexToPhysicalPoint([float(v) for v in (*centre, *offset)])


def ellipse_perimeter_mm(mask: np.ndarray, spacing: float) -> float:
    """Perimeter of the ellipse with the same second moments as the mask (Ramanujan's approximation)."""
    coords = np.argwhere(mask) * spacing
    eigen = np.linalg.eigvalsh(np.cov(coords.T))
    a, b = 2.0 * np.sqrt(np.maximum(eigen, 0))
    h = ((a - b) / (a + b)) ** 2
    return float(np.pi * (a + b) * (1 + 3 * h / (10 + np.sqrt(4 - 3 * h))))


def summary(name: str, values: list[float], target: float, seconds: list[float]) -> None:
    print(f"{name}: Dice mean {np.mean(values):.3f} worst {np.min(values):.3f} (target >= {target}) n={len(values)}; "
          f"time mean {np.mean(seconds):.2f} s max {np.max(seconds):.2f} s", flush=True)


def spleen(data) -> None:
    folder = data / "msd_spleen_ct_crop"
    case = json.loads((folder / "dataset.json").read_text())["cases"][0]
    image = sitk.ReadImage(str(folder / case["image"]))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / case["label"]))) > 0
    start = time.perf_counter()
    result = sitk.GetArrayFromImage(grow(image, [centroid_point(image, truth)])) > 0
    summary("spleen CT grow (defaults)", [dice(result, truth)], 0.90, [time.perf_counter() - start])


def sunnybrook(data) -> None:
    folder = data / "sunnybrook_cardiac_lv"
    scores, seconds = [], []
    for case in json.loads((folder / "dataset.json").read_text())["cases"]:
        image = sitk.ReadImage(str(folder / case["image"]))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / case["label"]))) == 1
        slices = case["annotated_slices_0_based"]["1"]
        middle = slices[len(slices) // 2]
        seed = centroid_point(image, truth[middle], (middle,))
        start = time.perf_counter()
        try:
            result = sitk.GetArrayFromImage(grow(image, [seed])) > 0
            score = dice(result[slices], truth[slices])
        except InputError as error:
            print(f"  {case['case']}: {error}")
            score = 0.0
        seconds.append(time.perf_counter() - start)
        scores.append(score)
        print(f"  {case['case']}: Dice {score:.3f} ({seconds[-1]:.2f} s)", flush=True)
    summary("Sunnybrook LV blood pool grow (defaults)", scores, 0.85, seconds)


def hc18(data, every: int) -> None:
    folder = data / "hc18_fetal_head_ultrasound"
    scores, errors, seconds = [], [], []
    for case in json.loads((folder / "dataset.json").read_text())["cases"][::every]:
        image = sitk.ReadImage(str(folder / case["image"]), sitk.sitkFloat32)
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / case["label"]))) > 0
        start = time.perf_counter()
        try:
            result = sitk.GetArrayFromImage(snake(image, [centroid_point(image, truth)])) > 0
        except InputError:
            result = np.zeros_like(truth)
        seconds.append(time.perf_counter() - start)
        scores.append(dice(result, truth))
        hc = ellipse_perimeter_mm(result, image.GetSpacing()[0]) if result.sum() > 10 else 0.0
        errors.append(abs(hc - case["reference_head_circumference_mm"]))
        print(f"  {case['case']}: Dice {scores[-1]:.3f} HC error {errors[-1]:.1f} mm ({seconds[-1]:.1f} s)",
              flush=True)
    summary("HC18 snake (defaults)", scores, 0.90, seconds)
    print(f"HC18 HC error: mean {np.mean(errors):.1f} mm worst {np.max(errors):.1f} mm", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hc18-every", type=int, default=1, help="use every N-th HC18 image (default all 150)")
    args = parser.parse_args()
    data = require_shared_data()
    spleen(data)
    sunnybrook(data)
    hc18(data, args.hc18_every)


if __name__ == "__main__":
    main()
