"""Demo step of the deep engine: a tiny 2D U-Net trained in seconds on other phantom subjects (coarse grid, liver
and spleen), then applied to the demo phantom."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ...progress import ProgressCallback, report, scaled
from ...samples.phantom import Phantom, make_phantom

TRAINING_SUBJECTS = (1, 2, 3)
ORGANS = {1: "liver", 2: "spleen"}
COARSE_SHAPE, COARSE_SPACING = (64, 56, 24), (3.0, 3.0, 6.0)
TRAINING_SECONDS = 8.0


def demo_step(phantom: Phantom, progress: ProgressCallback | None) -> list:
    """Train on phantom subjects 1-3 for a few seconds and segment liver and spleen of ``phantom``."""
    import torch

    from ...samples.demo_result import DemoResult
    from .dataset import load_dataset
    from .inference import predict
    from .planning import plan_dataset
    from .training import TrainingOptions, train

    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny network: one thread is faster than two contending ones
    try:
        with tempfile.TemporaryDirectory(prefix="segtoolkit_deep_demo_") as tmp:
            folder = _write_training_set(Path(tmp) / "data")
            dataset = load_dataset(folder)
            plan = plan_dataset(dataset, configuration="2d")
            plan["network"]["filters"] = [min(8 * 2 ** i, 64) for i in range(len(plan["network"]["filters"]))]
            plan["training"].update({"learning_rate": 0.01, "iterations_per_epoch": 40, "validation_patches": 8})
            plan["batch_size"] = 4
            report(progress, 0.1, "training a tiny U-Net")
            train(dataset, Path(tmp) / "model", plan, TrainingOptions(time_budget_minutes=TRAINING_SECONDS / 60,
                                                                      seed=0), progress=scaled(progress, 0.1, 0.8))
            result = predict(Path(tmp) / "model", phantom.image, largest_component=True, backend="torch-bf16",
                             progress=scaled(progress, 0.8, 1.0))
    finally:
        torch.set_num_threads(threads)
    return [DemoResult("deep 2D U-Net", result.label_map, time.perf_counter() - start)]


def _write_training_set(folder: Path, shape=COARSE_SHAPE, spacing=COARSE_SPACING) -> Path:
    """Phantom subjects (by default on a coarse grid) with only liver and spleen labelled, as a dataset folder."""
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for subject in TRAINING_SUBJECTS:
        sample = make_phantom(subject=subject, noise_seed=subject, shape=shape, spacing=spacing)
        labels = sitk.GetArrayFromImage(sample.labels.image)
        kept = np.where(np.isin(labels, list(ORGANS)), labels, 0).astype(np.uint8)
        label_image = sitk.GetImageFromArray(kept)
        label_image.CopyInformation(sample.labels.image)
        sitk.WriteImage(sample.image, str(folder / "images" / f"subject{subject}.nii.gz"))
        sitk.WriteImage(label_image, str(folder / "labels" / f"subject{subject}.nii.gz"))
    meta = {"modality": "CT", "labels": {"0": "background", **{str(k): v for k, v in ORGANS.items()}}}
    (folder / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder
