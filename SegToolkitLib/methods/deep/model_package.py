"""The trained-model folder: ``model.json`` + ``model.safetensors`` (loading never unpickles anything).

``model.json`` holds ``format`` / ``format_version``, ``labels`` (value -> name and colour), ``class_values`` (the
label value of each network output channel), ``channels``, the full ``plan``, the ``network`` specification, a
``training`` summary, ``postprocessing`` (labels kept as their largest component / hole-filled / convex by default) and,
for 3D models, ``int8``: the check of the int8 network in ``network-int8.xml`` / ``.bin`` (OpenVINO IR; see
:mod:`.quantization`).
Training checkpoints (``checkpoint/``) use the same formats: safetensors + JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import InputError
from ...io import LabelTable, atomic_output, write_text_atomic
from ...io.json_files import interpreting, read_json, require
from .backends import publish

MODEL_FORMAT = "segtoolkit-deep-model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS = "model.safetensors"
CHECKPOINT = "checkpoint"
INT8_FILE = "network-int8.xml"
REQUIRED_KEYS = ("labels", "class_values", "channels", "plan", "network")


@dataclass
class DeepModel:
    """A loaded model: its description and the network (in evaluation mode, on ``device``)."""

    folder: Path
    meta: dict
    network: object
    device: str = "cpu"
    # per-process caches kept with the model, so several predictions hash and compile it once
    runtime: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def plan(self) -> dict:
        return self.meta["plan"]

    @property
    def class_values(self) -> list[int]:
        return [int(v) for v in self.meta["class_values"]]

    @property
    def channels(self) -> list[str]:
        return list(self.meta["channels"])

    @property
    def labels(self) -> LabelTable:
        return LabelTable.from_mapping(self.meta["labels"], str(self.folder / MODEL_JSON))

    @property
    def spatial_dims(self) -> int:
        return int(self.meta["network"]["spatial_dims"])


def save_model(folder: Path | str, network, meta: dict) -> Path:
    """Write the weights and ``model.json`` into ``folder`` (each file atomically; json last)."""
    from safetensors.torch import save_model as save_weights

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    document = {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, **meta, "weights": WEIGHTS}
    with atomic_output(folder / WEIGHTS) as tmp:  # checked complete before it is renamed into place
        save_weights(network, str(tmp))
    write_text_atomic(folder / MODEL_JSON, json.dumps(document, indent=1) + "\n")
    return folder


def read_model_json(folder: Path | str) -> dict:
    """``model.json`` of a model folder, checked; :class:`InputError` says what is wrong."""
    folder = Path(folder)
    path = folder / MODEL_JSON
    if not folder.is_dir():
        raise InputError(f"{folder}: model folder not found")
    if not path.is_file():
        raise InputError(f"{folder}: not a SegToolkit model folder ({MODEL_JSON} missing); train one with "
                         "'segtoolkit train'")
    meta = read_json(path, "corrupt model description", "re-train or copy the model again")
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise InputError(f"{path}: not a SegToolkit deep model (format {MODEL_FORMAT!r} expected)")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(f"{path}: model format version {version} is newer than this SegToolkit reads "
                         f"({FORMAT_VERSION}); update SegToolkit")
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing:
        raise InputError(f"{path}: incomplete model description (missing {', '.join(missing)})")
    with interpreting(path, "model description", "re-train or copy the model again"):
        require(isinstance(meta["network"], dict) and isinstance(meta["plan"], dict), "network and plan must be "
                "objects")
        require(isinstance(meta["class_values"], list) and all(isinstance(v, int) for v in meta["class_values"]),
                "class_values must be a list of label values")
        require(isinstance(meta["channels"], list) and len(meta["channels"]) > 0, "channels must be a list")
        LabelTable.from_mapping(meta["labels"], str(path))
        if len(meta["class_values"]) != meta["network"].get("out_channels"):
            raise InputError(f"{path}: class_values and the network's output channels disagree")
    return meta


def inside_folder(folder: Path | str, name: object, what: str) -> Path:
    """``folder / name`` for a file name read from ``model.json``; :class:`InputError` when the name is not a plain
    relative path inside the folder (absolute, ``..``, or a link leading out): a model folder never makes us read
    or write elsewhere."""
    folder = Path(folder)
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts \
            or "\\" in name:
        raise InputError(f"{folder / MODEL_JSON}: {what} {name!r} is not a file name inside the model folder; the "
                         "model folder is damaged or hostile: copy it again from its source")
    path = folder / name
    if path.exists() and not path.resolve().is_relative_to(folder.resolve()):
        raise InputError(f"{folder / MODEL_JSON}: {what} {name!r} leads outside the model folder (a link); copy the "
                         "model again from its source")
    return path


def weights_path(model: DeepModel) -> Path:
    """The model's weights file (checked to lie inside its folder)."""
    return inside_folder(model.folder, model.meta.get("weights", WEIGHTS), "weights file")


