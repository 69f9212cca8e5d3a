"""``segtoolkit quantize -m MODEL DATA`` or ``-m MODEL IMAGE...``: add a checked int8 network to a model for fast CPU
prediction."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...progress import ConsoleProgress


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quantize", help="add an int8 network to a model (faster CPU prediction, checked against fp32)",
        description="Quantize a model's network to int8 with OpenVINO/NNCF and keep it only if its labels agree "
                    "with fp32 (Dice >= 0.995 per label). A SegToolkit model calibrates on windows of its training "
                    "cases in DATA and is checked on the validation cases ('segtoolkit train' does this for 3D "
                    "models already). An imported nnU-Net model or task in the store has no training data: name a "
                    "few typical images (IMAGE...); it calibrates on them and is checked on the first two.")
    parser.add_argument("-m", "--model", required=True, metavar="MODEL",
                        help="trained model folder, or store model name")
    parser.add_argument("data", type=Path, nargs="+", metavar="DATA_OR_IMAGE",
                        help="the dataset folder the model was trained on, or images (imported models)")
    parser.add_argument("--seed", type=int, default=0, help="seed for choosing the windows (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...methods.deep import require_deep

    require_deep()
    from ...errors import InputError
    from ...io import read_image
    from ...methods.deep.formats.loading import model_channels, open_model
    from ...methods.deep.model_package import DeepModel
    from ...methods.deep.quantization import describe

    model = open_model(args.model, device="cpu")
    if isinstance(model, DeepModel):
        from ...methods.deep.calibration import quantize_folder

        if len(args.data) != 1 or not args.data[0].is_dir():
            raise InputError(f"{args.model}: a SegToolkit model calibrates on the dataset folder it was trained on; "
                             "give that one folder")
        with ConsoleProgress("quantize") as bar:
            entry = quantize_folder(model.folder, args.data[0], args.seed, progress=bar)
        print(f"{args.model}: {describe(entry)}")
        return 0
    from ...methods.deep.formats.nnunet_int8 import quantize_imported
    from .predict import _channel_files

    cases = [[read_image(path) for path in _channel_files(image, model_channels(model))] for image in args.data]
    with ConsoleProgress("quantize") as bar:
        entries = quantize_imported(model, cases, args.seed, progress=bar)
    for entry in entries:
        print(f"{args.model} fold {entry['fold']}: {describe(entry)}")
    return 0
