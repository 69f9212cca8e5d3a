"""Models brought into the store: zips unpacked safely, nnU-Net checkpoints read safely and written as safetensors +
JSON, SegToolkit model folders copied; returns what ``store.json`` records."""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath

from ....errors import InputError
from ....progress import CancelToken, ProgressCallback, report, scaled

# files taken from an archive: what a model needs, nothing else (logs, plots, validation outputs stay packed)
KEPT_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json", "checkpoint_final.pth", "checkpoint_best.pth",
              "postprocessing.json", "model.json", "model.safetensors", "network-int8.xml", "network-int8.bin")


def convert_sources(sources: list[Path], unpacked: Path, out: Path, progress: ProgressCallback | None = None,
                    cancel: CancelToken | None = None) -> dict:
    """Unpack (zips) and convert model files into ``out`` for the store; returns the ``store.json`` entry
    (``format`` segtoolkit, nnunet or task, ``classes``, and where the model files are)."""
    roots = []
    for index, source in enumerate(sources):
        span = scaled(progress, 0.4 * index / len(sources), 0.4 * (index + 1) / len(sources))
        if source.is_file() and source.suffix.lower() == ".zip":
            from .archive import extract

            target = unpacked / str(index)
            extract(source, target, lambda name: name.name in KEPT_FILES, span, cancel)
            roots.append(target)
        elif source.is_dir():
            roots.append(source)
        else:
            raise InputError(f"{source}: not a model folder or zip file")
    segtoolkit = [model for root in roots for model in _segtoolkit_models(root)]
    trained = [folder for root in roots for folder in _trained_folders(root)]
    if segtoolkit and not trained and len(segtoolkit) == 1:
        return _copy_segtoolkit(segtoolkit[0], out)
    if not trained:
        raise InputError(f"{', '.join(str(s) for s in sources)}: no SegToolkit or nnU-Net model found inside")
    for index, folder in enumerate(trained):
        report(scaled(progress, 0.4, 0.95), index / len(trained), f"converting {folder.name}", cancel)
        convert_trained_folder(folder, out / folder.parent.name / folder.name)
    return _describe_converted(out, trained)


def _segtoolkit_models(root: Path) -> list[Path]:
    return [p.parent for p in [root / "model.json", *root.glob("*/model.json")] if p.is_file()]


def _trained_folders(root: Path) -> list[Path]:
    """nnU-Net trained folders at most three levels below ``root`` (export zips hold Dataset/Trainer.. folders)."""
    from . import nnunet_files

    found = []
    for depth in range(4):
        for plans in root.glob("/".join(["*"] * depth + ["plans.json"])):
            if nnunet_files.is_trained_folder(plans.parent) and (list(plans.parent.glob("fold_*"))):
                found.append(plans.parent)
    return sorted(set(found))


def convert_trained_folder(folder: Path, target: Path) -> None:
    """One nnU-Net trained folder into the store's form: plans.json, dataset.json, the post-processing description,
    and every fold's checkpoints read safely, checked against the network, and written as safetensors + JSON."""
    import torch

    from . import nnunet_files as files

    plans = files.read_plans(folder)
    dataset = files.read_dataset_json(folder)
    found = files.TRAINED_FOLDER.match(folder.name)
    configuration = found["configuration"] if found else next(iter(plans["configurations"]))
    config = files.resolve_configuration(plans, configuration, folder)
    labels = files.class_labels(dataset, folder)
    channels = files.channel_names(dataset, folder)
    target.mkdir(parents=True, exist_ok=True)
    for name in (files.PLANS, files.DATASET):
        shutil.copyfile(folder / name, target / name)
    for postprocessing in folder.glob("crossval_results_folds_*/postprocessing.json"):
        destination = target / postprocessing.parent.name
        destination.mkdir(exist_ok=True)
        shutil.copyfile(postprocessing, destination / postprocessing.name)
    converted = 0
    network = files.build_network(config, len(channels), len(labels), folder)
    for fold_folder in sorted(folder.glob("fold_*")):
        fold = fold_folder.name[len("fold_"):]
        for kind in files.CHECKPOINTS:
            if not any((fold_folder / f"checkpoint_{kind}{suffix}").is_file() for suffix in (".pth", ".safetensors")):
                continue
            weights = files.read_fold(folder, fold, kind)
            with torch.no_grad():
                files.load_state_exactly(network, weights, folder)
            files.write_converted_fold(weights, target / fold_folder.name, kind)
            converted += 1
    if not converted:
        raise InputError(f"{folder}: no fold_N/checkpoint_final.pth or checkpoint_best.pth inside")


def _describe_converted(out: Path, trained: list[Path]) -> dict:
    from . import nnunet_files as files

    datasets = sorted({folder.parent.name for folder in trained})
    if len(datasets) == 1:
        dataset = files.read_dataset_json(out / datasets[0] / trained[0].name)
        labels = files.class_labels(dataset, out / datasets[0])
        configurations = sorted(folder.name for folder in trained)
        return {"format": "nnunet", "folder": datasets[0], "configurations": configurations,
                "classes": {str(v): n for v, n in labels.items() if v},
                "modality": ", ".join(files.channel_names(dataset, out))}
    parts, classes = [], {}
    for dataset_name in datasets:
        folders = [f for f in trained if f.parent.name == dataset_name]
        chosen = files.find_trained_folder(out / dataset_name) if len(folders) > 1 else out / dataset_name / \
            folders[0].name
        dataset = files.read_dataset_json(chosen)
        labels = files.class_labels(dataset, chosen)
        names = [labels[v] for v in sorted(labels) if v]
        parts.append({"folder": f"{dataset_name}/{chosen.name}", "classes": names})
        for name in names:
            if name not in classes.values():
                classes[str(len(classes) + 1)] = name
    return {"format": "task", "parts": parts, "classes": classes}


def _copy_segtoolkit(folder: Path, out: Path) -> dict:
    from ..model_package import INT8_FILE, MODEL_JSON, WEIGHTS, inside_folder, read_model_json

    meta = read_model_json(folder)
    out.mkdir(parents=True, exist_ok=True)
    names = [MODEL_JSON, meta.get("weights", WEIGHTS)]
    int8 = meta.get("int8", {}).get("file", INT8_FILE) if meta.get("int8") else None
    if int8:
        names += [int8, str(PurePosixPath(int8).with_suffix(".bin"))]
    for name in names:
        source = inside_folder(folder, name, "file")
        if source.is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, out / name)
    from ....io import LabelTable

    labels = LabelTable.from_mapping(meta["labels"], str(folder / MODEL_JSON))
    return {"format": "segtoolkit", "classes": {str(label.value): label.name for label in labels}}
