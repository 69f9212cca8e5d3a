"""nnU-Net v2 trained models predicted natively, as nnU-Net's own predictor does, on our backends.

Python API::

    model = load_nnunet("Dataset001_X/nnUNetTrainer__nnUNetPlans__3d_fullres")   # folds found by themselves
    result = predict_nnunet(model, image, backend="openvino")     # Prediction on the exact input grid

The steps follow nnU-Net 2.x (``DefaultPreprocessor`` and ``nnUNetPredictor``): the axes transposed as the plans
say, the image cropped to its non-zero box, each channel normalised with the plans' scheme and stored intensity
properties (before resampling, as nnU-Net does), resampled to the configuration's spacing with its anisotropy rule
(cubic in-plane and nearest along the low-resolution axis when the spacing ratio exceeds 3), padded to the patch,
predicted with Gaussian-weighted sliding windows (step half a patch, sigma an eighth of it), mirrored over the
checkpoint's allowed axes (on by default, as nnU-Net), logits averaged over the folds, resampled back (linear) to
the cropped input shape, reduced to labels and put back into the input grid. Differences: the logits are
accumulated in float32 (nnU-Net 2.8 uses float16), the windows run in small batches, and the logits go back to the
input grid one band of rows and one class at a time (the label map keeps the best so far) as soon as no later window
reaches those rows, so neither the whole working-grid logits nor input-sized float arrays ever exist (unless
probabilities are asked for): on a 512x512x300 CT with 25 classes the float32 sums take a band of about 1 GB instead
of 2.2 GB. The network runs on torch (fp32 or bf16),
OpenVINO f32 or bf16 (``auto`` on CPUs with AMX), or a checked int8 network made by ``segtoolkit quantize`` on
images the user names.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import SimpleITK as sitk

from ....errors import InputError
from ....io import LabelMap, LabelTable
from ....progress import CancelToken, ProgressCallback, report
from ..backends import (
    BACKENDS,
    WINDOW_BATCH,
    bf16_supported,
    compile_for_cpu,
    convert_to_openvino,
    file_sha256,
    has_bf16_matrix_units,
    openvino_precision,
    read_openvino,
    resolve_device,
)
from . import nnunet_files as files

ANISO_THRESHOLD = 3.0
STEP = 0.5
INT8_FILE = "network-int8.xml"
INT8_JSON = "network-int8.json"
OPENVINO_MIN_PASSES = 16  # network passes (windows x mirrorings x folds) that repay a first conversion


@dataclass
class NnunetModel:
    """A loaded nnU-Net trained model: its plans, labels, and one network per fold (evaluation mode)."""

    folder: Path
    plans: dict
    dataset: dict
    configuration: str
    config: dict
    labels: dict[int, str]
    channels: list[str]
    folds: list[str]
    networks: list
    fold_files: list[Path]
    mirror_axes: tuple[int, ...] | None
    postprocessing: list[list[int]]
    device: str = "cpu"
    runtime: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def class_values(self) -> list[int]:
        return sorted(self.labels)

    @property
    def label_table(self) -> LabelTable:
        return LabelTable.from_names({value: name for value, name in self.labels.items() if value})

    @property
    def patch(self) -> list[int]:
        return [int(p) for p in self.config["patch_size"]]

    @property
    def two_d(self) -> bool:
        return len(self.patch) == 2


def load_nnunet(path: Path | str, configuration: str | None = None, folds: Sequence[str | int] | None = None,
                checkpoint: str = "final", device: str = "cpu") -> NnunetModel:
    """Load an nnU-Net v2 trained model folder (or its dataset folder, choosing ``configuration``), with
    ``folds`` (default: every fold present) of checkpoint ``final`` or ``best``."""
    import torch

    folder = files.find_trained_folder(Path(path), configuration)
    plans = files.read_plans(folder)
    dataset = files.read_dataset_json(folder)
    found = files.TRAINED_FOLDER.match(folder.name)
    name = found["configuration"] if found else configuration
    if name is None:
        name = next((c for c in files.CONFIGURATION_ORDER if c in plans["configurations"]), None)
        if name is None:
            raise InputError(f"{folder}: cannot tell the configuration from the folder name; give --configuration")
    config = files.resolve_configuration(plans, name, folder)
    labels = files.class_labels(dataset, folder)
    channels = files.channel_names(dataset, folder)
    _check_plans(plans, config, channels, folder)
    chosen = files.choose_folds(folder, None if folds is None else [str(f) for f in folds], checkpoint)
    networks, sources, axes = [], [], None
    device = resolve_device(device)
    for index, fold in enumerate(chosen):
        weights = files.read_fold(folder, fold, checkpoint)
        network = files.build_network(config, len(channels), len(labels), folder)
        with torch.no_grad():
            files.load_state_exactly(network, weights, folder)
        networks.append(network.eval().to(device))
        sources.append(weights.source)
        if index == 0:
            axes = weights.mirror_axes
        del weights
    if axes is not None and max(axes, default=0) >= len(config["patch_size"]):
        raise InputError(f"{sources[0]}: mirroring axes {axes} do not fit a {len(config['patch_size'])}D network")
    return NnunetModel(folder, plans, dataset, name, config, labels, channels, chosen, networks, sources, axes,
                       files.postprocessing_steps(folder), device)


def _check_plans(plans: dict, config: dict, channels: list[str], folder: Path) -> None:
    where = folder / files.PLANS
    transpose = plans.get("transpose_forward", [0, 1, 2])
    if sorted(transpose) != [0, 1, 2] or sorted(plans.get("transpose_backward", [0, 1, 2])) != [0, 1, 2]:
        raise InputError(f"{where}: transpose_forward/backward are not permutations of the three axes")
    schemes = config["normalization_schemes"]
    if len(schemes) != len(channels):
        raise InputError(f"{where}: {len(schemes)} normalisation schemes for {len(channels)} channels in "
                         f"{files.DATASET}; the two files do not belong together")
    properties = plans.get("foreground_intensity_properties_per_channel", {})
    for index, scheme in enumerate(schemes):
        if scheme == "CTNormalization":
            stored = properties.get(str(index), {})
            missing = [k for k in ("mean", "std", "percentile_00_5", "percentile_99_5") if k not in stored]
            if missing:
                raise InputError(f"{where}: CT normalisation of channel {index} needs the stored intensity "
                                 f"properties ({', '.join(missing)} missing)")
    if len(config["spacing"]) != len(config["patch_size"]):
        raise InputError(f"{where}: spacing and patch_size of the configuration have different lengths")


# ---------------------------------------------------------------------------------------------- preprocessing


@dataclass
class Preprocessed:
    """A case as the network sees it, and what is needed to map results back."""

    data: np.ndarray  # (C, *working shape) float32, transposed, cropped, normalised, resampled
    spacing: list[float]  # input spacing in transposed array order
    shape_before_cropping: tuple[int, ...]
    bbox: list[tuple[int, int]]
    shape_after_cropping: tuple[int, ...]
    working_spacing: list[float]


def case_array(images: Sequence[sitk.Image]) -> tuple[np.ndarray, list[float]]:
    """Channels as nnU-Net's SimpleITK reader gives them: ``(C, z, y, x)`` float32 and the spacing in array
    order (2D images: a leading axis of length 1 with a spacing 999 times the largest)."""
    arrays, spacing = [], None
    for image in images:
        array = sitk.GetArrayViewFromImage(image).astype(np.float32)  # our own copy: changed in place later
        if array.ndim == 2:
            array = array[None]
            spacing = [max(image.GetSpacing()) * 999, *reversed(image.GetSpacing())]
        else:
            spacing = list(reversed(image.GetSpacing()))
        arrays.append(array)
    stacked = arrays[0][None] if len(arrays) == 1 else np.stack(arrays)  # one channel: no copy
    return stacked, [abs(float(s)) for s in spacing]


def preprocess(model: NnunetModel, images: Sequence[sitk.Image]) -> Preprocessed:
    """nnU-Net's preprocessing of one case (see the module docstring)."""
    from scipy.ndimage import binary_fill_holes

    data, spacing = case_array(images)
    transpose = model.plans.get("transpose_forward", [0, 1, 2])
    data = np.ascontiguousarray(data.transpose([0, *[t + 1 for t in transpose]]))
    spacing = [spacing[t] for t in transpose]
    shape_before = data.shape[1:]
    nonzero = binary_fill_holes(np.any(data != 0, axis=0))
    bbox = _bounding_box(nonzero)
    box = tuple(slice(lo, hi) for lo, hi in bbox)
    data = data[(slice(None), *box)]
    mask = nonzero[box]
    del nonzero
    shape_after = data.shape[1:]
    target = [float(s) for s in model.config["spacing"]]
    if len(target) < 3:
        target = [spacing[0]] + target
    new_shape = [int(round(old / new * size)) for old, new, size in zip(spacing, target, shape_after)]
    data = normalise(data, mask, model)
    del mask
    kwargs = _resampling_kwargs(model.config, "resampling_fn_data_kwargs", order=3)
    data = resample_to_shape(data, new_shape, spacing, target, **kwargs)
    return Preprocessed(data, spacing, shape_before, bbox, shape_after, target)


