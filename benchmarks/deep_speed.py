"""Speed and memory of ``predict`` against bare MONAI (run by hand; minutes on 2 CPU cores).

1. Trains a small 3D model for ``--train-seconds`` (default 14 minutes, about 260 steps on a quiet machine) on
   phantom subjects 1-3 on the benchmark's grid (liver and spleen; a converged model is needed for a meaningful
   agreement figure), into ``--work DIR``/model; a later run with the same ``--work`` reuses it.
2. On phantom subject 0 at ``--shape`` (default 256x256x160, 1.5x1.5x3 mm): our whole predict (read, resample,
   sliding window, resample back, write) with the automatic backend, versus bare MONAI ``sliding_window_inference``
   with the same network in eager fp32 on the already preprocessed array (same window, overlap 0.5, Gaussian
   blending; its labels mapped back onto the input grid as predict does, not timed), timed interleaved (ours,
   MONAI, ours, MONAI; the ratio is best against best; the load average is printed). Prints the time ratio and the
   Dice of our labels against our fp32 (backend torch) labels, against MONAI's fp32 argmax with the model's default
   clean-up (largest component, hole filling: part of our predict) and without it (``_raw``), and against the
   phantom's truth. ``--no-crop`` predicts the whole volume instead of the CT content box. A model trained before
   int8 networks existed gets one first (as ``segtoolkit quantize``, calibrated on WORK/data).
3. Peak memory (the max RSS a child process reports for itself) of predict on a 512x512x300 CT volume.

Goal: ratio >= 3, Dice vs fp32 >= 0.995, peak memory < 4 GB.
Usage: python benchmarks/deep_speed.py [--shape X Y Z] [--work DIR] [--train-seconds S | --model DIR] [--no-crop]
       [--threads N] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SPACING = (1.5, 1.5, 3.0)  # the phantom's spacing (the plan may choose a coarser working grid)
TRAIN_SHAPE = (256, 256, 160)  # the benchmark volume's grid: air around the body, body beyond the organs
MEMORY_CHILD = """
import resource, sys, SimpleITK as sitk, numpy as np
from SegToolkitLib.methods.deep.inference import predict
noise = np.random.default_rng(0).standard_normal((300, 512, 512), dtype=np.float32)
image = sitk.GetImageFromArray((noise * 30 + 40).astype(np.int16))
del noise
image.SetSpacing((0.8, 0.8, 1.5))
predict(sys.argv[1], image)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def train_model(work: Path, seconds: float) -> Path:
    """Train the benchmark's model into ``work/model`` (its training set goes to ``work/data``)."""
    from SegToolkitLib.methods.deep.dataset import load_dataset
    from SegToolkitLib.methods.deep.demo import _write_training_set
    from SegToolkitLib.methods.deep.planning import plan_dataset
    from SegToolkitLib.methods.deep.training import TrainingOptions, train

    shutil.rmtree(work / "data", ignore_errors=True)
    folder = _write_training_set(work / "data", shape=TRAIN_SHAPE, spacing=SPACING)
    dataset = load_dataset(folder)
    plan = plan_dataset(dataset, configuration="3d")
    train(dataset, work / "model", plan, TrainingOptions(time_budget_minutes=seconds / 60))
    return work / "model"


def add_int8_network(model_dir: Path, data: Path) -> None:
    """Quantize a model trained before int8 networks existed (training adds one now), as ``segtoolkit quantize``."""
    from SegToolkitLib.methods.deep.calibration import quantize_folder
    from SegToolkitLib.methods.deep.model_package import read_model_json
    from SegToolkitLib.methods.deep.quantization import describe, quantization_available

    if "int8" not in read_model_json(model_dir) and quantization_available() and data.is_dir():
        print(describe(quantize_folder(model_dir, data)), flush=True)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    values = [v for v in np.union1d(np.unique(a), np.unique(b)) if v > 0]
    scores = [2 * ((a == v) & (b == v)).sum() / max(1, (a == v).sum() + (b == v).sum()) for v in values]
    return float(np.mean(scores)) if scores else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 160))
    parser.add_argument("--train-seconds", type=float, default=840.0)
    parser.add_argument("--work", type=Path, help="working folder, kept: reuses WORK/model when it exists")
    parser.add_argument("--model", type=Path, help="use this trained model folder instead of training one")
    parser.add_argument("--no-crop", action="store_true", help="predict the whole volume (no CT content crop)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    import torch

    from SegToolkitLib.methods.deep.model_package import load_model
    from SegToolkitLib.samples.phantom import make_phantom

    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="segtoolkit_deep_speed_"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = args.model or work / "model"
    if args.model is None and not (model_dir / "model.json").is_file():
        train_model(work, args.train_seconds)
    add_int8_network(model_dir, work / "data")
    model = load_model(model_dir)
    if args.no_crop:
        model.plan.setdefault("inference", {})["crop_to_content"] = False
    training = model.meta.get("training", {})
    quality = {"model": str(model_dir), "training_iterations": training.get("iterations"),
               "training_seconds": training.get("seconds"),
               "model_validation_dice": [round(d, 3) for d in training.get("validation_dice_per_class", [])],
               "int8": {key: model.meta.get("int8", {}).get(key) for key in ("accepted", "agreement_dice")}}
    print(json.dumps(quality), flush=True)
    phantom = make_phantom(0, shape=args.shape, spacing=SPACING)
    volume = work / "volume.nii.gz"
    sitk.WriteImage(phantom.image, str(volume))
    truth = sitk.GetArrayFromImage(phantom.labels.image)
    truth = np.where(np.isin(truth, model.class_values), truth, 0)
    report = {"shape": list(args.shape), "threads": args.threads, "patch": model.plan["patch_size"],
              "crop_to_content": not args.no_crop, **quality, **compare(model, volume, work, truth)}
    if not args.skip_memory:
        # the child's own peak (kilobytes): RUSAGE_CHILDREN also counts processes started by training and quantizing
        child = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(model_dir)], check=True, capture_output=True,
                               text=True)
        report["peak_memory_gb_512x512x300"] = round(int(child.stdout.split()[-1]) / 1e6, 2)
    print(json.dumps(report))


