"""Speed and memory of ``predict`` against bare MONAI (run by hand; minutes on 2 CPU cores).

1. Trains a small 3D model for ``--train-seconds`` on coarse phantom subjects (a trained model is needed for a
   meaningful agreement figure).
2. On the phantom at ``--shape`` (default 256x256x160, 1.5x1.5x3 mm): our whole predict (read, resample, sliding window,
   resample back, write) with the automatic backend, versus bare MONAI ``sliding_window_inference`` with the same
   network in eager fp32 on the already preprocessed array (same window, overlap 0.5, Gaussian blending), timed
   interleaved (ours, MONAI, ours; the load average is printed). Prints the time ratio and the Dice of our labels
   against our fp32 (backend torch) labels and against MONAI's fp32 argmax.
3. Peak memory (max RSS of a child process) of predict on a 512x512x300 CT volume.

Goal: ratio >= 3, Dice vs fp32 >= 0.995, peak memory < 4 GB.
Usage: python benchmarks/deep_speed.py [--shape X Y Z] [--train-seconds S | --model DIR] [--threads N] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SPACING = (1.5, 1.5, 3.0)  # the phantom's own spacing: the model sees the volume without resampling
MEMORY_CHILD = """
import sys, SimpleITK as sitk, numpy as np
from SegToolkitLib.methods.deep.inference import predict
noise = np.random.default_rng(0).standard_normal((300, 512, 512), dtype=np.float32)
image = sitk.GetImageFromArray((noise * 30 + 40).astype(np.int16))
del noise
image.SetSpacing((0.8, 0.8, 1.5))
predict(sys.argv[1], image)
"""


def train_model(work: Path, seconds: float) -> Path:
    """Train the benchmark's model into ``work/model`` (its training set goes to ``work/data``)."""
    from SegToolkitLib.methods.deep.dataset import load_dataset
    from SegToolkitLib.methods.deep.demo import _write_training_set
    from SegToolkitLib.methods.deep.planning import plan_dataset
    from SegToolkitLib.methods.deep.training import TrainingOptions, train

    shutil.rmtree(work / "data", ignore_errors=True)
    folder = _write_training_set(work / "data", shape=(128, 112, 48), spacing=SPACING)
    dataset = load_dataset(folder)
    plan = plan_dataset(dataset, configuration="3d")
    train(dataset, work / "model", plan, TrainingOptions(time_budget_minutes=seconds / 60))
    return work / "model"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    values = [v for v in np.union1d(np.unique(a), np.unique(b)) if v > 0]
    scores = [2 * ((a == v) & (b == v)).sum() / max(1, (a == v).sum() + (b == v).sum()) for v in values]
    return float(np.mean(scores)) if scores else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 160))
    parser.add_argument("--train-seconds", type=float, default=120.0)
    parser.add_argument("--model", type=Path, help="use this trained model folder instead of training one")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    import torch
    from monai.inferers import sliding_window_inference

    from SegToolkitLib.io import read_image, write_label_map
    from SegToolkitLib.methods.deep.inference import predict
    from SegToolkitLib.methods.deep.model_package import load_model
    from SegToolkitLib.methods.deep.preprocessing import preprocess_images
    from SegToolkitLib.samples.phantom import make_phantom

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="segtoolkit_deep_speed_"))
    model_dir = args.model or train_model(work, args.train_seconds)
    model = load_model(model_dir)
    phantom = make_phantom(0, shape=args.shape, spacing=SPACING)
    volume = work / "volume.nii.gz"
    sitk.WriteImage(phantom.image, str(volume))

    backends = []

    def ours(backend: str) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        result = predict(model, read_image(volume), backend=backend)
        write_label_map(result.label_map, work / f"ours_{backend}.nii.gz")
        backends.append(result.backend)
        return sitk.GetArrayFromImage(result.label_map.image), time.perf_counter() - start

    def monai() -> tuple[np.ndarray, float]:
        array, _ = preprocess_images([read_image(volume)], model.plan)
        roi = list(reversed(model.plan["patch_size"]))
        start = time.perf_counter()  # the peer's reading and preprocessing are not counted
        with torch.inference_mode():
            logits = sliding_window_inference(torch.from_numpy(array)[None], roi, 1, model.network, overlap=0.5,
                                              mode="gaussian")
        seconds = time.perf_counter() - start
        return np.asarray(model.class_values)[logits[0].argmax(0).numpy()], seconds

    _, first_seconds = ours("auto")  # the first run may convert the network for OpenVINO (cached for later runs)
    print(json.dumps({"load": os.getloadavg(), "ours_first_run_seconds": round(first_seconds, 2)}), flush=True)
    auto, ours_a = ours("auto")
    print(json.dumps({"load": os.getloadavg(), "ours_seconds": round(ours_a, 2)}), flush=True)
    peer, monai_seconds = monai()
    print(json.dumps({"load": os.getloadavg(), "monai_fp32_seconds": round(monai_seconds, 2)}), flush=True)
    _, ours_b = ours("auto")
    ours_seconds = min(ours_a, ours_b)
    fp32, _ = ours("torch")
    report = {"shape": list(args.shape), "threads": args.threads, "patch": model.plan["patch_size"],
              "load": os.getloadavg(), "ours_first_run_seconds": round(first_seconds, 2),
              "ours_seconds": [round(ours_a, 2), round(ours_b, 2)], "monai_fp32_seconds": round(monai_seconds, 2),
              "speedup": round(monai_seconds / ours_seconds, 2), "dice_auto_vs_fp32": round(dice(auto, fp32), 4),
              "dice_auto_vs_monai_fp32": round(dice(auto, peer), 4),
              "dice_fp32_vs_monai_fp32": round(dice(fp32, peer), 4),
              "auto_backend": backends[1], "goal": "speedup >= 3, dice >= 0.995"}
    if not args.skip_memory:
        subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(model_dir)], check=True)
        report["peak_memory_gb_512x512x300"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6, 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
