"""Inference: the training preprocessing, sliding-window prediction with Gaussian blending, optional mirroring
test-time augmentation, and the result resampled back onto the exact input grid.

Python API::

    model = load_model("MODEL_DIR")                      # once; then predict many images
    result = predict(model, image, tta=True, probabilities=True, progress=callback, cancel=token)
    result.label_map, result.probabilities, result.uncertainty

Backends: ``torch`` (fp32), ``torch-bf16`` (bfloat16 autocast on CPUs with native bf16), ``openvino`` (the network
converted once per window shape, about 6 s, and cached under ``$SEGTOOLKIT_CACHE`` or ``~/.cache/segtoolkit``; run
in f32, or in bf16 as ``openvino-bf16``) and ``openvino-int8`` (the model's own int8 network, made after training
and kept only when its labels agree with fp32, see :mod:`.quantization`). OpenVINO runs two windows at a time on two
streams of one core each. Per 96x96x48 window of a 5.7 M-parameter U-Net on 2 Zen 4 cores (AVX-512 bf16 and VNNI, no
AMX): torch 0.61 s, torch-bf16 0.44 s, openvino 0.26 s (its bf16 mode 0.36 s), int8 about 0.08-0.18 s depending on
how many layers its check kept in f32. ``auto`` on CPU picks the int8 network when the model has one, else openvino
when it is installed and the conversion is cached or pays off (at least 16 windows), else torch-bf16 where bf16 is
native, else torch; on CPUs with bf16 matrix units (AMX) openvino-bf16 instead of openvino (0.30 against 0.81 s per
window on 2 Sapphire Rapids cores). Numbers against bare MONAI are in ``benchmarks/RESULTS.md``
(``benchmarks/deep_speed.py``).

CT models predict only the whole-array windows that reach the body (``content_box``): the windows stay where
MONAI's whole-array sliding window puts them, so the labels inside the body are the same as without the crop.

Probabilities are mapped back and reduced to labels slab by slab, so memory stays near the input's own size (2.6 GB
peak for a 512x512x300 CT). The model's default clean-up (largest component, hole filling per label) comes from its
training labels (``postprocessing`` in model.json) and works inside each label's bounding box. Before it, on the
working grid, a label split into pieces keeps its most certain one; a label that was convex in every 2D training
label (a fetal head) keeps a convex piece, cut from a region the network merged with a neighbour where needed.
"""

from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ...errors import InputError
from ...io import LabelMap
from ...io.file_checks import available_memory_bytes
from ...measurement.shape import solidity
from ...progress import CancelToken, ProgressCallback, report
from .backends import (
    BACKENDS,
    WINDOW_BATCH,
    bf16_supported,
    cached_openvino_xml,
    compile_for_cpu,
    convert_to_openvino,
    has_bf16_matrix_units,
    openvino_precision,
    read_openvino,
    resolve_device,
)
from .dataset import _onto_grid
from .model_package import DeepModel, int8_path, int8_ready, load_model, weights_sha256
from .planning import training_memory_bytes
from .preprocessing import plan_grid, preprocess_images, resample, same_grid

UNCERTAINTY_METHODS = ("entropy", "disagreement")
OVERLAP = 0.5
# Converting (about 6 s, cached) costs about 16 fp32 or 32 bf16 windows of the same network: it pays off within
# the first image or two of that size.
OPENVINO_MIN_WINDOWS = 16
# A class whose every training label (2D) is at least this convex (solidity: its pixels over the pixels in the convex
# hull of their centres) is "convex"; predicted less convex than that, it has been merged with a neighbour, and the
# largest convex piece at the lowest probability level that splits one off (of at least MIN_PIECE_SHARE of the
# region) is kept instead.
CONVEX_SOLIDITY = 0.95
SPLIT_LEVELS = (0.6, 0.7, 0.8, 0.9, 0.95)
MIN_PIECE_SHARE = 0.1
SLAB_VOXELS = 1 << 22  # input-grid voxels resampled at a time when mapping results back


@dataclass
class Prediction:
    """A prediction on the input grid: labels, optional class probabilities (one component per foreground class)
    and optional uncertainty (0 = certain): the normalised entropy of the class probabilities (1 = uniform), or
    the disagreement between test-time augmentation passes (the fraction of passes whose label differs from the
    final one)."""

    label_map: LabelMap
    probabilities: sitk.Image | None = None
    uncertainty: sitk.Image | None = None
    backend: str = "torch"
    seconds: float = 0.0


