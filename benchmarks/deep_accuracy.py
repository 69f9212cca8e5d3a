"""Accuracy of the deep engine on real data (run by hand; takes 15+ minutes per dataset on 2 CPU cores).

* HC18 fetal head (2D ultrasound): a 2D model trained with a time budget (default 15 min) on 4/5 of the public
  images, scored on the held-out fifth: Dice and head-circumference error (mm: ``measure``'s fitted-ellipse
  circumference of the predicted head against the challenge's reference). Targets: Dice mean >= 0.965, no image
  below 0.80, HC error median <= 2 mm. The public masks were filled *including* the sonographer's drawn outline,
  whose centre line defines the official HC, so they (and a model that learns them) read about 1.2 mm long: the
  offset of the masks' outline from that centre line, in pixels of radius, is measured on the training images
  (mask ellipse against their official HC) and the HC error is also reported with the predicted outline moved onto
  the line's centre by that offset ("line_centre").
* Sunnybrook LV (cine MRI, thick slices): trained on 3 patients, scored on the held-out patient (both phases) on
  the annotated slices only: blood pool (target >= 0.92) and myocardium (ED only, target >= 0.80).

Every run prints the CPU (and its AMX flags), the load average before and after training, the training steps and
the wall time, so numbers can be attributed to a machine and to how busy it was.

Usage: python benchmarks/deep_accuracy.py [hc18|sunnybrook|all] [--time-budget MIN] [--threads N] [--work DIR]
       [--folds 0,1,2,3,4]  (HC18: five models, every public image scored by the one that never saw it)
(a finished model already in --work is scored again without retraining)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from _common import cpu_model_and_amx, require_shared_data


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def measured_ellipse_mm(label_map) -> tuple[float, float, float]:
    """``measure``'s fitted ellipse of label 1: circumference and semi-axes (zeros when the prediction is empty)."""
    from SegToolkitLib.measurement.shape import measure

    rows = [row for row in measure(label_map, labels=[1]).rows() if row["label"] == 1]
    if not rows or not rows[0]["ellipse_circumference_mm"]:
        return 0.0, 0.0, 0.0
    return (float(rows[0]["ellipse_circumference_mm"]), float(rows[0]["ellipse_semi_major_mm"]),
            float(rows[0]["ellipse_semi_minor_mm"]))


def outline_offset_px(dataset, names: list[str], meta: dict) -> float:
    """Median over the ``names`` (training images) of how far the reference mask's ellipse lies outside the
    official HC ellipse, in pixels of radius (the drawn line the masks include)."""
    from SegToolkitLib.io.label_map import LabelMap
    from SegToolkitLib.io.labels import LabelTable

    offsets, training = [], set(names)
    for case in (c for c in dataset.cases if c.name in training):
        label = sitk.ReadImage(str(case.label))
        circumference, _, _ = measured_ellipse_mm(LabelMap(label, LabelTable()))
        official = meta[case.name]["reference_head_circumference_mm"]
        offsets.append((circumference - official) / (2 * np.pi * label.GetSpacing()[0]))
    return float(np.median(offsets))


def on_line_centre_mm(semi_major: float, semi_minor: float, offset_mm: float) -> float:
    """The circumference of the ellipse moved inwards by ``offset_mm`` (both semi-axes)."""
    from SegToolkitLib.measurement.shape import ellipse_circumference

    if semi_minor <= offset_mm:
        return 0.0
    return ellipse_circumference(semi_major - offset_mm, semi_minor - offset_mm)


def hc_error_summary(signed_errors: list[float], suffix: str) -> dict:
    """Median and mean absolute HC error and the signed mean (mm)."""
    errors = np.asarray(signed_errors, dtype=float)
    return {f"hc_abs_error_mm_median{suffix}": round(float(np.median(np.abs(errors))), 2),
            f"hc_abs_error_mm_mean{suffix}": round(float(np.mean(np.abs(errors))), 2),
            f"hc_signed_error_mm_mean{suffix}": round(float(np.mean(errors)), 2)}


def machine() -> dict:
    """The CPU model, its AMX flags and the load average (numbers depend on all three)."""
    import os

    model, amx = cpu_model_and_amx()
    return {"cpu": model, "amx": amx, "load_average": [round(v, 2) for v in os.getloadavg()]}


def train_model(dataset, work: Path, name: str, minutes: float, network: str, fold: int = 0
                ) -> tuple[Path, dict, float]:
    """Train ``work/name`` with the time budget, or reuse the finished model there (the scoring is then redone)."""
    from SegToolkitLib.methods.deep.training import TrainingOptions, train
    from SegToolkitLib.progress import ConsoleProgress

    model_dir = work / name
    if (model_dir / "model.json").is_file():
        summary = json.loads((model_dir / "model.json").read_text())["training"]
        print(f"{name}: scoring the finished model in {model_dir} ({summary['iterations']} steps)", flush=True)
        return model_dir, summary, summary["seconds"]
    print(f"{name}: training starts, {json.dumps(machine())}", flush=True)
    start = time.perf_counter()
    with ConsoleProgress(f"train {name}") as bar:
        summary = train(dataset, model_dir, options=TrainingOptions(network=network, time_budget_minutes=minutes,
                                                               fold=fold),
                        progress=bar)
    seconds = time.perf_counter() - start
    print(f"{name}: training took {seconds:.0f} s wall, {summary['iterations']} steps, load average after "
          f"{machine()['load_average']}", flush=True)
    return model_dir, summary, seconds


