"""nnU-Net v2 trained model folders made in the tests: tiny networks with random weights, saved as nnU-Net saves
them (plans.json and dataset.json in its schema, ``fold_N/checkpoint_final.pth`` holding the checkpoint dict with
numpy scalars inside), and images to predict."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

TRAINER = "nnUNetTrainer"
PLAN = "nnUNetPlans"
CT_PROPERTIES = {"max": 1500.0, "mean": 80.0, "median": 60.0, "min": -1000.0, "percentile_00_5": -200.0,
                 "percentile_99_5": 400.0, "std": 120.0}


def architecture(network: str, dimension: int, in_stages: int = 3, features: int = 4) -> dict:
    """``architecture`` of a configuration in nnU-Net's schema (a tiny U-Net)."""
    conv = f"torch.nn.modules.conv.Conv{dimension}d"
    norm = f"torch.nn.modules.instancenorm.InstanceNorm{dimension}d"
    kernel = [3] * dimension
    strides = [[1] * dimension] + [[2] * dimension] * (in_stages - 1)
    kwargs = {"n_stages": in_stages, "features_per_stage": [features * 2 ** i for i in range(in_stages)],
              "conv_op": conv, "kernel_sizes": [kernel] * in_stages, "strides": strides,
              "n_conv_per_stage_decoder": [1] * (in_stages - 1), "conv_bias": True, "norm_op": norm,
              "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
              "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    if network == "PlainConvUNet":
        kwargs["n_conv_per_stage"] = [1] * in_stages
    else:
        kwargs["n_blocks_per_stage"] = [1] * in_stages
    return {"network_class_name": f"dynamic_network_architectures.architectures.unet.{network}",
            "arch_kwargs": kwargs, "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def make_plans(configuration: str = "3d_fullres", network: str = "PlainConvUNet", patch=(16, 16, 16),
               spacing=(2.0, 1.0, 1.0), normalization: str = "CTNormalization", channels: int = 1,
               transpose=(0, 1, 2), use_mask: bool = False) -> dict:
    """plans.json with one configuration (per-axis lists in nnU-Net's transposed array order)."""
    dimension = len(patch)
    resample = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    config = {"data_identifier": f"{PLAN}_{configuration}", "preprocessor_name": "DefaultPreprocessor",
              "batch_size": 2, "patch_size": list(patch), "median_image_size_in_voxels": [40] * dimension,
              "spacing": list(spacing), "normalization_schemes": [normalization] * channels,
              "use_mask_for_norm": [use_mask] * channels, "resampling_fn_data": "resample_data_or_seg_to_shape",
              "resampling_fn_seg": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": resample,
              "resampling_fn_seg_kwargs": {**resample, "is_seg": True, "order": 1},
              "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
              "resampling_fn_probabilities_kwargs": {**resample, "order": 1},
              "architecture": architecture(network, dimension), "batch_dice": False}
    backward = [int(i) for i in np.argsort(transpose)]
    return {"dataset_name": "Dataset999_Tiny", "plans_name": PLAN,
            "original_median_spacing_after_transp": [2.0, 1.0, 1.0],
            "original_median_shape_after_transp": [40, 40, 40], "image_reader_writer": "SimpleITKIO",
            "transpose_forward": list(transpose), "transpose_backward": backward,
            "configurations": {configuration: config}, "experiment_planner_used": "ExperimentPlanner",
            "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {str(c): dict(CT_PROPERTIES) for c in range(channels)}}


def make_dataset_json(classes=("liver", "spleen"), channels: int = 1, modality: str = "CT") -> dict:
    return {"channel_names": {str(c): modality if c == 0 else f"{modality}{c}" for c in range(channels)},
            "labels": {"background": 0, **{name: i + 1 for i, name in enumerate(classes)}},
            "numTraining": 10, "file_ending": ".nii.gz"}


def checkpoint_dict(network, plans: dict, configuration: str, dataset: dict, fold: int, mirror=(0, 1, 2),
                    channels: int = 1) -> dict:
    """What nnU-Net's trainer saves: weights, optimizer state and logs with numpy scalars, init args."""
    import torch

    patch = plans["configurations"][configuration]["patch_size"]
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    network.train()
    out = network(torch.randn([1, channels, *patch]))
    (out[0] if isinstance(out, (list, tuple)) else out).mean().backward()
    optimizer.step()
    optimizer.zero_grad()
    network.eval()
    return {"network_weights": network.state_dict(), "optimizer_state": optimizer.state_dict(),
            "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [np.float64(0.5), np.float64(0.6)], "ema_fg_dice": [np.float64(0.55)],
                        "dice_per_class_or_region": [[np.float64(0.5), np.float32(0.7)]],
                        "train_losses": [np.float32(-0.3)], "val_losses": [np.float32(-0.2)],
                        "lrs": [0.01], "epoch_start_timestamps": [1.0], "epoch_end_timestamps": [2.0]},
            "_best_ema": np.float64(0.55), "current_epoch": 2,
            "init_args": {"plans": plans, "configuration": configuration, "fold": fold, "dataset_json": dataset,
                          "device": torch.device("cpu")},
            "trainer_name": TRAINER, "inference_allowed_mirroring_axes": None if mirror is None else tuple(mirror)}


def build_network(plans: dict, configuration: str, channels: int, classes: int, seed: int):
    import torch
    from dynamic_network_architectures.architectures import unet
    from torch import nn

    torch.manual_seed(seed)
    arch = plans["configurations"][configuration]["architecture"]
    kwargs = dict(arch["arch_kwargs"])
    dimension = len(plans["configurations"][configuration]["patch_size"])
    kwargs["conv_op"] = nn.Conv3d if dimension == 3 else nn.Conv2d
    kwargs["norm_op"] = nn.InstanceNorm3d if dimension == 3 else nn.InstanceNorm2d
    kwargs["nonlin"] = nn.LeakyReLU
    cls = getattr(unet, arch["network_class_name"].rsplit(".", 1)[-1])
    network = cls(input_channels=channels, num_classes=classes, deep_supervision=True, **kwargs)
    patch = plans["configurations"][configuration]["patch_size"]
    with torch.no_grad():  # random weights with a decisive, balanced output layer, so every class wins somewhere
        heads = [m for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)) and m.out_channels == classes]
        for head in heads:
            head.weight.mul_(6.0)
        network.eval()
        logits = network(torch.randn([2, channels, *patch]))[0]
        mean = logits.transpose(0, 1).reshape(classes, -1).mean(1)
        for head in heads:
            head.bias.sub_(mean)
    return network