def estimate_memory_bytes(model: DeepModel, image: sitk.Image, probabilities: bool = False,
                          uncertainty: bool = False, votes: bool = False) -> int:
    """Peak memory of :func:`predict` for ``image``: input and output volumes, the working-grid arrays of the
    sliding window (input, blended output and weights per class) and one window's activations."""
    plan = model.plan
    classes = len(model.class_values)
    channels = len(model.channels)
    input_voxels = math.prod(image.GetSize())
    grid = plan_grid(image, plan)
    work_voxels = math.prod(grid.GetSize())
    on_input = input_voxels * 4 * (channels + 3 + (classes - 1 if probabilities else 0) + (1 if uncertainty else 0))
    on_grid = work_voxels * 4 * (2 * channels + (4 if votes else 2) * classes + 2)
    window = training_memory_bytes(plan["patch_size"], 1, plan["network"]["strides"], plan["network"]["filters"]) / 8
    return int(on_input + on_grid + window)


def check_memory(model: DeepModel, image: sitk.Image, probabilities: bool, uncertainty: bool, name: str,
                 votes: bool = False) -> None:
    """Raise :class:`InputError` before allocating when the estimate exceeds the free memory."""
    need = estimate_memory_bytes(model, image, probabilities, uncertainty, votes)
    free = available_memory_bytes()
    if free is not None and need > free:
        raise InputError(f"{name}: predicting this {'x'.join(map(str, image.GetSize()))} image needs about "
                         f"{need / 1e9:.1f} GB but only {free / 1e9:.1f} GB is free; crop the image to the region "
                         "of interest or free memory")


def choose_backend(backend: str, device: str, windows: int = 0, converted: bool = False,
                   int8: bool = False) -> str:
    """The backend to run: the user's choice (checked), or for ``auto`` the fastest whose labels agree with fp32:
    the model's checked int8 network (``int8``), else OpenVINO when it pays off (bf16 on CPUs with bf16 matrix
    units, else f32), else torch."""
    if backend not in BACKENDS:
        raise InputError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    openvino = device == "cpu" and importlib.util.find_spec("openvino") is not None
    if backend.startswith("openvino") and not openvino:
        raise InputError(f"backend {backend} needs the openvino package and the CPU device (pip install openvino)")
    if backend == "openvino-int8" and not int8:
        raise InputError("backend openvino-int8: this model has no int8 network that agrees with fp32; run "
                         "'segtoolkit quantize' on it, or choose another backend")
    if backend != "auto":
        return backend
    if openvino and int8:
        return "openvino-int8"
    if openvino and (converted or windows >= OPENVINO_MIN_WINDOWS):
        # as for nnU-Net models (formats/nnunet.py): with AMX, bf16 took 0.30 s per 96x96x48 window of a 16-256
        # filter U-Net against 0.81 s in f32 (2 Sapphire Rapids cores, 2 streams); without matrix units it is slower
        return "openvino-bf16" if has_bf16_matrix_units() else "openvino"
    return "torch-bf16" if bf16_supported(device) else "torch"