def _bounding_box(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open box of the True voxels (the whole array when there are none, as nnU-Net)."""
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append((int(present[0]), int(present[-1]) + 1) if present.size else (0, mask.shape[axis]))
    return box


def normalise(data: np.ndarray, mask: np.ndarray, model: NnunetModel) -> np.ndarray:
    """Each channel normalised in place with its scheme (CT: clip to the stored 0.5/99.5 percentiles, then the
    stored mean/std; z-score: the case's own mean/std, inside the non-zero mask when ``use_mask_for_norm``)."""
    schemes = model.config["normalization_schemes"]
    use_mask = model.config.get("use_mask_for_norm", [False] * len(schemes))
    properties = model.plans.get("foreground_intensity_properties_per_channel", {})
    for index, scheme in enumerate(schemes):
        channel = data[index]
        if scheme == "CTNormalization":
            stored = properties[str(index)]
            np.clip(channel, stored["percentile_00_5"], stored["percentile_99_5"], out=channel)
            channel -= stored["mean"]
            channel /= max(float(stored["std"]), 1e-8)
        elif scheme == "ZScoreNormalization":
            if index < len(use_mask) and use_mask[index]:
                inside = channel[mask]
                mean, std = inside.mean(), inside.std()
                channel[mask] = (inside - mean) / max(float(std), 1e-8)
            else:
                mean, std = channel.mean(), channel.std()
                channel -= mean
                channel /= max(float(std), 1e-8)
        elif scheme == "RescaleTo01Normalization":
            channel -= channel.min()
            channel /= max(float(channel.max()), 1e-8)
        elif scheme == "RGBTo01Normalization":
            if channel.min() < 0 or channel.max() > 255:
                raise InputError(f"channel {index}: the model expects 8-bit RGB values (0..255)")
            channel /= 255.0
    return data


def _resampling_kwargs(config: dict, key: str, order: int) -> dict:
    stored = dict(config.get(key, {}))
    return {"order": int(stored.get("order", order)), "order_z": int(stored.get("order_z", 0)),
            "force_separate_z": stored.get("force_separate_z"),
            "threshold": float(stored.get("separate_z_anisotropy_threshold", ANISO_THRESHOLD))}


def separate_axis(force: bool | None, current: Sequence[float], new: Sequence[float],
                  threshold: float = ANISO_THRESHOLD) -> int | None:
    """nnU-Net's anisotropy rule: the low-resolution axis to resample on its own (None: resample jointly)."""
    def lowres(spacing):
        axes = np.where(max(spacing) / np.array(spacing) == 1)[0]
        return int(axes[0]) if len(axes) == 1 else None

    if force is not None:
        return lowres(current) if force else None
    if max(current) / min(current) > threshold:
        return lowres(current)
    if max(new) / min(new) > threshold:
        return lowres(new)
    return None


def resample_to_shape(data: np.ndarray, new_shape: Sequence[int], current: Sequence[float], new: Sequence[float],
                      order: int = 3, order_z: int = 0, force_separate_z: bool | None = None,
                      threshold: float = ANISO_THRESHOLD) -> np.ndarray:
    """``(C, *shape)`` resampled to ``new_shape`` channel by channel (float32), as nnU-Net's
    ``resample_data_or_seg_to_shape`` (scikit-image ``resize``, edge mode, no anti-aliasing; along a separate
    low-resolution axis ``map_coordinates`` with ``order_z``)."""
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data.astype(np.float32, copy=False)
    axis = separate_axis(force_separate_z, current, new, threshold)
    out = np.empty((data.shape[0], *new_shape), dtype=np.float32)
    for channel in range(data.shape[0]):
        out[channel] = resample_channel(data[channel], new_shape, order, axis, order_z)
    return out


def resample_channel(volume: np.ndarray, new_shape: tuple[int, ...], order: int, axis: int | None,
                     order_z: int = 0) -> np.ndarray:
    from scipy.ndimage import map_coordinates
    from skimage.transform import resize

    volume = volume.astype(np.float32, copy=False)
    if axis is None:
        return resize(volume, new_shape, order, mode="edge", anti_aliasing=False)
    in_plane = tuple(s for a, s in enumerate(new_shape) if a != axis)
    partial_shape = list(new_shape)
    partial_shape[axis] = volume.shape[axis]
    partial = np.empty(partial_shape, dtype=np.float32)
    for index in range(volume.shape[axis]):
        where = [slice(None)] * 3
        where[axis] = index
        partial[tuple(where)] = resize(volume[tuple(where)], in_plane, order, mode="edge", anti_aliasing=False)
    if volume.shape[axis] == new_shape[axis]:
        return partial
    scale = partial.shape[axis] / new_shape[axis]
    # only the separate axis changes size here: interpolate along it alone (a 1D map of coordinates)
    positions = scale * (np.arange(new_shape[axis]) + 0.5) - 0.5
    if order_z == 0:
        # map_coordinates with order 0 picks floor(position + 0.5), clamped at the border ("nearest")
        picked = np.clip(np.floor(positions + 0.5), 0, partial.shape[axis] - 1).astype(int)
        return np.take(partial, picked, axis=axis)
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) if a != axis else positions.astype(np.float32)
                         for a, n in enumerate(new_shape)], indexing="ij")
    return map_coordinates(partial, np.array(grid), order=order_z, mode="nearest")


