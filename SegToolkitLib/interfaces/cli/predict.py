"""``segtoolkit predict -m MODEL INPUT [INPUT ...] -o OUT``: segment images with a trained model: a SegToolkit model
folder, an nnU-Net v2 trained model (folder, dataset folder or zip; detected by itself) or a store model by name."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import InputError
from ...io.atomic import compound_suffix
from ...methods.deep.backends import BACKENDS
from ...progress import ConsoleProgress
from .common import add_label_output_arguments, check_label_output, label_output_suffix, write_label_output


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="segment images with a trained deep model (SegToolkit, nnU-Net, TotalSegmentator)",
        description="Segment one or more images with a model: a SegToolkit model folder, an nnU-Net v2 trained "
                    "model folder (Trainer__Plans__configuration), its dataset folder or nnU-Net's export zip, or a "
                    "model of the store by name ('segtoolkit models list', e.g. total). The format is detected. "
                    "With several inputs, OUT (and the --probabilities/--uncertainty paths) are folders that receive "
                    "one file per input. A multi-channel model takes INPUT = <case>_0000.nii.gz and finds "
                    "<case>_0001... beside it.")
    parser.add_argument("-m", "--model", required=True, metavar="MODEL",
                        help="model folder, nnU-Net folder or zip, or store model name")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="image file(s) or DICOM folder(s)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                        help="label map file (.nii.gz, .nrrd, .seg.nrrd), or a folder for several inputs")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="mirroring test-time augmentation, slower and smoother (default: the model's choice: "
                             "on for 2D SegToolkit models; on for nnU-Net models trained with mirroring, as nnU-Net; "
                             "--no-tta turns it off)")
    nnunet = parser.add_argument_group("nnU-Net models and tasks")
    nnunet.add_argument("--configuration", metavar="NAME",
                        help="configuration of an nnU-Net dataset folder (default as nnU-Net: 3d_fullres, else 2d)")
    nnunet.add_argument("--folds", nargs="+", metavar="FOLD",
                        help="folds to ensemble (default: every fold present; 'all' for fold_all)")
    nnunet.add_argument("--checkpoint", choices=("final", "best"), default="final",
                        help="checkpoint_final (default) or checkpoint_best")
    nnunet.add_argument("--classes", metavar="NAMES",
                        help="comma-separated class names (or values) to keep, e.g. liver,spleen; a task runs only "
                             "the parts that hold them and, with its locator model in the store, only near them")
    parser.add_argument("--probabilities", type=Path, metavar="FILE", help="write class probabilities")
    parser.add_argument("--uncertainty", type=Path, metavar="FILE",
                        help="write an uncertainty map (0 = certain; see --uncertainty-method)")
    parser.add_argument("--uncertainty-method", choices=("entropy", "disagreement"), default="entropy",
                        help="entropy: normalised entropy of the class probabilities (default); disagreement: "
                             "fraction of the --tta passes whose label differs from the final label")
    parser.add_argument("--largest-component", action=argparse.BooleanOptionalAction, default=None,
                        help="keep one component per label: the most certain, for a label convex in every 2D "
                             "training image a convex one (default: the model's choice, made in training for labels "
                             "that are one piece in every training case; --no-largest-component keeps all)")
    parser.add_argument("--fill-holes", action=argparse.BooleanOptionalAction, default=None,
                        help="fill holes in every label (default: the model's choice, for labels without holes)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="inference backend (default auto: the model's int8 network when it has one that agrees "
                             "with fp32, else OpenVINO when installed and the image needs enough windows to repay "
                             "its one-off conversion (bf16 on CPUs with AMX, else f32), else bf16 "
                             "where the CPU has it, else torch)")
    add_label_output_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...methods.deep import require_deep

    require_deep()
    from ...io import read_image, write_image
    from ...measurement.boundary import cut_off_note
    from ...methods.deep.formats.loading import model_channels, model_sha256, open_model, predict_any

    # every output name is checked before the model is loaded: clashing names are refused before any work
    outputs = _targets(args.output, args.inputs, label_output_suffix(args, ".nii.gz"))
    for output, path in zip(outputs, args.inputs):
        check_label_output(args, output, path)
    probability_files = _targets(args.probabilities, args.inputs, ".nii.gz") if args.probabilities else None
    uncertainty_files = _targets(args.uncertainty, args.inputs, ".nii.gz") if args.uncertainty else None
    folds = [f for item in args.folds for f in item.split(",") if f] if args.folds else None
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    with ConsoleProgress("loading the model") as bar:
        model = open_model(args.model, args.configuration, folds, args.checkpoint, args.device, progress=bar)
    cases = [_channel_files(path, model_channels(model)) for path in args.inputs]
    for index, files in enumerate(cases):
        images = [read_image(path, args.dicom_series if path.is_dir() else None) for path in files]
        with ConsoleProgress(f"predict {files[0].name}") as bar:
            result = predict_any(model, images, classes=classes, tta=args.tta,
                                 probabilities=bool(args.probabilities), uncertainty=bool(args.uncertainty),
                                 uncertainty_method=args.uncertainty_method,
                                 largest_component=args.largest_component, fill_holes=args.fill_holes,
                                 backend=args.backend, name=str(files[0]), progress=bar)
        write_label_output(result.label_map, args, outputs[index], files[0], "predict", Path(args.model).name,
                           model_sha256(model))
        if probability_files:
            write_image(result.probabilities, probability_files[index])
        if uncertainty_files:
            write_image(result.uncertainty, uncertainty_files[index])
        print(f"{outputs[index]}: labels {result.label_map.present_values()} ({result.backend}, "
              f"{result.seconds:.1f} s){cut_off_note(result.label_map.image)}")
    return 0


def _channel_files(path: Path, channels: int) -> list[Path]:
    """The input's channel files: itself, plus <case>_0001... beside a <case>_0000 file."""
    if channels == 1:
        return [path]
    suffix = compound_suffix(path)
    stem = path.name[: -len(suffix)] if suffix else path.name
    if not stem.endswith("_0000"):
        raise InputError(f"{path}: the model needs {channels} channels; name the first <case>_0000{suffix} and put "
                         f"<case>_0001{suffix}... beside it")
    files = [path.with_name(f"{stem[:-5]}_{index:04d}{suffix}") for index in range(channels)]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise InputError(f"{path}: channel file(s) {', '.join(missing)} not found; the model needs {channels} channels")
    return files


def _targets(output: Path, inputs: list[Path], suffix: str) -> list[Path]:
    """One output path per input: ``output`` itself for one input, files inside folder ``output`` otherwise."""
    from ...io import check_output_path

    if len(inputs) == 1 and not output.is_dir():
        return [check_output_path(output, inputs)]
    names: dict[str, Path] = {}
    for path in inputs:
        name = path.name[: -len(compound_suffix(path))] if compound_suffix(path) else path.name
        name = name[:-5] if name.endswith("_0000") else name
        if name in names:
            raise InputError(f"{names[name]} and {path}: both would be written to {output / (name + suffix)}; "
                             "rename one of them or predict them in separate runs")
        names[name] = path
    output.mkdir(parents=True, exist_ok=True)
    return [check_output_path(output / f"{name}{suffix}", inputs) for name in names]