def make_trained_folder(root: Path, configuration: str = "3d_fullres", folds=(0,), network: str = "PlainConvUNet",
                        classes=("liver", "spleen"), channels: int = 1, mirror=(), seed: int = 0,
                        trainer: str = TRAINER, **plan_options) -> Path:
    """``root/Dataset999_Tiny/Trainer__Plans__configuration`` with plans, dataset.json and the folds."""
    import torch

    plan_options.setdefault("patch", (16, 16, 16) if configuration.startswith("3d") else (32, 32))
    if len(plan_options["patch"]) == 2:
        plan_options.setdefault("spacing", (1.0, 1.0))
    plans = make_plans(configuration, network, channels=channels, **plan_options)
    if mirror == ():  # nnU-Net's default: every axis of the patch
        mirror = tuple(range(len(plan_options["patch"])))
    dataset = make_dataset_json(classes, channels,
                                "CT" if plan_options.get("normalization", "CTNormalization") == "CTNormalization"
                                else "MR")
    folder = root / "Dataset999_Tiny" / f"{trainer}__{PLAN}__{configuration}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    (folder / "dataset_fingerprint.json").write_text(json.dumps({"spacings": [[2.0, 1.0, 1.0]]}))
    for fold in folds:
        net = build_network(plans, configuration, channels, len(classes) + 1, seed + int(fold) * 17)
        checkpoint = checkpoint_dict(net, plans, configuration, dataset, int(fold), mirror, channels)
        target = folder / f"fold_{fold}"
        target.mkdir(exist_ok=True)
        torch.save(checkpoint, target / "checkpoint_final.pth")
    return folder


def ct_image(size=(24, 22, 14), spacing=(1.1, 0.9, 2.5), seed: int = 0, origin=(3.0, -2.0, 5.0)) -> sitk.Image:
    """A small CT-like volume: air around a body with two brighter blobs (x, y, z size in SimpleITK order)."""
    rng = np.random.default_rng(seed)
    shape = tuple(reversed(size))
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = (x ** 2 + y ** 2) < 0.7
    array = np.where(body, 40.0, -1000.0) + rng.normal(0, 20, shape)
    array[((x - 0.2) ** 2 + (y + 0.1) ** 2 + z ** 2) < 0.15] += 120
    array[((x + 0.3) ** 2 + (y - 0.2) ** 2 + (z - 0.3) ** 2) < 0.08] += 250
    image = sitk.GetImageFromArray(array.astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def mr_image(size=(22, 24, 9), spacing=(1.0, 1.0, 3.5), seed: int = 1) -> sitk.Image:
    """A small MR-like volume with a zero border (so nnU-Net's crop to non-zero has work to do)."""
    rng = np.random.default_rng(seed)
    shape = tuple(reversed(size))
    array = np.zeros(shape, dtype=np.float32)
    array[1:-1, 3:-2, 2:-4] = 300 + rng.normal(0, 40, (shape[0] - 2, shape[1] - 5, shape[2] - 6))
    array[3:6, 8:15, 6:13] += 200
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def image_2d(size=(36, 34), seed: int = 2) -> sitk.Image:
    rng = np.random.default_rng(seed)
    array = rng.normal(100, 30, tuple(reversed(size))).astype(np.float32)
    array[10:25, 8:20] += 150
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.7))
    return image


def nnunet_environment(tmp: Path) -> None:
    """nnU-Net reads these variables when imported; point them somewhere harmless."""
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.setdefault(key, str(tmp))
