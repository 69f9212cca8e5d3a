"""Where a network runs: the device, bf16 support, and the OpenVINO backends shared by every model format.

The lowest module of the engine above the model files: inference, quantization, training and the imported model
formats (:mod:`.formats`) all import from here and nothing here imports them. A network is converted to OpenVINO
once per window shape (seconds) and cached under ``$SEGTOOLKIT_CACHE`` (default ``~/.cache/segtoolkit``), keyed by
the SHA-256 of its weights file, the window and the OpenVINO version.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import warnings
from pathlib import Path

from ...errors import InputError
from ...io.atomic import publish_verified

# The --backend choices of every model format and command (the CLI reads this tuple).
BACKENDS = ("auto", "torch", "torch-bf16", "openvino", "openvino-bf16", "openvino-int8")
# Two windows are handed to the network at a time in 3D (2D: twice as many); OpenVINO runs them on two streams.
WINDOW_BATCH = 2
LARGE_WINDOW_VOXELS = 96 ** 3


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available, else cpu; a clear error for cuda without a GPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda: no CUDA GPU is available here; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise InputError(f"device {device!r}: use auto, cpu or cuda")
    return device


def bf16_supported(device: str) -> bool:
    """Whether bfloat16 autocast is fast on this device (native bf16 instructions)."""
    import torch

    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@functools.lru_cache(maxsize=4)
def has_bf16_matrix_units(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU multiplies bf16 matrices in dedicated units (Intel AMX: ``amx_bf16`` among the flags of
    ``cpuinfo``). Only there is OpenVINO bf16 much faster than f32; False elsewhere and off Linux."""
    try:
        with open(cpuinfo) as handle:
            for line in handle:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split(":", 1)[1].split()
    except OSError:
        pass
    return False


def openvino_precision(backend: str) -> str:
    """The OpenVINO inference precision of a floating-point OpenVINO backend name."""
    return "bf16" if backend == "openvino-bf16" else "f32"


def cache_folder() -> Path:
    return Path(os.environ.get("SEGTOOLKIT_CACHE", Path.home() / ".cache" / "segtoolkit"))


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks (weights files can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def openvino_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openvino")
    except PackageNotFoundError:
        return ""


def cached_openvino_xml(weights_key: str, window: list[int]) -> Path:
    """Where the converted network with weights ``weights_key`` (a hash) and this window shape is cached."""
    key = repr((weights_key, list(window), openvino_version(), "f32 weights"))
    return cache_folder() / "openvino" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.xml"


def convert_to_openvino(network, window: list[int], weights_key: str):
    """``network`` converted to an OpenVINO model for one window shape (read from the cache when it is there)."""
    import openvino as ov
    import torch

    xml = cached_openvino_xml(weights_key, window)
    if xml.is_file():
        converted = ov.Core().read_model(str(xml))
    else:
        with warnings.catch_warnings():  # OpenVINO traces with torch.jit.trace, which warns that it is deprecated
            warnings.simplefilter("ignore")
            converted = ov.convert_model(network.eval(), example_input=torch.zeros(window))
        xml.parent.mkdir(parents=True, exist_ok=True)
        tmp = xml.with_name(f".{xml.stem}.{os.getpid()}.xml")
        ov.save_model(converted, str(tmp), compress_to_fp16=False)
        publish(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        publish(tmp, xml)
    converted.reshape(window)  # the conversion keeps dynamic dimensions; the window is fixed
    return converted


def publish(tmp: Path, final: Path) -> None:
    """Publish a finished temporary file onto ``final``: flushed, checked complete by its format, the permissions
    a plain ``open()`` would give (umask, not owner-only), renamed atomically (:func:`publish_verified`)."""
    publish_verified(tmp, final)


def compile_for_cpu(converted, precision: str = "f32"):
    """Compile an OpenVINO model for the CPU with torch's thread count, its floating-point layers in ``precision``
    (``f32`` or ``bf16``); a callable on a batch of torch windows."""
    import openvino as ov
    import torch

    if precision not in ("f32", "bf16"):
        raise ValueError(f"precision {precision!r}: f32 or bf16")
    # f32 unless asked: OpenVINO's default on CPUs with AVX-512 bf16 (bf16) was slower for these U-Nets (instance
    # norm) without matrix units, 0.36 against 0.26 s per 96x96x48 window on 2 Zen 4 cores, and f32 keeps the fp32
    # labels. With AMX, bf16 is 3.6x faster than f32 (1.03 against 3.7 s per 128^3 window of a TotalSegmentator-size
    # network on 2 Sapphire Rapids cores). An int8 network keeps its quantized layers in int8 under either hint.
    # Two streams run two windows at once, one core each: 0.136 s per window in predict on 2 cores, against
    # 0.163 s for one window at a time on both cores (the sliding window hands over WINDOW_BATCH windows at once).
    # Large windows (TotalSegmentator-size networks, 128^3) run on one stream: each stream holds its own
    # activations, and two took 2.85 GB against 1.59 GB for one, at the same speed on 2 cores (benchmarks/
    # nnunet_speed.py; OpenVINO 2026.4, f32). Kept in bf16: the memory argument is the same (peak memory on a
    # 512x512x300 CT is a target), and a bf16 window keeps both cores' matrix units busy on its own.
    threads = torch.get_num_threads()
    shape = converted.inputs[0].get_partial_shape()
    voxels = math.prod(shape[i].get_length() for i in range(2, shape.rank.get_length())) if shape.is_static else 0
    streams = 1 if voxels > LARGE_WINDOW_VOXELS else max(1, min(WINDOW_BATCH, threads))
    compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": streams,
                                                          "INFERENCE_PRECISION_HINT": precision})
    queue = ov.AsyncInferQueue(compiled, streams)

    def run(windows):
        outputs = [None] * windows.shape[0]

        def keep(request, index):
            outputs[index] = torch.from_numpy(request.get_output_tensor(0).data.copy())

        queue.set_callback(keep)
        for index in range(windows.shape[0]):
            queue.start_async([windows[index:index + 1].float().numpy()], index)
        queue.wait_all()
        return torch.cat(outputs)

    return run


def read_openvino(path: Path, remedy: str):
    """An OpenVINO IR file read back; :class:`InputError` naming ``remedy`` when it is corrupt."""
    import openvino as ov

    try:
        return ov.Core().read_model(str(path))
    except RuntimeError as error:
        detail = str(error).splitlines()[-1][:120]
        raise InputError(f"{path}: corrupt int8 or OpenVINO network ({detail}); {remedy}") from None
