"""``segtoolkit predict -m MODEL_DIR INPUT [INPUT ...] -o OUT``: segment images with a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import InputError
from ...io.atomic import compound_suffix
from ...progress import ConsoleProgress


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="segment images with a trained deep model",
        description="Segment one or more images with a model folder. With several inputs, OUT (and the "
                    "--probabilities/--uncertainty paths) are folders that receive one file per input. A "
                    "multi-channel model takes INPUT = <case>_0000.nii.gz and finds <case>_0001... beside it.")
    parser.add_argument("-m", "--model", type=Path, required=True, metavar="MODEL_DIR", help="trained model folder")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="image file(s) or DICOM folder(s)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                        help="label map file (.nii.gz, .nrrd, .seg.nrrd), or a folder for several inputs")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="mirroring test-time augmentation, slower and smoother (default: the model's choice, "
                             "on for 2D models)")
    parser.add_argument("--probabilities", type=Path, metavar="FILE", help="write class probabilities")
    parser.add_argument("--uncertainty", type=Path, metavar="FILE",
                        help="write an uncertainty map (0 = certain; see --uncertainty-method)")
    parser.add_argument("--uncertainty-method", choices=("entropy", "disagreement"), default="entropy",
                        help="entropy: normalised entropy of the class probabilities (default); disagreement: "
                             "fraction of the --tta passes whose label differs from the final label")
    parser.add_argument("--largest-component", action=argparse.BooleanOptionalAction, default=None,
                        help="keep the largest component per label (default: the model's choice, made in training "
                             "for labels that are one piece in every training case)")
    parser.add_argument("--fill-holes", action=argparse.BooleanOptionalAction, default=None,
                        help="fill holes in every label (default: the model's choice, for labels without holes)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    parser.add_argument("--backend", choices=("auto", "torch", "torch-bf16", "openvino", "openvino-int8"),
                        default="auto",
                        help="inference backend (default auto: the model's int8 network when it has one that agrees "
                             "with fp32, else OpenVINO f32 when installed and the image needs enough windows to "
                             "repay its one-off conversion, else bf16 where the CPU has it, else torch)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...methods.deep import require_deep

    require_deep()
    from ...io import read_image, write_image, write_label_map
    from ...methods.deep.inference import predict
    from ...methods.deep.model_package import load_model
    from ...methods.deep.training import resolve_device

    model = load_model(args.model, resolve_device(args.device))
    cases = [_channel_files(path, len(model.channels)) for path in args.inputs]
    outputs = _targets(args.output, args.inputs, ".nii.gz")
    probability_files = _targets(args.probabilities, args.inputs, ".nii.gz") if args.probabilities else None
    uncertainty_files = _targets(args.uncertainty, args.inputs, ".nii.gz") if args.uncertainty else None
    for index, files in enumerate(cases):
        images = [read_image(path) for path in files]
        with ConsoleProgress(f"predict {files[0].name}") as bar:
            result = predict(model, images, tta=args.tta, probabilities=bool(args.probabilities),
                             uncertainty=bool(args.uncertainty), uncertainty_method=args.uncertainty_method,
                             largest_component=args.largest_component,
                             fill_holes=args.fill_holes, backend=args.backend, name=str(files[0]), progress=bar)
        write_label_map(result.label_map, outputs[index])
        if probability_files:
            write_image(result.probabilities, probability_files[index])
        if uncertainty_files:
            write_image(result.uncertainty, uncertainty_files[index])
        print(f"{outputs[index]}: labels {result.label_map.present_values()} ({result.backend}, "
              f"{result.seconds:.1f} s)")
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
    output.mkdir(parents=True, exist_ok=True)
    targets = []
    for path in inputs:
        name = path.name[: -len(compound_suffix(path))] if compound_suffix(path) else path.name
        name = name[:-5] if name.endswith("_0000") else name
        targets.append(check_output_path(output / f"{name}{suffix}", inputs))
    return targets