# ---------------------------------------------------------------------------------------------- sliding window


def window_steps(size: int, tile: int, step: float = STEP) -> list[int]:
    """nnU-Net's window starts along one axis (evenly spread, first at 0, last at the end)."""
    count = int(math.ceil((size - tile) / (tile * step))) + 1
    if count <= 1:
        return [0]
    actual = (size - tile) / (count - 1)
    return [int(np.round(actual * i)) for i in range(count)]


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 1.0 / 8, peak: float = 10.0) -> np.ndarray:
    """nnU-Net's window weights: a Gaussian with sigma = patch * sigma_scale, peak ``peak``, no zeros."""
    from scipy.ndimage import gaussian_filter

    delta = np.zeros(patch)
    delta[tuple(p // 2 for p in patch)] = 1
    weights = gaussian_filter(delta, [p * sigma_scale for p in patch], 0, mode="constant", cval=0)
    weights /= weights.max() / peak
    weights[weights == 0] = weights[weights > 0].min()
    return weights.astype(np.float32)


def _pad_to_patch(data: np.ndarray, patch: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad the last ``len(patch)`` axes with 0 to at least the patch (below: half, above: the rest)."""
    shape = data.shape
    lead = len(shape) - len(patch)
    pads = [(0, 0)] * lead
    for size, tile in zip(shape[lead:], patch):
        extra = max(0, tile - size)
        pads.append((extra // 2, extra - extra // 2))
    if not any(p for pair in pads for p in pair):
        return data, tuple(slice(None) for _ in shape)
    return np.pad(data, pads, "constant"), tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, shape))


def padded_shape(shape: Sequence[int], patch: Sequence[int]) -> list[int]:
    """The working shape after :func:`_pad_to_patch`."""
    lead = len(shape) - len(patch)
    return list(shape[:lead]) + [max(size, tile) for size, tile in zip(shape[lead:], patch)]


def window_slicers(shape: Sequence[int], patch: Sequence[int], step: float = STEP) -> list[tuple]:
    """The windows over a padded ``(D, H, W)`` working array; 2D networks go slice by slice."""
    if len(patch) == 2:
        steps = [window_steps(shape[1], patch[0], step), window_steps(shape[2], patch[1], step)]
        return [(depth, slice(y, y + patch[0]), slice(x, x + patch[1]))
                for depth in range(shape[0]) for y in steps[0] for x in steps[1]]
    steps = [window_steps(size, tile, step) for size, tile in zip(shape, patch)]
    return [tuple(slice(s, s + t) for s, t in zip(starts, patch))
            for starts in np.array(np.meshgrid(*steps, indexing="ij")).reshape(3, -1).T.tolist()]


def mirror_combinations(axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    """No flip, then every non-empty combination of the allowed axes (as nnU-Net: 7 flips for 3 axes)."""
    if not axes:
        return [()]
    return [()] + [combo for r in range(1, len(axes) + 1) for combo in combinations(axes, r)]


def sliding_window_logits(model: NnunetModel, data: np.ndarray, runners: list[Callable], flips: list[tuple],
                          progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                          span: tuple[float, float] = (0.1, 0.85), sink: Callable | None = None) -> np.ndarray | None:
    """Logits ``(classes, *working shape)``: Gaussian-weighted windows, each the mean over ``flips`` and over the
    folds' ``runners`` (callables on a torch batch of windows).

    With ``sink`` (a :class:`InputGridLabels`) the logits are never whole: the windows go in order along the first
    axis, the float32 sums are kept for a band of rows one window deep, and rows are handed to ``sink`` as soon as
    no later window reaches them (``sink(rows, final)`` with ``rows(class, lo, hi)`` the finished logits of those
    rows; it answers the first row it still needs). Returns None then."""
    import torch

    patch = model.patch
    padded, unpad = _pad_to_patch(data, patch)
    shape = padded.shape[1:]
    slicers = window_slicers(shape, patch)
    weights_window = torch.from_numpy(gaussian_importance(patch))
    classes = len(model.labels)
    batch = 4 * WINDOW_BATCH if model.two_d else WINDOW_BATCH
    groups = [slicers[first:first + batch] for first in range(0, len(slicers), batch)]
    band = shape[0] if sink is None else min(shape[0], max(_first_row(g[-1]) - _first_row(g[0]) for g in groups)
                                             + (1 if model.two_d else patch[0]) + 2)
    logits = torch.zeros((classes, band, *shape[1:]), dtype=torch.float32)
    weights = torch.zeros((band, *shape[1:]), dtype=torch.float32)
    base = [0]  # the padded row that band row 0 holds
    lead, inner = unpad[1].start or 0, unpad[1:]

    def rows(index: int, lo: int, hi: int) -> np.ndarray:  # finished logits of unpadded rows [lo, hi)
        where = (slice(lo + lead - base[0], hi + lead - base[0]), *inner[1:])
        return (logits[index][where] / weights[where]).numpy()

    def hand_over(final: int) -> None:  # rows before ``final`` (padded) are finished: to the sink, then dropped
        keep = sink(rows, min(max(final - lead, 0), data.shape[1])) + lead
        drop = min(max(keep, base[0]), final) - base[0]
        if drop:
            for row in range(band - drop):  # row by row: no second band in memory
                logits[:, row] = logits[:, row + drop]
                weights[row] = weights[row + drop]
            logits[:, band - drop:] = 0
            weights[band - drop:] = 0
            base[0] += drop

    source = torch.from_numpy(padded)
    scale = 1.0 / (len(flips) * len(runners))
    with torch.inference_mode():
        for number, group in enumerate(groups):
            report(progress, span[0] + (span[1] - span[0]) * number / len(groups),
                   f"window {number * batch + 1}/{len(slicers)}", cancel)
            if sink is not None:
                hand_over(_first_row(group[0]))
            windows = torch.stack([source[(slice(None), *where)] for where in group])
            summed = None
            for run in runners:
                for axes in flips:
                    dims = [a + 2 for a in axes]
                    flipped = torch.flip(windows, dims) if dims else windows
                    out = run(flipped).float()
                    out = torch.flip(out, dims) if dims else out
                    summed = out if summed is None else summed + out
            summed *= scale
            for index, where in enumerate(group):
                local = (_shift_rows(where[0], base[0]), *where[1:])
                logits[(slice(None), *local)] += summed[index] * weights_window
                weights[local] += weights_window
    if sink is not None:
        hand_over(shape[0])
        return None
    logits /= weights
    return logits[(slice(None), *unpad[1:])].numpy()


def _first_row(where: tuple) -> int:
    return where[0] if isinstance(where[0], int) else where[0].start


def _shift_rows(first: int | slice, base: int) -> int | slice:
    return first - base if isinstance(first, int) else slice(first.start - base, first.stop - base)


# ---------------------------------------------------------------------------------------------- backends


def choose_backend(model: NnunetModel, backend: str, passes: int) -> str:
    """The user's backend (checked), or for ``auto``: the checked int8 networks when the model has them, else
    OpenVINO when installed and the work repays the conversion (bf16 on CPUs with bf16 matrix units, else f32),
    else torch-bf16 where bf16 is native, else torch."""
    import importlib.util

    if backend not in BACKENDS:
        raise InputError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    openvino = model.device == "cpu" and importlib.util.find_spec("openvino") is not None
    if backend.startswith("openvino") and not openvino:
        raise InputError(f"backend {backend} needs the openvino package and the CPU device (pip install openvino)")
    int8 = int8_ready(model)
    if backend == "openvino-int8" and not int8:
        raise InputError(f"{model.folder}: has no int8 networks that agree with fp32; run 'segtoolkit quantize -m "
                         "MODEL IMAGE...' on a few typical images, or choose another backend")
    if backend != "auto":
        return backend
    if openvino and int8:
        return "openvino-int8"
    converted = openvino and all(_openvino_cached(model, i) for i in range(len(model.networks)))
    if openvino and (converted or passes >= OPENVINO_MIN_PASSES):
        # nnU-Net's own predictor runs its networks in reduced precision (autocast) on GPUs, so bf16 is how these
        # models are normally served; on a CPU only matrix units (AMX) make it pay: 3.6x faster than f32 there,
        # slower than f32 without them (Zen 4 AVX-512 bf16).
        return "openvino-bf16" if has_bf16_matrix_units() else "openvino"
    return "torch-bf16" if bf16_supported(model.device) else "torch"


def fold_key(model: NnunetModel, index: int) -> str:
    """SHA-256 of one fold's weights file (computed once per loaded model): keys the OpenVINO cache."""
    key = ("sha256", index)
    if key not in model.runtime:
        model.runtime[key] = file_sha256(model.fold_files[index])
    return model.runtime[key]


def _window_shape(model: NnunetModel) -> list[int]:
    return [1, len(model.channels), *model.patch]


def _openvino_cached(model: NnunetModel, index: int) -> bool:
    from ..backends import cached_openvino_xml

    return cached_openvino_xml(fold_key(model, index), _window_shape(model)).is_file()


def runners(model: NnunetModel, backend: str) -> list[Callable]:
    """One callable per fold that maps a torch batch of windows to logits on the chosen backend."""
    import torch

    key = (backend, torch.get_num_threads())
    if key in model.runtime:
        return model.runtime[key]
    if backend in ("torch", "torch-bf16"):
        autocast = backend == "torch-bf16"

        def make(network):
            def run(windows):
                with torch.autocast(model.device, dtype=torch.bfloat16, enabled=autocast):
                    return network(windows.to(model.device)).float().cpu()
            return run
        made = [make(network) for network in model.networks]
    elif backend in ("openvino", "openvino-bf16"):
        precision = openvino_precision(backend)
        made = [compile_for_cpu(convert_to_openvino(network, _window_shape(model), fold_key(model, index)), precision)
                for index, network in enumerate(model.networks)]
    else:
        made = [compile_for_cpu(read_openvino(int8_file(model, index), "run 'segtoolkit quantize' again"))
                for index in range(len(model.networks))]
    model.runtime[key] = made
    return made


def int8_file(model: NnunetModel, index: int) -> Path:
    return model.fold_files[index].parent / INT8_FILE


def int8_ready(model: NnunetModel) -> bool:
    """Whether every fold in use has an accepted int8 network made from its current weights."""
    from ....io.json_files import read_json

    for index in range(len(model.networks)):
        description = int8_file(model, index).with_name(INT8_JSON)
        if not description.is_file():
            return False
        entry = read_json(description, "corrupt int8 description", "run 'segtoolkit quantize' again")
        if not (isinstance(entry, dict) and entry.get("accepted") and entry.get("weights_sha256") ==
                fold_key(model, index) and int8_file(model, index).is_file()
                and int8_file(model, index).with_suffix(".bin").is_file()):
            return False
    return True


# ---------------------------------------------------------------------------------------------- prediction


def estimate_memory_bytes(model: NnunetModel, image: sitk.Image, probabilities: bool = False) -> int:
    """Peak memory of :func:`predict_nnunet`: the input channels (float32, twice while cropping), the working
    grid's data, weights and logits (a band of rows when they stream), and on the input grid two float planes of
    one class plus the labels (all classes when probabilities are asked for)."""
    size = image.GetSize()
    spacing = list(reversed(image.GetSpacing())) if len(size) == 3 else [1.0] + list(reversed(image.GetSpacing()))
    input_voxels = math.prod(size)
    transpose = model.plans.get("transpose_forward", [0, 1, 2])
    spacing = [spacing[t] for t in transpose]
    shape = [list(reversed(size)) if len(size) == 3 else [1, *reversed(size)]][0]
    shape = [shape[t] for t in transpose]
    target = [float(s) for s in model.config["spacing"]]
    if len(target) < 3:
        target = [spacing[0]] + target
    patch = [1] * (3 - len(model.patch)) + model.patch
    sizes = [max(int(round(o / t * n)), p) for o, t, n, p in zip(spacing, target, shape, patch)]
    working = math.prod(sizes)
    channels, classes = len(model.channels), len(model.labels)
    on_input = input_voxels * (4 * channels * 2 + 4 * 2 + 2) + (input_voxels * 4 * classes if probabilities else 0)
    # logits: a band of rows about 1.5 windows deep when they stream to the input grid (InputGridLabels)
    kwargs = _resampling_kwargs(model.config, "resampling_fn_probabilities_kwargs", order=1)
    axis = separate_axis(kwargs["force_separate_z"], target, spacing, kwargs["threshold"])
    streams = resamples_band_by_band(kwargs["order"], kwargs["order_z"], axis)
    band = min(1.0, (1.5 * (8 if model.two_d else patch[0]) + 3) / sizes[0]) if streams else 1.0
    on_grid = working * 4 * (channels + 1) + working * band * 4 * classes
    return int(on_input + on_grid)


def check_memory(model: NnunetModel, image: sitk.Image, probabilities: bool, name: str) -> None:
    from ..inference import available_memory_bytes

    need = estimate_memory_bytes(model, image, probabilities)
    free = available_memory_bytes()
    if free is not None and need > free:
        raise InputError(f"{name}: predicting this {'x'.join(map(str, image.GetSize()))} image needs about "
                         f"{need / 1e9:.1f} GB but only {free / 1e9:.1f} GB is free; crop the image to the region "
                         "of interest or free memory")


def check_input(model: NnunetModel, channels: list[sitk.Image], name: str) -> None:
    if len(channels) != len(model.channels):
        raise InputError(f"{name}: the model needs {len(model.channels)} channel(s) ({', '.join(model.channels)}) but "
                         f"{len(channels)} image(s) were given")
    for index, image in enumerate(channels):
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"{name}: channel {index} has several values per voxel; give grey-value images")
        if image.GetSize() != channels[0].GetSize():
            raise InputError(f"{name}: channel {index} has size {image.GetSize()}, channel 0 {channels[0].GetSize()}; "
                             "nnU-Net models need the channels on one grid")
    dimension = channels[0].GetDimension()
    if dimension not in (2, 3):
        raise InputError(f"{name}: is a {dimension}D image; the model takes 2D or 3D images")
    if not model.two_d and (dimension == 2 or channels[0].GetSize()[2] == 1):
        raise InputError(f"{name}: is a 2D image but this nnU-Net configuration ({model.configuration}) is 3D")


def predict_nnunet(model: NnunetModel, images: sitk.Image | Sequence[sitk.Image], *, tta: bool | None = None,
                   backend: str = "auto", probabilities: bool = False, uncertainty: bool = False,
                   largest_component: bool | None = None, keep_classes: Sequence[int] | None = None,
                   name: str = "input", progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None):
    """Segment one case with an nnU-Net model (see the module docstring). ``tta``: mirroring over the checkpoint's
    allowed axes (None: on when the checkpoint allows it, as nnU-Net). ``largest_component``: None = nnU-Net's stored
    post-processing, True = every label, False = none. ``keep_classes``: label values kept (others become
    background). Returns a :class:`~SegToolkitLib.methods.deep.inference.Prediction` on the input grid."""
    from ..inference import Prediction, normalised_entropy

    start = time.perf_counter()
    channels = [images] if isinstance(images, sitk.Image) else list(images)
    check_input(model, channels, name)
    check_memory(model, channels[0], probabilities or uncertainty, name)
    if tta and model.mirror_axes is None:
        raise InputError(f"{name}: this model was trained without mirroring ({model.folder.name}); drop --tta")
    flips = mirror_combinations(model.mirror_axes if (tta is None or tta) else None)
    report(progress, 0.01, "preprocessing", cancel)
    case = preprocess(model, channels)
    windows = len(window_slicers(padded_shape(case.data.shape[1:], model.patch), model.patch))
    chosen = choose_backend(model, backend, windows * len(flips) * len(model.networks))
    grid = InputGridLabels(model, case, case.data.shape[1:], probabilities or uncertainty, cancel)
    logits = sliding_window_logits(model, case.data, runners(model, chosen), flips, progress, cancel,
                                   sink=grid if grid.streams else None)
    del case.data
    report(progress, 0.86, "resampling to the input grid", cancel)
    if logits is not None:  # a resampling that cannot go band by band: all at once, as nnU-Net
        grid.take_whole(logits)
        del logits
    labels, probs = grid.result(case, model)
    labels = apply_postprocessing(labels, model, largest_component)
    if keep_classes is not None:
        labels[~np.isin(labels, [0, *keep_classes])] = 0
    reference = channels[0]
    result = Prediction(LabelMap(_image_like(labels, reference), model.label_table.covering(model.class_values[1:])),
                        backend=chosen)
    if probs is not None and probabilities:
        foreground = np.moveaxis(probs[1:], 0, -1)
        result.probabilities = _image_like(foreground if len(model.labels) > 2 else foreground[..., 0], reference,
                                           vector=len(model.labels) > 2)
    if probs is not None and uncertainty:
        result.uncertainty = _image_like(normalised_entropy(probs).astype(np.float32), reference)
    result.seconds = time.perf_counter() - start
    report(progress, 1.0, "done", cancel)
    return result


def resamples_band_by_band(order: int, order_z: int, axis: int | None, same_rows: bool = False) -> bool:
    """Whether nnU-Net's probability resampling is local along the first axis, so that output rows can be made
    from a band of finished working-grid rows: no spline prefilter, or the low-resolution axis (if any) first
    with nearest-neighbour or unchanged rows."""
    return (axis is None and order <= 1) or (axis == 0 and (same_rows or order_z == 0))


class InputGridLabels:
    """Labels (and softmax probabilities when asked) on the cropped input grid, made from the working grid's logits
    row band by row band as they are finished (a sink of :func:`sliding_window_logits`): each band of output rows
    resampled class by class (linear, nnU-Net's anisotropy rule), the label of the highest kept so far. Streaming
    needs a resampling that is local along the first axis (no spline prefilter, the low-resolution axis, if any,
    first); otherwise (:attr:`streams` False) the whole logits are resampled at once as nnU-Net does."""

    OUTPUT_VOXELS = 1 << 23  # output voxels resampled at a time (bounds the temporaries)

    def __init__(self, model: NnunetModel, case: Preprocessed, working_shape: Sequence[int], probabilities: bool,
                 cancel: CancelToken | None = None):
        kwargs = _resampling_kwargs(model.config, "resampling_fn_probabilities_kwargs", order=1)
        self.order, self.order_z = kwargs["order"], kwargs["order_z"]
        self.axis = separate_axis(kwargs["force_separate_z"], case.working_spacing, case.spacing, kwargs["threshold"])
        self.source_shape = tuple(int(s) for s in working_shape)
        self.shape = tuple(case.shape_after_cropping)
        self.classes = len(model.labels)
        self.cancel = cancel
        self.labels = np.zeros(self.shape, dtype=np.uint8 if self.classes <= 256 else np.uint16)
        self.kept = np.empty((self.classes, *self.shape), dtype=np.float32) if probabilities else None
        self.streams = self.source_shape == self.shape or resamples_band_by_band(
            self.order, self.order_z, self.axis, same_rows=self.source_shape[0] == self.shape[0])
        # the source rows each output row reads (as scikit-image/ndimage zoom with grid_mode and nnU-Net's
        # separate-axis resampling place them): floor and floor + 1 of its position, clamped at the edges
        scale = self.source_shape[0] / self.shape[0]
        self.positions = scale * (np.arange(self.shape[0]) + 0.5) - 0.5
        low = np.floor(self.positions).astype(int)
        self.low = np.clip(low, 0, self.source_shape[0] - 1)
        self.high = np.clip(low + 1, 0, self.source_shape[0] - 1)
        self.next = 0

    def __call__(self, rows: Callable[[int, int, int], np.ndarray], final: int) -> int:
        """Output rows whose source rows lie before ``final`` are made; answers the first source row still needed."""
        done = final >= self.source_shape[0]
        if not self.streams and not done:
            return 0
        end = self.shape[0] if done else int(np.searchsorted(self.high, final, side="left"))
        step = max(1, self.OUTPUT_VOXELS // max(1, math.prod(self.shape[1:])))
        for first in range(self.next, end, step if self.streams else self.shape[0]):
            self._make(rows, first, min(end, first + step) if self.streams else end)
        self.next = max(self.next, end)
        return int(self.low[self.next]) if self.next < self.shape[0] else final

    def take_whole(self, logits: np.ndarray) -> None:
        """All output rows from whole working-grid logits ``(classes, *working shape)``."""
        self(lambda index, lo, hi: logits[index, lo:hi], logits.shape[1])

    def _make(self, rows: Callable, first: int, last: int) -> None:
        lo, hi = (int(self.low[first]), int(self.high[last - 1]) + 1) if self.streams else (0, self.source_shape[0])
        best = None
        for index in range(self.classes):
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()
            channel = self._resample(rows(index, lo, hi), lo, first, last)
            if self.kept is not None:
                self.kept[index, first:last] = channel
            if best is None:
                best = np.array(channel, dtype=np.float32)
            else:
                higher = channel > best
                self.labels[first:last][higher] = index
                np.maximum(best, channel, out=best)

    def _resample(self, block: np.ndarray, lo: int, first: int, last: int) -> np.ndarray:
        """Output rows [first, last) from the source rows [lo, lo + len(block))."""
        from scipy.ndimage import affine_transform
        from skimage.transform import resize

        if self.source_shape == self.shape:
            return block[first - lo:last - lo]
        if first == 0 and last == self.shape[0] and lo == 0 and len(block) == self.source_shape[0]:
            return resample_channel(block, self.shape, self.order, self.axis, self.order_z)  # all at once
        if self.axis is None:  # zoom (grid mode, edge) of a slab: the same positions, offset to the slab's rows
            scale = [s / n for s, n in zip(self.source_shape, self.shape)]
            offset = [scale[0] * (first + 0.5) - 0.5 - lo] + [s * 0.5 - 0.5 for s in scale[1:]]
            return affine_transform(block, scale, offset, output_shape=(last - first, *self.shape[1:]),
                                    order=self.order, mode="nearest", prefilter=False)
        in_plane = np.stack([resize(row, self.shape[1:], self.order, mode="edge", anti_aliasing=False)
                             for row in block]).astype(np.float32, copy=False)
        if self.source_shape[0] == self.shape[0]:
            return in_plane[first - lo:last - lo]
        picked = np.clip(np.floor(self.positions[first:last] + 0.5), 0, self.source_shape[0] - 1).astype(int)
        return in_plane[picked - lo]

    def result(self, case: Preprocessed, model: NnunetModel) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (and probabilities) on the input array grid: the crop and the transpose undone."""
        kept = self.kept
        if kept is not None:
            kept -= kept.max(0, keepdims=True)
            np.exp(kept, out=kept)
            kept /= kept.sum(0, keepdims=True)
        box = tuple(slice(lo, hi) for lo, hi in case.bbox)
        full = np.zeros(case.shape_before_cropping, dtype=self.labels.dtype)
        full[box] = self.labels
        backward = model.plans.get("transpose_backward", [0, 1, 2])
        full = np.ascontiguousarray(full.transpose(backward))
        probs = None
        if kept is not None:
            probs = np.zeros((self.classes, *case.shape_before_cropping), dtype=np.float32)
            probs[0] = 1.0
            probs[(slice(None), *box)] = kept
            probs = np.ascontiguousarray(probs.transpose([0, *[b + 1 for b in backward]]))
        return full, probs


def logits_to_input_grid(model: NnunetModel, logits: np.ndarray, case: Preprocessed, probabilities: bool,
                         cancel: CancelToken | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (and softmax probabilities when asked) on the input array grid from whole working-grid logits
    (see :class:`InputGridLabels`)."""
    sink = InputGridLabels(model, case, logits.shape[1:], probabilities, cancel)
    sink.take_whole(logits)
    return sink.result(case, model)


def apply_postprocessing(labels: np.ndarray, model: NnunetModel, largest_component: bool | None) -> np.ndarray:
    """nnU-Net's stored steps (labels kept as their largest component together), or per label (True), or none."""
    if largest_component is False:
        return labels
    steps = model.postprocessing if largest_component is None else [[v] for v in model.class_values[1:]]
    for values in steps:
        labels = keep_largest_together(labels, values)
    return labels


def keep_largest_together(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """Voxels of ``values`` outside the largest connected component (full connectivity) of their union become
    background (ties: every largest component stays), as nnU-Net's post-processing."""
    from scipy import ndimage

    mask = np.isin(labels, list(values))
    if not mask.any():
        return labels
    components, count = ndimage.label(mask, structure=np.ones((3,) * labels.ndim, dtype=bool))
    if count <= 1:
        return labels
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    keep = np.flatnonzero(sizes == sizes.max())
    labels = labels.copy()
    labels[mask & ~np.isin(components, keep)] = 0
    return labels


def _image_like(array: np.ndarray, reference: sitk.Image, vector: bool = False) -> sitk.Image:
    """An image of ``array`` (in the input's array order) on the reference grid (2D inputs: the leading axis of
    length 1 dropped)."""
    if reference.GetDimension() == 2:
        array = array[0]
    image = sitk.GetImageFromArray(array, isVector=vector)
    image.CopyInformation(reference)
    return image
