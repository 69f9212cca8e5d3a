"""The deep engine on a CUDA GPU: training and prediction on the GPU agree with the CPU (skipped without a GPU),
and asking for CUDA where there is none is a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from deep_synthetic import blob_case, dice, make_blob_dataset, small_plan

torch = pytest.importorskip("torch")

from SegToolkitLib.errors import InputError  # noqa: E402
from SegToolkitLib.interfaces.cli.app import main  # noqa: E402
from SegToolkitLib.methods.deep.dataset import load_dataset  # noqa: E402
from SegToolkitLib.methods.deep.inference import predict  # noqa: E402
from SegToolkitLib.methods.deep.model_package import load_model  # noqa: E402
from SegToolkitLib.methods.deep.planning import plan_dataset  # noqa: E402
from SegToolkitLib.methods.deep.training import TrainingOptions, resolve_device, train  # noqa: E402

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert resolve_device("auto") == "cpu"
    with pytest.raises(InputError, match="no CUDA GPU is available here"):
        resolve_device("cuda")
    data = make_blob_dataset(tmp_path / "data", cases=3, size=(24, 24), spacing=(1.0, 1.0))
    assert main(["train", str(data), "-o", str(tmp_path / "model"), "--epochs", "1", "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err and not (tmp_path / "model").exists()


@needs_gpu
def test_training_and_prediction_on_the_gpu(tmp_path):
    folder = make_blob_dataset(tmp_path / "data", cases=5, size=(24, 24, 16), spacing=(1.0, 1.0, 1.5), labels=2,
                               modality="CT")
    dataset = load_dataset(folder)
    plan = small_plan(plan_dataset(dataset, "cuda"), filters=16, iterations=15)
    plan["training"]["learning_rate"] = 0.01
    summary = train(dataset, tmp_path / "model", plan, TrainingOptions(epochs=4, device="cuda", quantize=False))
    assert summary["device"] == "cuda" and summary["final_validation_dice"] > 0.5
    image, truth = blob_case(np.random.default_rng(7), (24, 24, 16), (1.0, 1.0, 1.5), labels=2)
    truth = sitk.GetArrayFromImage(truth)
    on_gpu = predict(load_model(tmp_path / "model", "cuda"), image)
    on_cpu = predict(load_model(tmp_path / "model", "cpu"), image, backend="torch")
    gpu_labels = sitk.GetArrayFromImage(on_gpu.label_map.image)
    assert on_gpu.backend in ("torch", "torch-bf16") and gpu_labels.shape == sitk.GetArrayFromImage(image).shape
    assert dice(gpu_labels, sitk.GetArrayFromImage(on_cpu.label_map.image)) > 0.99
    assert dice(gpu_labels, truth) > 0.5