def predict(model: DeepModel | Path | str, images: sitk.Image | Sequence[sitk.Image], *, tta: bool | None = None,
            probabilities: bool = False, uncertainty: bool = False, uncertainty_method: str = "entropy",
            largest_component: bool | None = None, fill_holes: bool | None = None, device: str = "auto",
            backend: str = "auto", name: str = "input", progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> Prediction:
    """Segment one case (an image, or its channels in the model's order) with a model (folder or loaded).
    ``tta``: mirroring test-time augmentation; None = the model's default (the plan's ``inference.tta``: on for 2D
    models). ``largest_component`` / ``fill_holes``: True = every label, False = none, None = the model's defaults
    (``postprocessing`` in model.json: the labels that were one solid piece in every training case).
    ``uncertainty_method``: ``entropy`` of the class probabilities, or ``disagreement`` between the TTA passes
    (needs ``tta``)."""
    start = time.perf_counter()
    if not isinstance(model, DeepModel):
        model = load_model(model, resolve_device(device))
    channels = [images] if isinstance(images, sitk.Image) else list(images)
    _check_input(model, channels, name)
    if tta is None:
        tta = bool(model.plan.get("inference", {}).get("tta", False))
    votes = uncertainty and _uses_votes(uncertainty_method, tta)
    check_memory(model, channels[0], probabilities, uncertainty, name, votes)
    int8 = backend in ("auto", "openvino-int8") and model.device == "cpu" and int8_ready(model)
    choose_backend(backend, model.device, int8=int8)  # reject a bad choice before any work
    report(progress, 0.02, "preprocessing", cancel)
    reference = channels[0]
    channels = [reference] + [_onto_grid(c, reference) for c in channels[1:]]
    array, grid = preprocess_images(channels, model.plan)
    box = content_box(array, model.plan)
    cropped = array[(slice(None),) + box]
    roi = _roi(model.plan)
    chosen = choose_backend(backend, model.device, _window_count(cropped.shape[1:], roi, overlap(model.plan)),
                            _openvino_xml(model, [1, array.shape[0]] + _network_window(model.plan)).is_file(), int8)
    report(progress, 0.08, "sliding window", cancel)
    classes = len(model.class_values)
    blended = np.zeros(((2 if votes else 1) * classes,) + array.shape[1:], dtype=np.float32)
    blended[0] = 1.0  # outside the content box: background, certain (every pass votes for it)
    if votes:
        blended[classes] = 1.0
    blended[(slice(None),) + box] = sliding_window(model, cropped, tta, chosen, progress, cancel, votes)
    del array, cropped
    disagreement = None
    if votes:
        blended, vote_fractions = blended[:classes], blended[classes:]
        final = blended.argmax(0)[None]
        disagreement = 1.0 - np.take_along_axis(vote_fractions, final, 0)[0]
        del vote_fractions, final
    keep_most_certain_components(blended, _largest_component_indices(model, largest_component),
                                 _convex_indices(model, largest_component))
    report(progress, 0.9, "resampling to the input grid", cancel)
    result = _to_input_grid(model, blended, grid, reference, probabilities, uncertainty, disagreement)
    result.label_map = postprocess(result.label_map, model, largest_component, fill_holes)
    result.backend = chosen
    result.seconds = time.perf_counter() - start
    report(progress, 1.0, "done", cancel)
    return result


def _uses_votes(method: str, tta: bool) -> bool:
    """True for the TTA-disagreement uncertainty (checked: it needs several passes)."""
    if method not in UNCERTAINTY_METHODS:
        raise InputError(f"uncertainty method {method!r}: choose one of {', '.join(UNCERTAINTY_METHODS)}")
    if method == "disagreement" and not tta:
        raise InputError("the disagreement uncertainty compares test-time augmentation passes: add --tta")
    return method == "disagreement"


def overlap(plan: dict) -> float:
    """Sliding-window overlap: the plan's ``inference.overlap`` (editable), else 0.5 as nnU-Net."""
    value = float(plan.get("inference", {}).get("overlap", OVERLAP))
    if not 0.0 <= value < 1.0:
        raise InputError(f"plan inference.overlap {value}: use a fraction in [0, 1)")
    return value


def content_box(array: np.ndarray, plan: dict) -> tuple[slice, ...]:
    """The part of a CT working-grid array to predict: the whole-array sliding windows that reach the voxels above
    the lower clip of the normalisation (air, and tissue darker than any annotated structure, is constant there).
    The box starts and ends on that window grid, so the windows inside it are exactly the whole-array windows and
    every voxel of the content gets the same blended probabilities as without the crop; only windows that see
    nothing but air are skipped. On by default for CT models (``inference.crop_to_content`` false in the plan turns
    it off); other modalities: the whole array."""
    full = tuple(slice(0, size) for size in array.shape[1:])
    scheme = plan["normalisation"][0]
    if scheme["scheme"] != "ct" or not plan.get("inference", {}).get("crop_to_content", True):
        return full
    floor = (scheme["clip"][0] - scheme["mean"]) / scheme["std"]
    inside = array[0] > floor + 1e-3
    if not inside.any():
        return full
    box = []
    step = overlap(plan)
    for axis, (size, window) in enumerate(zip(array.shape[1:], _roi(plan))):
        present = np.flatnonzero(inside.any(axis=tuple(a for a in range(inside.ndim) if a != axis)))
        box.append(_windows_reaching(size, window, step, int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def window_starts(size: int, window: int, step: float) -> list[int]:
    """Where MONAI's ``sliding_window_inference`` starts its windows along one axis (the last one pulled back to
    end at the border)."""
    if size <= window:
        return [0]
    interval = max(1, int(window * (1 - step)))
    count = math.ceil((size - window) / interval) + 1
    return [min(i * interval, size - window) for i in range(count)]


def _windows_reaching(size: int, window: int, step: float, first: int, end: int) -> slice:
    """The span of the whole-axis windows that overlap ``[first, end)``."""
    if size <= window:
        return slice(0, size)
    starts = [s for s in window_starts(size, window, step) if s < end and s + window > first]
    return slice(starts[0], starts[-1] + window)


def _check_input(model: DeepModel, channels: list[sitk.Image], name: str) -> None:
    expected = len(model.channels)
    if len(channels) != expected:
        raise InputError(f"{name}: the model needs {expected} channel(s) ({', '.join(model.channels)}) but "
                         f"{len(channels)} image(s) were given")
    for index, image in enumerate(channels):
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"{name}: channel {index} has several values per voxel; give grey-value images")
    dimension = channels[0].GetDimension()
    if dimension not in (2, 3):
        raise InputError(f"{name}: is a {dimension}D image; the model takes 2D or 3D images")
    if model.plan["configuration"] == "3d" and (dimension == 2 or channels[0].GetSize()[2] == 1):
        raise InputError(f"{name}: is a 2D image but this model is a 3D model; give a volume or use a 2D model")


def sliding_window(model: DeepModel, array: np.ndarray, tta: bool, backend: str,
                   progress: ProgressCallback | None = None, cancel: CancelToken | None = None, votes: bool = False,
                   network=None) -> np.ndarray:
    """Class probabilities ``(classes, D, H, W)`` on the working grid (Gaussian-blended windows); with ``votes``
    followed by as many channels holding the fraction of TTA passes that chose each class. ``network``: a compiled
    network to run instead of the backend's (the int8 check before it is saved)."""
    import torch
    from monai.inferers import sliding_window_inference

    two_d = model.plan["configuration"] == "2d"
    roi = _roi(model.plan)
    step = overlap(model.plan)
    total = _window_count(array.shape[1:], roi, step) or 1
    done = [0]
    flips = _mirror_axes(2 if two_d else 3) if tta else [()]
    autocast = backend == "torch-bf16"
    device = model.device
    if network is None:
        network = _backend_network(model, backend, array.shape[0])

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        report(progress, 0.08 + 0.8 * done[0] / total, f"window {done[0] + 1}/{total}", cancel)
        x = windows[:, :, 0] if two_d else windows
        summed = None
        for axes in flips:
            flipped = torch.flip(x, [a + 2 for a in axes]) if axes else x
            with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
                logits = network(flipped)
            probs = torch.softmax(logits.float(), 1)
            probs = torch.flip(probs, [a + 2 for a in axes]) if axes else probs
            if votes:  # each pass's own label, one-hot, next to its probabilities
                probs = torch.cat([probs, torch.zeros_like(probs).scatter_(1, probs.argmax(1, keepdim=True), 1.0)], 1)
            summed = probs if summed is None else summed + probs
        done[0] += windows.shape[0]
        out = summed / len(flips)
        return out.unsqueeze(2) if two_d else out

    inputs = torch.from_numpy(array).unsqueeze(0)
    with torch.inference_mode():
        out = sliding_window_inference(inputs, roi, 2 * WINDOW_BATCH if two_d else WINDOW_BATCH, predictor,
                                       overlap=step, mode="gaussian", sw_device=device, device="cpu")
    return out[0].numpy()


def _backend_network(model: DeepModel, backend: str, channels: int):
    if backend in ("openvino", "openvino-bf16"):
        return openvino_network(model, [1, channels] + _network_window(model.plan), openvino_precision(backend))
    if backend == "openvino-int8":
        return int8_network(model)
    return model.network


def _network_window(plan: dict) -> list[int]:
    """The network's input window (array order, without batch and channel)."""
    return list(reversed(plan["patch_size"]))


def _roi(plan: dict) -> list[int]:
    """The sliding-window region on the (C, D, H, W) array: one slice deep for 2D networks."""
    window = _network_window(plan)
    return [1] + window if plan["configuration"] == "2d" else window


def openvino_network(model: DeepModel, window: list[int], precision: str = "f32"):
    """The network compiled by OpenVINO for one window shape, as a callable on torch tensors (batch of windows).
    Conversion takes seconds, so the converted model is cached on disk, keyed by the weights and the window shape;
    the compiled network is kept with the loaded model for its next predictions."""
    import torch

    key = ("openvino", str(_openvino_xml(model, window)), torch.get_num_threads(), precision)
    if key not in model.runtime:
        model.runtime[key] = compile_for_cpu(openvino_model(model, window), precision)
    return model.runtime[key]


def int8_network(model: DeepModel):
    """The model's int8 network (see :mod:`.quantization`) compiled for the CPU, kept with the loaded model."""
    import torch

    key = ("openvino-int8", torch.get_num_threads())
    if key not in model.runtime:
        converted = read_openvino(int8_path(model), "run 'segtoolkit quantize' again or predict with --backend "
                                  "openvino")
        model.runtime[key] = compile_for_cpu(converted)
    return model.runtime[key]


def openvino_model(model: DeepModel, window: list[int]):
    """The network converted to an OpenVINO model for one window shape (read from the cache when it is there)."""
    return convert_to_openvino(model.network, window, weights_sha256(model))


def _openvino_xml(model: DeepModel, window: list[int]) -> Path:
    """Where the converted network for this model and window shape is cached."""
    return cached_openvino_xml(weights_sha256(model), window)


def _window_count(shape: Sequence[int], roi: Sequence[int], step: float = OVERLAP) -> int:
    return math.prod(len(window_starts(size, window, step)) for size, window in zip(shape, roi))


def _mirror_axes(dims: int) -> list[tuple[int, ...]]:
    axes = list(range(dims))
    return [combo for r in range(dims + 1) for combo in combinations(axes, r)]


def _to_input_grid(model: DeepModel, blended: np.ndarray, grid: sitk.Image, reference: sitk.Image,
                   probabilities: bool, uncertainty: bool, disagreement: np.ndarray | None = None) -> Prediction:
    """Class probabilities resampled (linear) onto the input grid slab by slab and reduced to labels there, so
    that input-sized float arrays exist only for requested probability/uncertainty outputs. The uncertainty is
    the entropy of the resampled probabilities, or ``disagreement`` (working grid) resampled alongside them."""
    classes = len(model.class_values)
    two_d = reference.GetDimension() == 2
    lookup = np.asarray(model.class_values)
    lookup = lookup.astype(np.uint8 if lookup.max() < 256 else np.uint16)
    shape = tuple(reversed(reference.GetSize()))
    labels = np.empty(shape, dtype=lookup.dtype)
    kept = np.empty(shape + (classes - 1,), dtype=np.float32) if probabilities else None
    uncertain = np.empty(shape, dtype=np.float32) if uncertainty else None
    direct = same_grid(grid, reference)
    maps = blended if disagreement is None else np.concatenate([blended, disagreement[None]])
    sources = None if direct else [_on_grid(channel[0] if two_d else channel, grid) for channel in maps]
    depth = 1 if two_d else shape[0]
    step = depth if two_d else max(1, SLAB_VOXELS // (shape[1] * shape[2]))
    for first in range(0, depth, step):
        rows = slice(first, min(depth, first + step))
        if direct:
            values = list(maps[:, 0] if two_d else maps[:, rows])
        else:
            slab = reference if two_d else _slab(reference, first, rows.stop - first)
            resampled = [resample(source, slab, sitk.sitkLinear) for source in sources]  # alive while viewed
            values = [sitk.GetArrayViewFromImage(image) for image in resampled]
        target = ... if two_d else rows
        values, extra = values[:classes], values[classes:]
        labels[target] = lookup[first_argmax(values)]
        if kept is not None:
            kept[target] = np.stack(values[1:], -1)
        if uncertain is not None and disagreement is not None:
            uncertain[target] = np.clip(extra[0], 0.0, 1.0)
        elif uncertain is not None:
            uncertain[target] = normalised_entropy(np.stack(values))
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(reference)
    result = Prediction(LabelMap(label_image, model.labels.covering(model.class_values[1:])))
    if kept is not None:
        result.probabilities = sitk.GetImageFromArray(kept if classes > 2 else kept[..., 0], isVector=classes > 2)
        result.probabilities.CopyInformation(reference)
    if uncertain is not None:
        result.uncertainty = sitk.GetImageFromArray(uncertain)
        result.uncertainty.CopyInformation(reference)
    return result


def first_argmax(channels: Sequence[np.ndarray]) -> np.ndarray:
    """``np.stack(channels).argmax(0)`` (the first channel wins a tie) as uint8, without stacking: a few times
    faster on large volumes, where argmax along the first axis strides through memory."""
    best = np.array(channels[0], dtype=np.float32)
    index = np.zeros(best.shape, dtype=np.uint8 if len(channels) <= 256 else np.uint16)
    for number, channel in enumerate(channels[1:], start=1):
        higher = channel > best
        index[higher] = number
        np.maximum(best, channel, out=best)
    return index


def _on_grid(array: np.ndarray, grid: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.CopyInformation(grid)
    return image


def _slab(reference: sitk.Image, first: int, count: int) -> sitk.Image:
    """An empty image on slices ``first`` .. ``first + count - 1`` of a 3D reference grid."""
    size = reference.GetSize()
    slab = sitk.Image([size[0], size[1], count], sitk.sitkUInt8)
    slab.SetSpacing(reference.GetSpacing())
    slab.SetDirection(reference.GetDirection())
    slab.SetOrigin(reference.TransformIndexToPhysicalPoint((0, 0, first)))
    return slab


def model_postprocessing(model: DeepModel) -> dict:
    """The model's default clean-up: label values kept as their largest component / with holes filled."""
    settings = model.meta.get("postprocessing", {})
    return {"largest_component": [int(v) for v in settings.get("largest_component", [])],
            "fill_holes": [int(v) for v in settings.get("fill_holes", [])],
            "convex": [int(v) for v in settings.get("convex", [])]}


def _largest_component_indices(model: DeepModel, largest_component: bool | None) -> list[int]:
    """Class indices kept as one component (True = every label, False = none, None = the model's defaults)."""
    if largest_component is False:
        return []
    values = model.class_values[1:] if largest_component else model_postprocessing(model)["largest_component"]
    return [model.class_values.index(v) for v in values if v in model.class_values]


def _convex_indices(model: DeepModel, largest_component: bool | None) -> list[int]:
    """Class indices whose training labels were all convex (none when the clean-up is switched off)."""
    if largest_component is False:
        return []
    return [model.class_values.index(v) for v in model_postprocessing(model)["convex"] if v in model.class_values]


def normalised_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy over the class axis (first) divided by its maximum: 0 = certain, 1 = every class equally likely."""
    clipped = np.clip(probabilities, 1e-8, 1.0)
    return -(clipped * np.log(clipped)).sum(0) / math.log(len(probabilities))


def keep_most_certain_components(blended: np.ndarray, indices: Sequence[int], convex: Sequence[int] = ()) -> None:
    """On the working grid, before the largest-component clean-up: where a class has several components, keep
    the one with the most certain voxels (sum of 1 - normalised entropy) and hand the others to the next class
    (in place). A large region the network hesitates on (mirrored passes disagree, p ~ 0.7) then loses to a
    smaller confident one, as a placenta beside a small fetal head; keeping the largest would keep the wrong
    one. Classes in ``convex`` (convex in every training label) get :func:`keep_convex_component` on 2D images."""
    from scipy import ndimage

    if not indices:
        return
    winners = blended.argmax(0)
    certainty = None
    for index in indices:
        components, count = ndimage.label(winners == index)
        convex_2d = index in convex and blended.shape[1] == 1
        if count < (1 if convex_2d else 2):
            continue
        if certainty is None:
            certainty = 1.0 - normalised_entropy(blended)
        if convex_2d:
            keep_convex_component(blended, index, components, count, certainty)
            continue
        scores = ndimage.sum(certainty, components, range(1, count + 1))
        blended[index][(components > 0) & (components != int(np.argmax(scores)) + 1)] = 0.0


def keep_convex_component(blended: np.ndarray, index: int, components: np.ndarray, count: int,
                          certainty: np.ndarray) -> None:
    """A class convex in every training label (2D): a component clearly less convex than those labels has been
    merged with a neighbour the network took for the class (a small fetal head joined to a placenta, both above
    p = 0.5) and is cut down to its convex piece (:func:`convex_piece`) where one splits off; then the most certain
    convex candidate of at least :data:`MIN_PIECE_SHARE` of the largest component is kept (the most certain of all
    when there is none), and the rest is handed to the next class (in place). ``certainty``: 1 - normalised
    entropy of ``blended``."""
    largest = max(np.bincount(components.ravel())[1:])
    candidates = []
    for label in range(1, count + 1):
        component = components == label
        piece = component if solidity(component[0]) >= CONVEX_SOLIDITY else convex_piece(blended[index], component)
        is_convex = piece is not None and np.count_nonzero(piece) >= MIN_PIECE_SHARE * largest
        piece = component if piece is None else piece
        candidates.append((is_convex, float(certainty[piece].sum()), label, piece))
    keep = max(candidates, key=lambda candidate: candidate[:3])[3]
    blended[index][(components > 0) & ~keep] = 0.0


def convex_piece(probability: np.ndarray, region: np.ndarray) -> np.ndarray | None:
    """The largest component of ``region`` (one slice) above the lowest of :data:`SPLIT_LEVELS` at which one is
    convex and holds at least :data:`MIN_PIECE_SHARE` of the region; None when no level gives one."""
    from scipy import ndimage

    smallest = MIN_PIECE_SHARE * np.count_nonzero(region)
    for level in SPLIT_LEVELS:
        components, count = ndimage.label(region & (probability > level))
        sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
        for label in np.argsort(sizes)[::-1]:
            if sizes[label] < smallest:
                break
            piece = components == label + 1
            if solidity(np.squeeze(piece, 0) if piece.ndim == 3 else piece) >= CONVEX_SOLIDITY:
                return piece
    return None


def postprocess(label_map: LabelMap, model: DeepModel, largest_component: bool | None,
                fill_holes: bool | None) -> LabelMap:
    """Apply the requested clean-up (True = every label, False = none, None = the model's defaults)."""
    defaults = model_postprocessing(model)
    if largest_component is False and fill_holes is False:
        return label_map
    present = list(_label_boxes(sitk.GetArrayViewFromImage(label_map.image)))
    largest = present if largest_component else [] if largest_component is False else defaults["largest_component"]
    filled = present if fill_holes else [] if fill_holes is False else defaults["fill_holes"]
    if largest:
        label_map = keep_largest_components(label_map, largest)
    if filled:
        label_map = fill_label_holes(label_map, filled)
    return label_map


def _label_boxes(array: np.ndarray) -> dict[int, tuple[slice, ...]]:
    """Bounding box of every label value > 0 present in ``array`` (one pass): the clean-up works inside these."""
    from scipy import ndimage

    return {value: box for value, box in enumerate(ndimage.find_objects(array), start=1) if box is not None}


def keep_largest_components(label_map: LabelMap, values: Sequence[int] | None = None) -> LabelMap:
    """Keep only the largest connected component of every label (or of ``values``; the rest becomes background)."""
    from scipy import ndimage

    array = sitk.GetArrayFromImage(label_map.image)
    boxes = _label_boxes(array)
    for value in boxes if values is None else [v for v in values if v in boxes]:
        region = array[boxes[value]]  # a view: components never reach outside the label's bounding box
        components, count = ndimage.label(region == value)
        if count > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            region[(components != int(np.argmax(sizes))) & (components > 0)] = 0
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(label_map.image)
    return LabelMap(image, label_map.labels)


def fill_label_holes(label_map: LabelMap, values: Sequence[int]) -> LabelMap:
    """Fill the holes of each label in ``values`` (enclosed background or other labels become that label); in 2D
    for images and one-slice volumes, in 3D otherwise."""
    from scipy import ndimage

    array = sitk.GetArrayFromImage(label_map.image)
    flat = array.shape[0] == 1
    boxes = _label_boxes(array)
    for value in [v for v in values if v in boxes]:
        region = array[boxes[value]]  # a hole lies inside the label's bounding box; outside it all is open
        mask = region == value
        filled = ndimage.binary_fill_holes(mask[0] if flat else mask).reshape(mask.shape)
        region[filled & ~mask] = value
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(label_map.image)
    return LabelMap(image, label_map.labels)
