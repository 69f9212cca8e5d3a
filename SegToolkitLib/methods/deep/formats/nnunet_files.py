"""nnU-Net v2 trained model folders read safely: layout, plans, labels, checkpoints and the network.

A trained folder is ``Trainer__Plans__configuration/`` with ``plans.json``, ``dataset.json`` and
``fold_N/checkpoint_final.pth`` (or ``checkpoint_best.pth``); its parent dataset folder may hold several
configurations. Checkpoints are pickles: they are read only with ``torch.load(weights_only=True)`` and an allowlist of
numpy scalar types (what nnU-Net stores besides tensors); anything else is refused. The model store keeps the
weights converted to safetensors beside a small JSON file (``fold_N/checkpoint_final.safetensors`` / ``.json``), so a
stored model is read without any pickle. The network is rebuilt from ``plans.json`` with
``dynamic-network-architectures``; only the known network classes and ``torch.nn`` building blocks named in the
plans are accepted (never an import of a module path taken from the folder).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ....errors import InputError
from ....io.json_files import read_json

PLANS = "plans.json"
DATASET = "dataset.json"
CHECKPOINTS = ("final", "best")
TRAINED_FOLDER = re.compile(r"^(?P<trainer>[^_].*?)__(?P<plans>.+?)__(?P<configuration>.+)$")
# nnU-Net's own preference when no configuration is named and no cross-validation picked one
CONFIGURATION_ORDER = ("3d_fullres", "2d", "3d_lowres")
SUPPORTED_RESAMPLING = "resample_data_or_seg_to_shape"
NORMALISATIONS = ("CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization",
                  "RGBTo01Normalization")


@dataclass
class FoldWeights:
    """One fold's network weights and what the checkpoint says about inference."""

    fold: str
    state: dict
    trainer: str
    mirror_axes: tuple[int, ...] | None
    source: Path


def is_trained_folder(path: Path) -> bool:
    return (path / PLANS).is_file() and (path / DATASET).is_file()


def find_trained_folder(path: Path | str, configuration: str | None = None) -> Path:
    """The ``Trainer__Plans__configuration`` folder to use: ``path`` itself, or the one of dataset folder ``path``
    for ``configuration`` (default: 3d_fullres, else 2d, else 3d_lowres, as nnU-Net prefers)."""
    path = Path(path)
    if is_trained_folder(path):
        found = TRAINED_FOLDER.match(path.name)
        if configuration and found and found["configuration"] != configuration:
            raise InputError(f"{path}: is the trained model of configuration {found['configuration']!r}, not "
                             f"{configuration!r}; give its dataset folder or drop --configuration")
        return path
    candidates = sorted(p for p in path.iterdir() if p.is_dir() and is_trained_folder(p)) if path.is_dir() else []
    by_configuration: dict[str, list[Path]] = {}
    for folder in candidates:
        found = TRAINED_FOLDER.match(folder.name)
        if found:
            by_configuration.setdefault(found["configuration"], []).append(folder)
    if not by_configuration:
        raise InputError(f"{path}: not an nnU-Net trained model folder (no {PLANS} and {DATASET}, and no "
                         "Trainer__Plans__configuration folder inside)")
    if configuration is None:
        configuration = next((c for c in CONFIGURATION_ORDER if c in by_configuration), None)
        if configuration is None and len(by_configuration) == 1:
            configuration = next(iter(by_configuration))
        if configuration is None:
            raise InputError(f"{path}: holds configurations {', '.join(sorted(by_configuration))}; choose one with "
                             "--configuration")
    if configuration not in by_configuration:
        raise InputError(f"{path}: has no trained configuration {configuration!r} (it has "
                         f"{', '.join(sorted(by_configuration))})")
    folders = by_configuration[configuration]
    if len(folders) > 1:
        raise InputError(f"{path}: holds several trained models of configuration {configuration} "
                         f"({', '.join(f.name for f in folders)}); give the one to use as -m")
    return folders[0]


def read_plans(folder: Path) -> dict:
    plans = read_json(folder / PLANS, "corrupt nnU-Net plans", "copy the model folder again")
    if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict):
        raise InputError(f"{folder / PLANS}: not an nnU-Net v2 plans file (no 'configurations')")
    return plans