def weights_sha256(model: DeepModel) -> str:
    """SHA-256 of the model's weights file, computed once per loaded model."""
    if "weights_sha256" not in model.runtime:
        digest = hashlib.sha256()
        with open(weights_path(model), "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        model.runtime["weights_sha256"] = digest.hexdigest()
    return model.runtime["weights_sha256"]


def int8_path(model: DeepModel) -> Path:
    """The model's int8 network (OpenVINO IR, see :mod:`.quantization`), checked to lie inside its folder."""
    return inside_folder(model.folder, model.meta.get("int8", {}).get("file", INT8_FILE), "int8 network")


def int8_ready(model: DeepModel) -> bool:
    """Whether the model has an accepted int8 network made from its current weights."""
    entry = model.meta.get("int8")
    if not entry or not entry.get("accepted"):
        return False
    path = int8_path(model)
    if not path.is_file() or not path.with_suffix(".bin").is_file():
        raise InputError(f"{model.folder / MODEL_JSON}: lists the int8 network {entry.get('file')} but its files are "
                         "missing; copy the whole model folder or run 'segtoolkit quantize' again")
    return entry.get("weights_sha256") == weights_sha256(model)


def load_weights(path: Path | str) -> dict:
    """Tensors of a safetensors file (no pickle); :class:`InputError` when it is unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weights file missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise InputError(f"{path}: corrupt weights file ({str(error).splitlines()[0][:150]})") from None


def load_state(network, path: Path | str) -> None:
    """Load a safetensors file into ``network`` exactly (shared weights allowed); clear error on mismatch."""
    tensors = load_weights(path)
    state = network.state_dict()
    missing = [key for key in state if key not in tensors and not _aliased(key, state, tensors)]
    unexpected = [key for key in tensors if key not in state]
    wrong = [key for key in tensors if key in state and tuple(tensors[key].shape) != tuple(state[key].shape)]
    if missing or unexpected or wrong:
        detail = (missing or unexpected or wrong)[:3]
        raise InputError(f"{path}: weights do not fit the network described in {MODEL_JSON} ({detail}...); the model "
                         "folder is inconsistent")
    network.load_state_dict(tensors, strict=False)


def _aliased(key: str, state: dict, tensors: dict) -> bool:
    """Whether ``key`` shares storage with a tensor that is in the file (safetensors stores shared weights once)."""
    pointer = state[key].data_ptr()
    return any(state[other].data_ptr() == pointer for other in tensors if other in state)


def load_model(folder: Path | str, device: str = "cpu") -> DeepModel:
    """Load a model folder onto ``device`` (validated; never unpickles)."""
    from .networks import build_network

    folder = Path(folder)
    meta = read_model_json(folder)
    try:
        network = build_network(meta["network"])
    except (KeyError, TypeError, ValueError, AssertionError) as error:
        raise InputError(f"{folder / MODEL_JSON}: network description cannot be built ({error})") from None
    load_state(network, inside_folder(folder, meta.get("weights", WEIGHTS), "weights file"))
    network.eval().to(device)
    return DeepModel(folder, meta, network, device)


def transfer_weights(network, folder: Path | str) -> int:
    """Copy every weight of another model whose name and shape match (``--init``); returns how many."""
    meta = read_model_json(folder)
    tensors = load_weights(inside_folder(folder, meta.get("weights", WEIGHTS), "weights file"))
    state = network.state_dict()
    matched = {key: value for key, value in tensors.items()
               if key in state and tuple(value.shape) == tuple(state[key].shape)}
    if not matched:
        raise InputError(f"{folder}: no weights match the new network; use a model with the same network type "
                         "and plan topology")
    network.load_state_dict(matched, strict=False)
    return len(matched)


def save_checkpoint(folder: Path | str, network, optimizer, state: dict) -> None:
    """Write ``folder/checkpoint`` (weights, optimizer tensors, JSON state), replacing the old one atomically."""
    from safetensors.torch import save_file
    from safetensors.torch import save_model as save_weights

    folder = Path(folder)
    tmp = folder / f".{CHECKPOINT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_weights(network, str(tmp / f"{WEIGHTS}.part"))
        publish(tmp / f"{WEIGHTS}.part", tmp / WEIGHTS)  # each file checked complete before the folder is swapped
        tensors, scalars = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, str(tmp / "optimizer.safetensors.part"))
        publish(tmp / "optimizer.safetensors.part", tmp / "optimizer.safetensors")
        (tmp / "state.json.part").write_text(json.dumps({**state, "optimizer": scalars}), encoding="utf-8")
        publish(tmp / "state.json.part", tmp / "state.json")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = folder / CHECKPOINT
    old = folder / f".{CHECKPOINT}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: Path | str, network, optimizer) -> dict | None:
    """Restore a checkpoint into ``network`` and ``optimizer``; its JSON state, or None when there is none."""
    path = Path(folder) / CHECKPOINT
    if not (path / "state.json").is_file():
        return None
    state = read_json(path / "state.json", "corrupt checkpoint", "delete the folder to start again", name=path)
    load_state(network, path / WEIGHTS)
    optimizer.load_state_dict(_unflatten_optimizer(load_weights(path / "optimizer.safetensors"),
                                                   state.pop("optimizer")))
    return state


def remove_checkpoint(folder: Path | str) -> None:
    shutil.rmtree(Path(folder) / CHECKPOINT, ignore_errors=True)


def _flatten_optimizer(state_dict: dict) -> tuple[dict, dict]:
    import torch

    tensors, scalars = {}, {"param_groups": state_dict["param_groups"], "state": {}}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars["state"].setdefault(str(index), {})[key] = value
    return tensors, scalars


def _unflatten_optimizer(tensors: dict, scalars: dict) -> dict:
    state: dict = {int(index): dict(values) for index, values in scalars["state"].items()}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": scalars["param_groups"]}
