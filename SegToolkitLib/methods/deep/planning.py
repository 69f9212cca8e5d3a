"""Self-configuration: a dataset fingerprint and the training plan derived from it (nnU-Net's rules, CPU-first).

The plan is a JSON document a user can read and edit. Every per-axis list in it is in image axis order
``x, y(, z)`` (as spacing is given in NIfTI/ITK), whatever the internal array order.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ...errors import InputError
from ...io import write_text_atomic
from ...io.json_files import interpreting, read_json, require
from ...progress import CancelToken, ProgressCallback, report
from .dataset import Dataset

PLAN_FORMAT = "segtoolkit-plan"
PLAN_VERSION = 1
ANISOTROPY_RATIO = 3.0
# Patch voxel caps per device and configuration; CPU patches are kept small so training steps take about a second.
PATCH_VOXELS = {("cpu", "2d"): 160 * 160, ("cpu", "3d"): 80 ** 3, ("cuda", "2d"): 512 * 512, ("cuda", "3d"): 128 ** 3}
BATCH_SIZE = {("cpu", "2d"): 4, ("cpu", "3d"): 2, ("cuda", "2d"): 12, ("cuda", "3d"): 2}
# On CPU an image much larger than the patch is trained at a coarser spacing (like nnU-Net's low-res stage): a 2D
# image is brought down to about one patch (whole-image context is cheap in 2D), a 3D one to at most 8 patches.
CPU_IMAGE_TO_PATCH = {"2d": 1.0, "3d": 8.0}
# ... but never so far that the thinnest annotated structure (median over the cases) becomes thinner than this many
# voxels: a 5-7 mm myocardium at twice the pixel size is two voxels across, and its Dice falls with every voxel of
# boundary error. The patch then covers part of the image (as in 3D) instead of all of it.
MIN_VOXELS_ACROSS = 4.0
MEMORY_BUDGET_GB = {"cpu": 3.0, "cuda": 8.0}
FILTERS = {"cpu": (16, 256), "cuda": (32, 320)}
SAMPLES_PER_CASE = 10000
SCALE_RANGE = (0.7, 1.4)  # nnU-Net's scaling augmentation ...
MIN_SCALE, MAX_SCALE = 0.5, 2.0  # ... widened to the dataset's size spread, within these bounds
# A field of view that follows the object (ultrasound zoomed to the head, screen captures): the physical extent
# varies at least this much between cases (90th/10th percentile) while the voxel counts stay within this ratio.
# Such images are resampled to a common size instead of a common spacing, so the object keeps its size in voxels.
ZOOMED_EXTENT_RATIO = 2.0
ZOOMED_SIZE_RATIO = 1.15


def fingerprint(dataset: Dataset, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> dict:
    """Spacings, sizes and foreground intensity statistics of every channel over the whole dataset."""
    rng = np.random.default_rng(0)
    spacings, sizes, samples = [], [], [[] for _ in dataset.channels]
    thickness: dict[int, list[float]] = {}
    thickness_mm: dict[int, list[float]] = {}
    for index, case in enumerate(dataset.cases):
        report(progress, index / len(dataset.cases), f"fingerprint {case.name}", cancel)
        images, labels = dataset.load_case(case)
        spacings.append(list(images[0].GetSpacing()))
        sizes.append(list(images[0].GetSize()))
        finest = min(images[0].GetSpacing()[:2])
        for value, voxels in structure_thickness_voxels(labels, images[0].GetSpacing(), dataset.ignore_label).items():
            thickness.setdefault(value, []).append(voxels)
            thickness_mm.setdefault(value, []).append(voxels * finest)
        foreground = (labels > 0) & (labels != dataset.ignore_label)
        for channel, image in enumerate(images):
            values = sitk.GetArrayViewFromImage(image)[foreground]
            if values.size > SAMPLES_PER_CASE:
                values = rng.choice(values, SAMPLES_PER_CASE, replace=False)
            samples[channel].append(np.asarray(values, dtype=np.float64))
    report(progress, 1.0, "fingerprint done", cancel)
    stats = []
    for channel, parts in enumerate(samples):
        values = np.concatenate(parts) if parts else np.zeros(0)
        if values.size == 0:
            raise InputError(f"{dataset.root}: no foreground voxels in any label map; the dataset needs annotated "
                             "structures to train on")
        stats.append({"channel": dataset.channels[channel], "mean": float(values.mean()),
                      "std": float(values.std()), "percentile_00_5": float(np.percentile(values, 0.5)),
                      "percentile_99_5": float(np.percentile(values, 99.5))})
    return {"cases": len(dataset.cases), "spacings_xyz": spacings, "sizes_xyz": sizes,
            "median_spacing_xyz": np.median(spacings, axis=0).tolist(),
            "median_size_xyz": np.median(sizes, axis=0).tolist(), "foreground_intensity": stats,
            "structure_thickness_voxels": {str(value): round(float(np.median(values)), 2)
                                           for value, values in sorted(thickness.items())},
            "structure_size_spread": {"voxels": size_spread(thickness), "mm": size_spread(thickness_mm)}}


def size_spread(thickness: dict[int, list[float]]) -> dict[str, list[float]]:
    """Per label, the 5th and 95th percentiles of its per-case thickness over the median: how much smaller and
    larger than usual the structure comes in this dataset."""
    spread = {}
    for value, values in sorted(thickness.items()):
        median = float(np.median(values))
        if median > 0:
            low, high = np.percentile(values, [5, 95]) / median
            spread[str(value)] = [round(float(low), 3), round(float(high), 3)]
    return spread


def structure_thickness_voxels(labels: np.ndarray, spacing_xyz, ignore_label: int) -> dict[int, float]:
    """In-plane thickness of each label in voxels of the finest in-plane spacing: twice the area over the perimeter
    on every slice that holds it (a ring's width, a disc's radius), median over those slices. The perimeter counts
    voxel edges, which overestimates oblique outlines, so the thickness errs on the thin side."""
    from scipy import ndimage

    volume = labels if labels.ndim == 3 else labels[None]
    spacing_x, spacing_y = float(spacing_xyz[0]), float(spacing_xyz[1])
    finest = min(spacing_x, spacing_y)
    result = {}
    for value, box in enumerate(ndimage.find_objects(np.where(volume == ignore_label, 0, volume)), start=1):
        if box is None:
            continue
        mask = np.pad(volume[box] == value, ((0, 0), (1, 1), (1, 1)))
        area = mask.sum(axis=(1, 2)) * spacing_x * spacing_y
        edges = (np.diff(mask, axis=2).sum(axis=(1, 2)) * spacing_y + np.diff(mask, axis=1).sum(axis=(1, 2))
                 * spacing_x)
        present = area > 0
        if present.any():
            result[value] = float(np.median(2 * area[present] / edges[present])) / finest
    return result


def target_spacing(spacings: list[list[float]], sizes: list[list[float]]) -> list[float]:
    """Median spacing; for anisotropic data the coarse axis takes its 10th percentile (nnU-Net's rule), so
    coarse slices are not interpolated into many thin ones."""
    spacings_array = np.asarray(spacings, dtype=float)
    target = np.median(spacings_array, axis=0)
    if target.size < 3:
        return target.tolist()
    median_size = np.median(np.asarray(sizes, dtype=float), axis=0)
    worst = int(np.argmax(target))
    others = [axis for axis in range(target.size) if axis != worst]
    anisotropic_spacing = target[worst] > ANISOTROPY_RATIO * min(target[others])
    anisotropic_voxels = median_size[worst] * ANISOTROPY_RATIO < min(median_size[others])
    if anisotropic_spacing and anisotropic_voxels:
        coarse = float(np.percentile(spacings_array[:, worst], 10))
        if coarse < max(target[others]):
            coarse = max(max(target[others]), coarse) + 1e-5
        target[worst] = coarse
    return target.tolist()


def make_plan(dataset: Dataset, fingerprint_data: dict, device: str = "cpu", configuration: str | None = None,
              memory_budget_gb: float | None = None) -> dict:
    """The training plan for ``dataset`` (see the module docstring for the axis order)."""
    if device not in ("cpu", "cuda"):
        raise InputError(f"device {device!r}: use cpu or cuda")
    spacing = target_spacing(fingerprint_data["spacings_xyz"], fingerprint_data["sizes_xyz"])
    median_size = fingerprint_data["median_size_xyz"]
    median_spacing = fingerprint_data["median_spacing_xyz"]
    if configuration is None:
        configuration = choose_configuration(dataset.dimension, spacing)
    if configuration not in ("2d", "3d"):
        raise InputError(f"configuration {configuration!r}: use 2d or 3d")
    if configuration == "3d" and dataset.dimension == 2:
        raise InputError(f"{dataset.root}: 2D images cannot use the 3d configuration")
    axes = 2 if configuration == "2d" else 3
    zoomed = field_of_view_follows_object(fingerprint_data["spacings_xyz"], fingerprint_data["sizes_xyz"], axes)
    # Resampled to a common size, every image gets (about) the median spacing: that spacing shapes the network.
    spacing = list(median_spacing[:axes]) if zoomed else spacing[:axes]
    shape = [median_size[axis] * median_spacing[axis] / spacing[axis] for axis in range(axes)]
    cap = PATCH_VOXELS[(device, configuration)]
    ratio = CPU_IMAGE_TO_PATCH[configuration]
    if device == "cpu" and math.prod(shape) > ratio * cap:
        factor = (math.prod(shape) / (ratio * cap)) ** (1 / axes)
        if configuration == "2d":
            factor = min(factor, max(1.0, thinnest_structure(fingerprint_data) / MIN_VOXELS_ACROSS))
        spacing = [value * factor for value in spacing]
        shape = [value / factor for value in shape]
    budget = check_memory_budget(memory_budget_gb, device)
    batch = BATCH_SIZE[(device, configuration)]
    patch, kernels, strides, filters = fit_patch(shape, spacing, cap, batch, budget, FILTERS[device])
    needed = training_memory_bytes(patch, batch, strides, filters) / 1e9
    if needed > budget:
        raise InputError(f"--memory-gb {budget:g}: too small; the smallest network for this dataset needs about "
                         f"{needed:.2g} GB to train; give at least {math.ceil(needed * 100) / 100:g}")
    full_spacing = list(spacing) + ([] if axes == len(median_spacing) else [None])
    target_size = [max(1, round(value)) for value in shape] + [None] * (len(median_spacing) - axes) if zoomed else None
    return {
        "format": PLAN_FORMAT, "version": PLAN_VERSION, "dataset": dataset.root.name,
        "note": "per-axis lists are in image axis order x, y(, z); null spacing = keep the image's own; "
                "target_size (voxels), where set, overrides target_spacing: used when the field of view follows "
                "the object, so every image is resampled to one size",
        "configuration": configuration, "dimension": dataset.dimension, "device": device,
        "channels": dataset.channels, "ignore_label": dataset.ignore_label,
        "labels": dataset.labels.to_json_dict(),
        "target_spacing": full_spacing, "target_size": target_size,
        "normalisation": normalisation_schemes(dataset, fingerprint_data),
        "patch_size": patch, "batch_size": batch,
        "network": {"kernels": kernels, "strides": strides, "filters": filters},
        "memory_estimate_gb": round(training_memory_bytes(patch, batch, strides, filters) / 1e9, 2),
        "memory_budget_gb": budget,
        "training": {"epochs": 50, "iterations_per_epoch": 50, "learning_rate": 0.003, "weight_decay": 3e-5,
                     "foreground_fraction": 0.34, "validation_patches": 16, "mixed_precision": True},
        # sliding-window overlap as nnU-Net; CT: only the windows that reach the body are run (air is constant);
        # mirroring TTA by default (as nnU-Net) where it is cheap: 2D (4 passes; 8 for 3D)
        "inference": {"overlap": 0.5, "crop_to_content": dataset.is_ct, "tta": configuration == "2d"},
        "augmentation": augmentation_settings(axes, object_size_spread(fingerprint_data, zoomed)),
        "fingerprint": {key: value for key, value in fingerprint_data.items()
                        if key not in ("spacings_xyz", "sizes_xyz")},
    }


def object_size_spread(fingerprint_data: dict, zoomed: bool) -> tuple[float, float]:
    """The smallest low and largest high size ratio over the labels (``structure_size_spread``), in working voxels:
    image voxels where every image is resampled to one size, millimetres otherwise; (1, 1) when unknown."""
    spread = (fingerprint_data.get("structure_size_spread") or {}).get("voxels" if zoomed else "mm") or {}
    if not spread:
        return 1.0, 1.0
    return min(low for low, _ in spread.values()), max(high for _, high in spread.values())


def augmentation_settings(axes: int, size_spread: tuple[float, float] = (1.0, 1.0)) -> dict:
    """nnU-Net's augmentation ranges: 2D images in any in-plane orientation (rotation up to 180 degrees), 3D ones
    tilted by up to 15 degrees; scaling at least 0.7-1.4, widened (up to 0.5-2.0) where the dataset's structures
    vary more in size (5th/95th percentile over the median), so that the rare small or large ones (an early-pregnancy
    head beside a large placenta) are met in training at every size. With bf16 on AMX the time budget buys thousands
    of steps: without this range the validation Dice stalls after a third of them while the training loss falls."""
    low = float(np.clip(min(size_spread[0], SCALE_RANGE[0]), MIN_SCALE, SCALE_RANGE[0]))
    high = float(np.clip(max(size_spread[1], SCALE_RANGE[1]), SCALE_RANGE[1], MAX_SCALE))
    return {"rotation_degrees": 180.0 if axes == 2 else 15.0, "scale": [round(low, 3), round(high, 3)], "mirror": True,
            "gamma": [0.7, 1.5], "brightness": 0.15, "contrast": 0.25, "noise_std": 0.1, "elastic": False,
            "probability": 0.3}


def thinnest_structure(fingerprint_data: dict) -> float:
    """The thinnest label's median in-plane thickness in voxels (infinite when the fingerprint has none)."""
    values = fingerprint_data.get("structure_thickness_voxels") or {}
    return min(values.values(), default=math.inf)


def check_memory_budget(memory_budget_gb: float | None, device: str) -> float:
    """The training memory budget in GB: the device default, or the user's value if it is a positive number."""
    if memory_budget_gb is None:
        return MEMORY_BUDGET_GB[device]
    if not math.isfinite(memory_budget_gb) or memory_budget_gb <= 0:
        raise InputError(f"--memory-gb {memory_budget_gb:g}: must be a positive number of GB (default "
                         f"{MEMORY_BUDGET_GB[device]:g} on {device})")
    return float(memory_budget_gb)


def field_of_view_follows_object(spacings: list[list[float]], sizes: list[list[float]], axes: int) -> bool:
    """True when, on the first ``axes`` axes, the images' physical extent varies widely while their voxel counts
    hardly vary: the acquisition was zoomed to the object (as in fetal ultrasound), so a common spacing would make
    the object tiny in some images and huge in others."""
    if len(spacings) < 2:
        return False
    extent = np.asarray(spacings, dtype=float)[:, :axes] * np.asarray(sizes, dtype=float)[:, :axes]
    voxels = np.asarray(sizes, dtype=float)[:, :axes]

    def spread(values: np.ndarray) -> np.ndarray:
        return np.percentile(values, 90, axis=0) / np.percentile(values, 10, axis=0)

    return bool(np.all(spread(extent) >= ZOOMED_EXTENT_RATIO) and np.all(spread(voxels) <= ZOOMED_SIZE_RATIO))


def choose_configuration(dimension: int, spacing: list[float]) -> str:
    """2d for 2D data and for thick-slice 3D data (slice distance > 3x the in-plane spacing), else 3d."""
    if dimension == 2 or len(spacing) < 3:
        return "2d"
    return "2d" if spacing[2] > ANISOTROPY_RATIO * max(spacing[:2]) else "3d"


def normalisation_schemes(dataset: Dataset, fingerprint_data: dict) -> list[dict]:
    """CT: clip to the foreground's 0.5-99.5 percentiles, then z-score with the foreground mean/SD; other
    modalities: z-score of each image on its own."""
    schemes = []
    for index, stats in enumerate(fingerprint_data["foreground_intensity"]):
        ct = dataset.is_ct if index == 0 else False
        ct = ct or (index > 0 and "ct" == dataset.channels[index].strip().lower())
        if ct:
            schemes.append({"scheme": "ct", "clip": [stats["percentile_00_5"], stats["percentile_99_5"]],
                            "mean": stats["mean"], "std": max(stats["std"], 1e-6)})
        else:
            schemes.append({"scheme": "zscore"})
    return schemes


def topology(patch: list[int], spacing: list[float], max_stages: int = 6, min_feature: int = 4
             ) -> tuple[list[list[int]], list[list[int]]]:
    """Kernels and strides per stage (x, y(, z) order): pool an axis while its feature map stays >= ``min_feature``
    voxels and its spacing is not over twice the finest; 1-wide kernels along much coarser axes."""
    current = list(spacing)
    size = list(patch)
    kernels = [[3 if current[a] <= 2 * min(current) else 1 for a in range(len(patch))]]
    strides = [[1] * len(patch)]
    while len(strides) < max_stages:
        finest = min(current)
        stride = [2 if size[a] >= 2 * min_feature and current[a] <= 2 * finest else 1 for a in range(len(patch))]
        if not any(s == 2 for s in stride):
            break
        current = [c * s for c, s in zip(current, stride)]
        size = [z // s for z, s in zip(size, stride)]
        strides.append(stride)
        kernels.append([3 if current[a] <= 2 * min(current) else 1 for a in range(len(patch))])
    return kernels, strides


def fit_patch(shape: list[float], spacing: list[float], max_voxels: int, batch: int, budget_gb: float,
              filter_range: tuple[int, int]) -> tuple[list[int], list[list[int]], list[list[int]], list[int]]:
    """The largest patch (at most the median image shape) within the voxel cap and the memory budget, rounded
    to a multiple of the network's total stride on every axis."""
    # Start from the median shape, but at least 1/8 of the cap on each axis of a small image.
    patch = [float(max(8.0, value)) for value in shape]
    while True:
        kernels, strides = topology([int(p) for p in patch], spacing)
        filters = [min(filter_range[0] * 2 ** stage, filter_range[1]) for stage in range(len(strides))]
        rounded = _round_to_strides(patch, strides)
        fits = math.prod(rounded) <= max_voxels and training_memory_bytes(
            rounded, batch, strides, filters) <= budget_gb * 1e9
        if fits:
            return rounded, kernels, strides, filters
        if all(p <= 8.0 for p in patch):
            return rounded, kernels, strides, filters  # the smallest patch; the caller compares it to the budget
        # Shrink the axis that is largest in physical size among those that can still shrink (nnU-Net shrinks
        # relative to the median shape); an axis already at the minimum is never picked again.
        axis = int(np.argmax([p * s if p > 8.0 else -1.0 for p, s in zip(patch, spacing)]))
        patch[axis] = max(8.0, patch[axis] * 0.9)


def _round_to_strides(patch: list[float], strides: list[list[int]]) -> list[int]:
    total = [math.prod(stage[a] for stage in strides) for a in range(len(patch))]
    return [max(t, int(round(p / t)) * t) for p, t in zip(patch, total)]


def training_memory_bytes(patch: list[int], batch: int, strides: list[list[int]], filters: list[int]) -> float:
    """Rough peak training memory: feature maps of encoder and decoder with their gradients (about 16 float32
    tensors per stage voxel and filter; calibrated on a 31 M-parameter 3D U-Net, 96^3, batch 2: 4.8 GB)."""
    voxels, total = float(math.prod(patch)), 0.0
    for stage, stride in enumerate(strides):
        voxels /= math.prod(stride)
        total += voxels * filters[stage]
    return batch * total * 4 * 16


def plan_dataset(dataset: Dataset, device: str = "cpu", configuration: str | None = None,
                 memory_budget_gb: float | None = None, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> dict:
    """Fingerprint ``dataset`` and derive its plan."""
    return make_plan(dataset, fingerprint(dataset, progress, cancel), device, configuration, memory_budget_gb)


def save_plan(plan: dict, path: Path | str) -> Path:
    """Write the plan as indented JSON (atomically)."""
    return write_text_atomic(path, json.dumps(plan, indent=1) + "\n")


def load_plan(path: Path | str) -> dict:
    """Read and check a plan file written by :func:`save_plan` (possibly edited by hand)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: plan file not found; make one with 'segtoolkit plan DATA -o {path.name}'")
    plan = read_json(path, "not a plan file (not valid JSON)", f"make one with 'segtoolkit plan DATA -o {path.name}'")
    check_plan(plan, str(path))
    return plan


def check_plan(plan: dict, source: str) -> None:
    """Raise :class:`InputError` when a plan lacks a field, has a value of the wrong kind, or its per-axis lists
    do not match its configuration."""
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise InputError(f"{source}: not a SegToolkit plan (format must be {PLAN_FORMAT!r})")
    with interpreting(source, "plan", "fix the edited value or make a new plan with 'segtoolkit plan'"):
        _check_plan_fields(plan, source)


def _check_plan_fields(plan: dict, source: str) -> None:
    required = ("configuration", "target_spacing", "normalisation", "patch_size", "batch_size", "network",
                "training", "augmentation", "channels", "labels")
    missing = [key for key in required if key not in plan]
    if missing:
        raise InputError(f"{source}: plan lacks {', '.join(missing)}; make a new one with 'segtoolkit plan'")
    axes = 2 if plan["configuration"] == "2d" else 3
    network = plan["network"]
    if len(plan["patch_size"]) != axes or any(len(k) != axes for k in network["kernels"] + network["strides"]):
        raise InputError(f"{source}: patch_size, kernels and strides need {axes} values each for the "
                         f"{plan['configuration']} configuration")
    if not (len(network["kernels"]) == len(network["strides"]) == len(network["filters"])):
        raise InputError(f"{source}: network kernels, strides and filters need one entry per stage each")
    target_size = plan.get("target_size")
    if target_size is not None and (len(target_size) != len(plan["target_spacing"]) or any(
            value is not None and (not isinstance(value, int) or value < 1) for value in target_size)):
        raise InputError(f"{source}: target_size needs one whole number >= 1 (or null) per image axis, like "
                         "target_spacing, or null to resample by spacing")
    if len(plan["normalisation"]) != len(plan["channels"]):
        raise InputError(f"{source}: normalisation needs one entry per channel ({len(plan['channels'])})")
    _check_plan_values(plan)


def _positive_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _check_plan_values(plan: dict) -> None:
    """Kinds and ranges of the values a hand edit can break (read by :func:`interpreting` as one error)."""
    require(plan["configuration"] in ("2d", "3d"), f"configuration {plan['configuration']!r} must be 2d or 3d")
    require(all(isinstance(p, int) and p > 0 for p in plan["patch_size"]), "patch_size needs whole numbers > 0")
    require(isinstance(plan["batch_size"], int) and plan["batch_size"] > 0, "batch_size must be a whole number > 0")
    require(all(s is None or _positive_number(s) for s in plan["target_spacing"]),
            "target_spacing needs positive numbers (or null)")
    network = plan["network"]
    require(all(isinstance(f, int) and f > 0 for f in network["filters"]), "network filters must be whole numbers")
    require(all(isinstance(v, int) and v > 0 for row in network["kernels"] + network["strides"] for v in row),
            "network kernels and strides must be whole numbers > 0")
    training = plan["training"]
    for key in ("epochs", "iterations_per_epoch", "learning_rate"):
        require(key not in training or _positive_number(training[key]), f"training {key} must be a number > 0")
    require(isinstance(plan["labels"], dict) and isinstance(plan["channels"], list),
            "labels must be an object and channels a list")
    for entry in plan["normalisation"]:
        require(isinstance(entry, dict) and "scheme" in entry, "each normalisation entry needs a scheme")
        if entry["scheme"] == "ct":
            require(len(entry["clip"]) == 2 and _positive_number(entry["std"]) and math.isfinite(entry["mean"]),
                    "a ct normalisation needs clip [low, high], mean and a std > 0")
