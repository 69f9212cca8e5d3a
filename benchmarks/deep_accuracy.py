"""Accuracy of the deep engine on real data (run by hand; takes 15+ minutes per dataset on 2 CPU cores).

* HC18 fetal head (2D ultrasound): a 2D model trained with a time budget (default 15 min) on 4/5 of the public
  images, scored on the held-out fifth: Dice and head-circumference error (mm, ellipse fitted to the mask).
  Target: Dice >= 0.95.
* Sunnybrook LV (cine MRI, thick slices): trained on 3 patients, scored on the held-out patient (both phases) on
  the annotated slices only: blood pool (target >= 0.88) and myocardium (ED only).

Usage: python benchmarks/deep_accuracy.py [hc18|sunnybrook|all] [--time-budget MIN] [--threads N] [--work DIR]
(a finished model already in --work is scored again without retraining)
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from _common import require_shared_data


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def ellipse_circumference_mm(mask: np.ndarray, spacing: float) -> float:
    """Circumference of the ellipse with the mask's second moments (Ramanujan's formula)."""
    from skimage.measure import label, regionprops

    regions = regionprops(label(mask.astype(np.uint8)))
    if not regions:
        return 0.0
    region = max(regions, key=lambda r: r.area)
    a, b = region.axis_major_length / 2 * spacing, region.axis_minor_length / 2 * spacing
    return math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))


def train_model(dataset, work: Path, name: str, minutes: float, network: str) -> tuple[Path, dict, float]:
    """Train ``work/name`` with the time budget, or reuse the finished model there (the scoring is then redone)."""
    from SegToolkitLib.methods.deep.training import TrainingOptions, train
    from SegToolkitLib.progress import ConsoleProgress

    model_dir = work / name
    if (model_dir / "model.json").is_file():
        summary = json.loads((model_dir / "model.json").read_text())["training"]
        return model_dir, summary, summary["seconds"]
    start = time.perf_counter()
    with ConsoleProgress(f"train {name}") as bar:
        summary = train(dataset, model_dir, options=TrainingOptions(network=network, time_budget_minutes=minutes),
                        progress=bar)
    return model_dir, summary, time.perf_counter() - start


def hc18(data: Path, work: Path, minutes: float, network: str) -> dict:
    from SegToolkitLib.methods.deep.dataset import load_dataset
    from SegToolkitLib.methods.deep.inference import predict
    from SegToolkitLib.methods.deep.model_package import load_model

    folder = data / "hc18_fetal_head_ultrasound"
    dataset = load_dataset(folder)
    model_dir, summary, seconds = train_model(dataset, work, "hc18", minutes, network)
    meta = {case["case"]: case for case in json.loads((folder / "dataset.json").read_text())["cases"]}
    model = load_model(model_dir)
    # the model's default (mirroring TTA for 2D models, as nnU-Net) and a single pass
    scores = {"default": ([], []), "single_pass": ([], [])}
    for name in summary["validation_cases"]:  # fold 0: never used for gradient steps
        case = next(c for c in dataset.cases if c.name == name)
        image = sitk.ReadImage(str(case.images[0]))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label))) > 0
        for mode, (dices, errors) in scores.items():
            result = predict(model, image, largest_component=True, tta=None if mode == "default" else False)
            mask = sitk.GetArrayFromImage(result.label_map.image) == 1
            dices.append(dice(mask, truth))
            hc = ellipse_circumference_mm(mask, image.GetSpacing()[0])
            errors.append(abs(hc - meta[name]["reference_head_circumference_mm"]))
    report = {"dataset": "hc18", "train_minutes": round(seconds / 60, 1), "iterations": summary["iterations"],
              "target_size": model.plan.get("target_size"), "target_spacing": model.plan["target_spacing"],
              "held_out_images": len(summary["validation_cases"]), "target_dice": 0.95}
    for mode, (dices, errors) in scores.items():
        report[mode] = {"dice_mean": round(float(np.mean(dices)), 4), "dice_median": round(float(np.median(dices)), 4),
                        "worst_dice": sorted(round(d, 3) for d in dices)[:3],
                        "hc_abs_error_mm_mean": round(float(np.mean(errors)), 2),
                        "hc_abs_error_mm_median": round(float(np.median(errors)), 2)}
    return report


def sunnybrook(data: Path, work: Path, minutes: float, network: str) -> dict:
    from SegToolkitLib.methods.deep.dataset import Dataset, load_dataset
    from SegToolkitLib.methods.deep.inference import predict
    from SegToolkitLib.methods.deep.model_package import load_model

    folder = data / "sunnybrook_cardiac_lv"
    full = load_dataset(folder)
    meta = {case["case"]: case for case in json.loads((folder / "dataset.json").read_text())["cases"]}
    patients = sorted({meta[c.name]["original_patient_id"] for c in full.cases})
    held_out = patients[-1]
    training = Dataset(full.root, [c for c in full.cases if meta[c.name]["original_patient_id"] != held_out],
                       full.labels, full.channels, full.modality, full.ignore_label, full.dimension)
    model_dir, summary, seconds = train_model(training, work, "sunnybrook", minutes, network)
    model = load_model(model_dir)
    scores: dict[str, list[float]] = {"blood_pool": [], "myocardium": []}
    for case in [c for c in full.cases if meta[c.name]["original_patient_id"] == held_out]:
        image = sitk.ReadImage(str(case.images[0]))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
        predicted = sitk.GetArrayFromImage(predict(model, image).label_map.image)
        for value, key in ((1, "blood_pool"), (2, "myocardium")):
            slices = meta[case.name]["annotated_slices_0_based"].get(str(value), [])
            if slices:
                scores[key].append(dice(predicted[slices] == value, truth[slices] == value))
    return {"dataset": "sunnybrook", "held_out_patient": held_out, "train_minutes": round(seconds / 60, 1),
            "iterations": summary["iterations"], "blood_pool_dice": float(np.mean(scores["blood_pool"])),
            "myocardium_dice": float(np.mean(scores["myocardium"])) if scores["myocardium"] else None,
            "target_blood_pool": 0.88}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", default="all", choices=("hc18", "sunnybrook", "all"))
    parser.add_argument("--time-budget", type=float, default=15.0, help="training minutes per dataset")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--network", default="dynunet")
    parser.add_argument("--work", type=Path, help="folder for the trained models (default: a temporary one)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    data = require_shared_data()
    work = args.work or Path(tempfile.mkdtemp(prefix="segtoolkit_deep_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    runs = {"hc18": hc18, "sunnybrook": sunnybrook}
    for name in (["hc18", "sunnybrook"] if args.which == "all" else [args.which]):
        result = runs[name](data, work, args.time_budget, args.network)
        result["threads"] = args.threads
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