def read_dataset_json(folder: Path) -> dict:
    dataset = read_json(folder / DATASET, "corrupt nnU-Net dataset.json", "copy the model folder again")
    if not isinstance(dataset, dict) or not isinstance(dataset.get("labels"), dict):
        raise InputError(f"{folder / DATASET}: not an nnU-Net dataset.json (no 'labels')")
    return dataset


def resolve_configuration(plans: dict, name: str, source: Path) -> dict:
    """The configuration ``name`` with ``inherits_from`` resolved (as nnU-Net's plans manager does)."""
    configurations = plans["configurations"]
    seen: list[str] = []
    chain = []
    while True:
        if name not in configurations:
            raise InputError(f"{source / PLANS}: no configuration {name!r} (it has "
                             f"{', '.join(sorted(configurations))})")
        if name in seen:
            raise InputError(f"{source / PLANS}: configurations inherit from each other in a circle ({seen})")
        seen.append(name)
        chain.append(configurations[name])
        if "inherits_from" not in configurations[name]:
            break
        name = configurations[name]["inherits_from"]
    resolved: dict = {}
    for entry in reversed(chain):
        resolved.update(entry)
    if "architecture" not in resolved and "UNet_class_name" in resolved:
        resolved["architecture"] = architecture_from_old_plans(resolved, source)
    check_configuration(resolved, source)
    return resolved