def on_input_grid(probabilities: np.ndarray, grid: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """Class probabilities on the working grid resampled (linear) onto the input grid, as predict does."""
    resampled = []
    for values in probabilities:
        image = sitk.GetImageFromArray(values)
        image.CopyInformation(grid)
        resampled.append(sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear,
                                                              0.0, sitk.sitkFloat32)))
    return np.stack(resampled)


def compare(model, volume: Path, work: Path, truth: np.ndarray) -> dict:
    """Ours (auto backend) and bare MONAI timed interleaved, then the agreement of the labels."""
    import torch
    from monai.inferers import sliding_window_inference

    from SegToolkitLib.io import LabelMap, read_image, write_label_map
    from SegToolkitLib.methods.deep.inference import postprocess, predict
    from SegToolkitLib.methods.deep.preprocessing import preprocess_images

    backends = []

    def ours(backend: str) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        result = predict(model, read_image(volume), backend=backend)
        write_label_map(result.label_map, work / f"ours_{backend}.nii.gz")
        backends.append(result.backend)
        return sitk.GetArrayFromImage(result.label_map.image), time.perf_counter() - start

    def monai() -> tuple[np.ndarray, LabelMap, float]:
        reference = read_image(volume)
        array, grid = preprocess_images([reference], model.plan)
        roi = list(reversed(model.plan["patch_size"]))
        start = time.perf_counter()  # the peer's reading, preprocessing and mapping back are not counted
        with torch.inference_mode():
            logits = sliding_window_inference(torch.from_numpy(array)[None], roi, 1, model.network, overlap=0.5,
                                              mode="gaussian")
        seconds = time.perf_counter() - start
        probabilities = torch.softmax(logits[0], 0).numpy()
        labels = np.asarray(model.class_values, np.uint8)[on_input_grid(probabilities, grid, reference).argmax(0)]
        image = sitk.GetImageFromArray(labels)
        image.CopyInformation(reference)
        return labels, postprocess(LabelMap(image, model.labels), model, None, None), seconds

    _, first_seconds = ours("auto")  # the first run may convert the network for OpenVINO (cached for later runs)
    print(json.dumps({"load": os.getloadavg(), "ours_first_run_seconds": round(first_seconds, 2)}), flush=True)
    auto, ours_a = ours("auto")
    print(json.dumps({"load": os.getloadavg(), "ours_seconds": round(ours_a, 2)}), flush=True)
    peer_raw, peer, monai_seconds = monai()
    peer = sitk.GetArrayFromImage(peer.image)
    print(json.dumps({"load": os.getloadavg(), "monai_fp32_seconds": round(monai_seconds, 2)}), flush=True)
    _, ours_b = ours("auto")
    print(json.dumps({"load": os.getloadavg(), "ours_seconds": round(ours_b, 2)}), flush=True)
    *_, monai_again = monai()
    fp32, _ = ours("torch")
    return {"load": os.getloadavg(), "ours_first_run_seconds": round(first_seconds, 2),
            "ours_seconds": [round(ours_a, 2), round(ours_b, 2)],
            "monai_fp32_seconds": [round(monai_seconds, 2), round(monai_again, 2)],
            "speedup": round(min(monai_seconds, monai_again) / min(ours_a, ours_b), 2), "auto_backend": backends[1],
            "dice_auto_vs_fp32": round(dice(auto, fp32), 4), "dice_auto_vs_monai_fp32": round(dice(auto, peer), 4),
            "dice_fp32_vs_monai_fp32": round(dice(fp32, peer), 4),
            "dice_auto_vs_monai_fp32_raw": round(dice(auto, peer_raw), 4),
            "dice_auto_vs_truth": round(dice(auto, truth), 4), "dice_monai_fp32_vs_truth": round(dice(peer, truth), 4),
            "goal": "speedup >= 3, dice >= 0.995"}


if __name__ == "__main__":
    main()
