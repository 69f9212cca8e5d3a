"""``segtoolkit quantize -m MODEL_DIR DATA``: add a checked int8 network to a trained model for fast CPU prediction."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...progress import ConsoleProgress


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quantize", help="add an int8 network to a trained model (faster CPU prediction, checked against fp32)",
        description="Quantize a model's network to int8 with OpenVINO/NNCF, calibrated on windows of its training "
                    "cases in DATA, and keep it only if its labels agree with fp32 on the validation cases (Dice "
                    ">= 0.995 per label). 'segtoolkit train' does this for 3D models already; use this for older "
                    "models or after copying a model to a machine with openvino and nncf.")
    parser.add_argument("-m", "--model", type=Path, required=True, metavar="MODEL_DIR", help="trained model folder")
    parser.add_argument("data", type=Path, metavar="DATA", help="the dataset folder the model was trained on")
    parser.add_argument("--seed", type=int, default=0, help="seed for choosing the windows (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...methods.deep import require_deep

    require_deep()
    from ...methods.deep.quantization import describe, quantize_folder

    with ConsoleProgress("quantize") as bar:
        entry = quantize_folder(args.model, args.data, args.seed, progress=bar)
    print(f"{args.model}: {describe(entry)}")
    return 0