def architecture_from_old_plans(config: dict, source: Path) -> dict:
    """The ``architecture`` entry for plans written by nnU-Net before 2.2 (``UNet_class_name``,
    ``UNet_base_num_features``...; TotalSegmentator's weights), filled in as nnU-Net's own plans handler does:
    instance norm, LeakyReLU, conv bias, features doubling up to ``unet_max_num_features``."""
    name = config["UNet_class_name"]
    if name not in ("PlainConvUNet", "ResidualEncoderUNet"):
        raise InputError(f"{source / PLANS}: network {name!r} of these older plans is not supported (PlainConvUNet, "
                         "ResidualEncoderUNet)")
    try:
        stages = len(config["n_conv_per_stage_encoder"])
        dimension = len(config["patch_size"])
        module = "unet" if name == "PlainConvUNet" else "residual_unet"
        blocks = "n_conv_per_stage" if name == "PlainConvUNet" else "n_blocks_per_stage"
        kwargs = {"n_stages": stages,
                  "features_per_stage": [min(config["UNet_base_num_features"] * 2 ** i,
                                             config["unet_max_num_features"]) for i in range(stages)],
                  "conv_op": f"torch.nn.modules.conv.Conv{dimension}d",
                  "kernel_sizes": config["conv_kernel_sizes"], "strides": config["pool_op_kernel_sizes"],
                  blocks: config["n_conv_per_stage_encoder"],
                  "n_conv_per_stage_decoder": config["n_conv_per_stage_decoder"], "conv_bias": True,
                  "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dimension}d",
                  "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                  "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    except (KeyError, TypeError) as error:
        raise InputError(f"{source / PLANS}: older plans format without {error}; cannot rebuild the network") from None
    return {"network_class_name": f"dynamic_network_architectures.architectures.{module}.{name}",
            "arch_kwargs": kwargs, "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def check_configuration(config: dict, source: Path) -> None:
    """What this engine supports of a configuration; :class:`InputError` for the rest."""
    where = f"{source / PLANS}"
    missing = [key for key in ("patch_size", "spacing", "normalization_schemes", "architecture") if key not in config]
    if missing:
        raise InputError(f"{where}: configuration lacks {', '.join(missing)} (an nnU-Net version before 2.2?); "
                         "re-plan the dataset with a current nnU-Net")
    if config.get("previous_stage"):
        raise InputError(f"{where}: cascade configurations (previous_stage {config['previous_stage']!r}) are not "
                         "supported; use the 3d_fullres or 2d configuration")
    unknown = [s for s in config["normalization_schemes"] if s not in NORMALISATIONS]
    if unknown:
        raise InputError(f"{where}: unknown normalisation scheme(s) {unknown}; supported: {', '.join(NORMALISATIONS)}")
    for key in ("resampling_fn_data", "resampling_fn_probabilities"):
        if config.get(key, SUPPORTED_RESAMPLING) != SUPPORTED_RESAMPLING:
            raise InputError(f"{where}: resampling function {config[key]!r} is not supported (only "
                             f"{SUPPORTED_RESAMPLING})")


def class_labels(dataset: dict, source: Path) -> dict[int, str]:
    """Label value -> name from dataset.json (values 0..N-1, one network output each); regions are refused."""
    labels = {}
    for name, value in dataset["labels"].items():
        if name == "ignore":
            continue
        if isinstance(value, (list, tuple)):
            raise InputError(f"{source / DATASET}: region-based nnU-Net models (label {name!r} = {value}) are not "
                             "supported")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InputError(f"{source / DATASET}: label {name!r} has the value {value!r}; nnU-Net labels are "
                             "non-negative integers")
        labels[value] = name
    if sorted(labels) != list(range(len(labels))) or len(labels) < 2:
        raise InputError(f"{source / DATASET}: labels must be 0 (background), 1, 2... without gaps; found "
                         f"{sorted(labels)}")
    return dict(sorted(labels.items()))


def channel_names(dataset: dict, source: Path) -> list[str]:
    channels = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise InputError(f"{source / DATASET}: no channel_names")
    return [str(channels[key]) for key in sorted(channels, key=lambda k: int(k))]


def fold_names(folder: Path, checkpoint: str = "final") -> list[str]:
    """Folds with a checkpoint of this kind (nnU-Net's default: every fold_N, not fold_all)."""
    if checkpoint not in CHECKPOINTS:
        raise InputError(f"checkpoint {checkpoint!r}: choose final or best")
    found = []
    for path in sorted(folder.glob("fold_*")):
        name = path.name[len("fold_"):]
        if name.isdigit() and _checkpoint_file(path, checkpoint) is not None:
            found.append(name)
    return sorted(found, key=int)


def _checkpoint_file(fold_folder: Path, checkpoint: str) -> Path | None:
    for suffix in (".safetensors", ".pth"):
        path = fold_folder / f"checkpoint_{checkpoint}{suffix}"
        if path.is_file():
            return path
    return None


def choose_folds(folder: Path, folds: list[str] | None, checkpoint: str) -> list[str]:
    available = fold_names(folder, checkpoint)
    if (folder / "fold_all").is_dir() and _checkpoint_file(folder / "fold_all", checkpoint) is not None:
        available_all = True
    else:
        available_all = False
    if folds is None:
        if available:
            return available
        if available_all:
            return ["all"]
        raise InputError(f"{folder}: no fold_N/checkpoint_{checkpoint}.pth; the model folder is incomplete (try "
                         f"--checkpoint {'best' if checkpoint == 'final' else 'final'} or copy it again)")
    missing = [f for f in folds if not (f in available or (f == "all" and available_all))]
    if missing:
        raise InputError(f"{folder}: fold(s) {', '.join(missing)} have no checkpoint_{checkpoint}; available: "
                         f"{', '.join(available + (['all'] if available_all else [])) or 'none'}")
    return list(folds)


def read_fold(folder: Path, fold: str, checkpoint: str = "final") -> FoldWeights:
    """One fold's weights: from the converted safetensors + JSON when present, else the .pth read safely."""
    fold_folder = folder / f"fold_{fold}"
    path = _checkpoint_file(fold_folder, checkpoint)
    if path is None:
        raise InputError(f"{fold_folder}: checkpoint_{checkpoint} missing")
    if path.suffix == ".safetensors":
        return _read_converted(path, fold)
    contents = load_checkpoint_safely(path)
    weights = contents.get("network_weights")
    if not isinstance(weights, dict) or not weights:
        raise InputError(f"{path}: no network_weights in the checkpoint; not an nnU-Net v2 checkpoint")
    axes = contents.get("inference_allowed_mirroring_axes")
    return FoldWeights(fold, weights, str(contents.get("trainer_name", "")), _axes(axes, path), path)


def _axes(axes, path: Path) -> tuple[int, ...] | None:
    if axes is None:
        return None
    try:
        return tuple(int(a) for a in axes)
    except (TypeError, ValueError):
        raise InputError(f"{path}: inference_allowed_mirroring_axes {axes!r} is not a list of axes") from None


def _read_converted(path: Path, fold: str) -> FoldWeights:
    from ..model_package import load_weights

    info = read_json(path.with_suffix(".json"), "corrupt checkpoint description", "import the model again")
    if not isinstance(info, dict):
        raise InputError(f"{path.with_suffix('.json')}: not a checkpoint description")
    state = load_weights(path)
    aliases = info.get("aliases", {})
    if not isinstance(aliases, dict) or any(not isinstance(v, str) or v not in state for v in aliases.values()):
        raise InputError(f"{path.with_suffix('.json')}: its aliases name tensors that are not in {path.name}")
    state.update({alias: state[key] for alias, key in aliases.items()})
    return FoldWeights(fold, state, str(info.get("trainer_name", "")),
                       _axes(info.get("inference_allowed_mirroring_axes"), path), path)


def numpy_allowlist() -> list:
    """The globals nnU-Net checkpoints hold besides tensors: numpy scalars and their (numeric) dtypes."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    allowed: list = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype]
    numeric = ("Bool", "Float16", "Float32", "Float64", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16",
               "UInt32", "UInt64", "LongDouble")
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, f"{name}DType") for name in numeric if hasattr(dtypes, f"{name}DType")]
    return allowed


def load_checkpoint_safely(path: Path) -> dict:
    """A ``.pth`` checkpoint read with ``weights_only=True`` and only :func:`numpy_allowlist` added; a pickle that
    needs anything more (code, other classes) is refused."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(numpy_allowlist()):
            contents = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as error:
        detail = " ".join(str(error).split())[:200]
        raise InputError(f"{path}: refused: the checkpoint needs more than tensors and numpy numbers to load "
                         f"({detail}); only nnU-Net checkpoints are read, never arbitrary pickles") from None
    except (OSError, EOFError, ValueError) as error:
        raise InputError(f"{path}: unreadable checkpoint ({str(error)[:150]}); copy the model again") from None
    if not isinstance(contents, dict):
        raise InputError(f"{path}: not an nnU-Net checkpoint (a {type(contents).__name__}, not a dict)")
    return contents


def network_classes() -> dict[str, type]:
    """The network classes a plans file may name (full dotted names, old and new module paths)."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

    prefix = "dynamic_network_architectures.architectures"
    return {f"{prefix}.unet.PlainConvUNet": PlainConvUNet, f"{prefix}.unet.ResidualEncoderUNet": ResidualEncoderUNet,
            f"{prefix}.residual_unet.ResidualEncoderUNet": ResidualEncoderUNet}


def building_blocks() -> dict[str, type]:
    """The ``torch.nn`` and dynamic-network-architectures classes a plans file may name for conv, norm, dropout,
    nonlinearity and residual block (``_kw_requires_import``), under their module paths and ``torch.nn.X``."""
    from dynamic_network_architectures.building_blocks.residual import BasicBlockD, BottleneckD
    from torch import nn

    classes = [nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
               nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm, nn.Dropout, nn.Dropout1d,
               nn.Dropout2d, nn.Dropout3d, nn.LeakyReLU, nn.ReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh,
               nn.Sigmoid, nn.Identity]
    table = {}
    for cls in classes:
        table[f"{cls.__module__}.{cls.__name__}"] = cls
        table[f"torch.nn.{cls.__name__}"] = cls
    for cls in (BasicBlockD, BottleneckD):
        table[f"{cls.__module__}.{cls.__name__}"] = cls
    return table


def build_network(config: dict, in_channels: int, out_channels: int, source: Path):
    """The configuration's network (deep supervision off, evaluation mode), from allowlisted classes only."""
    architecture = config["architecture"]
    name = architecture.get("network_class_name")
    classes = network_classes()
    if name not in classes:
        raise InputError(f"{source / PLANS}: network class {name!r} is not supported (supported: PlainConvUNet, "
                         "ResidualEncoderUNet of dynamic-network-architectures)")
    kwargs = dict(architecture.get("arch_kwargs", {}))
    blocks = building_blocks()
    for key in architecture.get("_kw_requires_import", []):
        value = kwargs.get(key)
        if value is None:
            continue
        if value not in blocks:
            raise InputError(f"{source / PLANS}: {key} = {value!r} is not a known torch.nn building block; "
                             "refused (a plans file never makes us import other modules)")
        kwargs[key] = blocks[value]
    kwargs["deep_supervision"] = False
    try:
        network = classes[name](input_channels=in_channels, num_classes=out_channels, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError, IndexError) as error:
        raise InputError(f"{source / PLANS}: the network cannot be built from its arch_kwargs ({error})") from None
    return network.eval()


def load_state_exactly(network, fold: FoldWeights, source: Path) -> None:
    """Load one fold's weights; a clear error when they do not fit (another network, wrong channel count)."""
    state = network.state_dict()
    missing = [k for k in state if k not in fold.state]
    unexpected = [k for k in fold.state if k not in state]
    wrong = [f"{k} {tuple(fold.state[k].shape)} vs {tuple(state[k].shape)}" for k in fold.state
             if k in state and tuple(fold.state[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join((wrong or missing or unexpected)[:2])
        raise InputError(f"{fold.source}: the weights do not fit the network of {source / PLANS} and "
                         f"{source / DATASET} ({detail}); channel or class count, or the plans, differ from "
                         "training")
    network.load_state_dict(fold.state)


def postprocessing_steps(folder: Path) -> list[list[int]]:
    """nnU-Net's stored post-processing, read from ``crossval_results_folds_*/postprocessing.json`` (the readable
    copy it writes beside ``postprocessing.pkl``, which is never unpickled): for each step, the label values kept
    as their largest connected component together. Steps of any other kind make the whole list empty (skipped)."""
    files = sorted(folder.glob("crossval_results_folds_*/postprocessing.json"))
    if not files:
        return []
    document = read_json(files[-1], "corrupt post-processing description", "delete it to predict without it")
    names = document.get("postprocessing_fns", []) if isinstance(document, dict) else []
    arguments = document.get("postprocessing_kwargs", []) if isinstance(document, dict) else []
    steps = []
    for name, kwargs in zip(names, arguments):
        labels = kwargs.get("labels_or_regions") if isinstance(kwargs, dict) else None
        if name != "remove_all_but_largest_component_from_segmentation" or labels is None:
            return []
        values = labels if isinstance(labels, list) else [labels]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return []  # regions
        steps.append([int(v) for v in values])
    return steps


def describe_configuration(folder: Path, config: dict) -> dict:
    """A short summary for ``segtoolkit models info``."""
    found = TRAINED_FOLDER.match(folder.name)
    return {"configuration": found["configuration"] if found else None, "trainer": found["trainer"] if found else None,
            "network": config["architecture"].get("network_class_name", "").rsplit(".", 1)[-1],
            "patch_size": config["patch_size"], "spacing": config["spacing"]}


def write_converted_fold(fold: FoldWeights, target: Path, checkpoint: str) -> Path:
    """Write one fold as ``checkpoint_<kind>.safetensors`` + ``.json`` into ``target`` (permissions per umask)."""
    from safetensors.torch import save_file

    from ..backends import publish

    target.mkdir(parents=True, exist_ok=True)
    final = target / f"checkpoint_{checkpoint}.safetensors"
    tmp = target / f".{final.name}.tmp"
    tensors, aliases = {}, {}
    first_of: dict[tuple, str] = {}
    for key, value in fold.state.items():  # nnU-Net's state dicts name some tensors twice: store each once
        identity = (value.data_ptr(), tuple(value.shape), tuple(value.stride()), str(value.dtype))
        if identity in first_of:
            aliases[key] = first_of[identity]
        else:
            first_of[identity] = key
            tensors[key] = value.detach().contiguous().cpu()
    save_file(tensors, str(tmp))
    publish(tmp, final)
    info = {"trainer_name": fold.trainer, "inference_allowed_mirroring_axes":
            None if fold.mirror_axes is None else list(fold.mirror_axes), "converted_from": fold.source.name,
            "aliases": aliases}
    tmp_json = target / f".{final.stem}.json.tmp"
    tmp_json.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    publish(tmp_json, final.with_suffix(".json"))
    return final