def hc18(data: Path, work: Path, minutes: float, network: str, folds: list[int] | None = None) -> dict:
    """Train and score each fold (default fold 0 only); with several folds the held-out images of all of them are
    also pooled, so that with all five every public image is scored by a model that never trained on it."""
    from SegToolkitLib.methods.deep.dataset import load_dataset

    folder = data / "hc18_fetal_head_ultrasound"
    dataset = load_dataset(folder)
    meta = {case["case"]: case for case in json.loads((folder / "dataset.json").read_text())["cases"]}
    pooled: dict[str, tuple[list, list, list]] = {"default": ([], [], []), "single_pass": ([], [], [])}
    per_image: dict[str, tuple[float, float]] = {}
    report: dict = {"dataset": "hc18", "targets": {"dice_mean": 0.965, "dice_min": 0.80, "hc_abs_error_mm_median": 2.0},
                    "folds": {}}
    for fold in folds or [0]:
        name = "hc18" if fold == 0 else f"hc18_fold{fold}"
        model_dir, summary, seconds = train_model(dataset, work, name, minutes, network, fold)
        scores, fold_report = score_hc18_model(dataset, meta, model_dir, summary, per_image)
        fold_report["train_minutes"] = round(seconds / 60, 1)
        report["folds"][fold] = fold_report
        for mode, lists in scores.items():
            for pooled_list, fold_list in zip(pooled[mode], lists):
                pooled_list.extend(fold_list)
        print(f"{name}: {json.dumps(fold_report)}", flush=True)
    report["held_out_images"] = len(per_image)
    for mode, lists in pooled.items():
        report[mode] = hc18_summary(*lists)
    # the images that cost the most (Dice, signed HC error in mm), for the outlier list in RESULTS.md
    report["worst_images"] = dict(sorted(per_image.items(), key=lambda item: item[1][0])[:5])
    return report


def score_hc18_model(dataset, meta: dict, model_dir: Path, summary: dict, per_image: dict) -> tuple[dict, dict]:
    """Dice and HC errors (raw and on the drawn line's centre) of one fold's model on its held-out images, with
    the model's default (mirroring TTA for 2D models, as nnU-Net) and a single pass."""
    from SegToolkitLib.methods.deep.inference import predict
    from SegToolkitLib.methods.deep.model_package import load_model

    model = load_model(model_dir)
    offset_px = outline_offset_px(dataset, summary["train_cases"], meta)
    scores: dict[str, tuple[list, list, list]] = {"default": ([], [], []), "single_pass": ([], [], [])}
    for name in summary["validation_cases"]:  # the fold's held-out images: never used for gradient steps
        case = next(c for c in dataset.cases if c.name == name)
        image = sitk.ReadImage(str(case.images[0]))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label))) > 0
        official = meta[name]["reference_head_circumference_mm"]
        for mode, (dices, errors, centred) in scores.items():
            result = predict(model, image, largest_component=True, tta=None if mode == "default" else False)
            mask = sitk.GetArrayFromImage(result.label_map.image) == 1
            dices.append(dice(mask, truth))
            circumference, semi_major, semi_minor = measured_ellipse_mm(result.label_map)
            errors.append(circumference - official)
            centred.append(on_line_centre_mm(semi_major, semi_minor, offset_px * image.GetSpacing()[0]) - official)
            if mode == "default":
                per_image[name] = (round(dices[-1], 3), round(errors[-1], 1))
    fold_report = {"iterations": summary["iterations"], "target_size": model.plan.get("target_size"),
                   "target_spacing": model.plan["target_spacing"], "held_out_images": len(summary["validation_cases"]),
                   "masks_outline_offset_px": round(offset_px, 3)}
    fold_report.update({mode: hc18_summary(*lists) for mode, lists in scores.items()})
    return scores, fold_report


def hc18_summary(dices: list[float], errors: list[float], centred: list[float]) -> dict:
    """Dice and HC error summary of a list of held-out images."""
    return {"dice_mean": round(float(np.mean(dices)), 4), "dice_median": round(float(np.median(dices)), 4),
            "worst_dice": sorted(round(d, 3) for d in dices)[:3], "images_below_0.80": sum(d < 0.80 for d in dices),
            **hc_error_summary(errors, ""), **hc_error_summary(centred, "_line_centre")}


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
            "targets": {"blood_pool": 0.92, "myocardium": 0.80}}


def fold_list(text: str) -> list[int]:
    """``--folds``: comma-separated folds of five (0-4)."""
    try:
        folds = [int(part) for part in text.split(",")]
    except ValueError:
        folds = []
    if not folds or any(not 0 <= fold <= 4 for fold in folds):
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated folds between 0 and 4, e.g. 0,1,2,3,4")
    return folds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", default="all", choices=("hc18", "sunnybrook", "all"))
    parser.add_argument("--time-budget", type=float, default=15.0, help="training minutes per dataset")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--network", default="dynunet")
    parser.add_argument("--work", type=Path, help="folder for the trained models (default: a temporary one)")
    parser.add_argument("--folds", type=fold_list, default=[0],
                        help="HC18: comma-separated folds of five to train and score (default 0; 0,1,2,3,4 scores "
                             "every public image with a model that never trained on it)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    data = require_shared_data()
    work = args.work or Path(tempfile.mkdtemp(prefix="segtoolkit_deep_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    runs = {"hc18": hc18, "sunnybrook": sunnybrook}
    for name in (["hc18", "sunnybrook"] if args.which == "all" else [args.which]):
        extra = {"folds": args.folds} if name == "hc18" else {}
        result = runs[name](data, work, args.time_budget, args.network, **extra)
        result["threads"] = args.threads
        result["machine"] = machine()
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
