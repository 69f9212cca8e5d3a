"""Int8 networks: added by training to 3D models, checked against fp32 before they are kept, chosen by the auto
backend, and refused cleanly when missing, stale or corrupt; the ``quantize`` command for existing models."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from deep_synthetic import blob_case, dice, make_blob_dataset, small_plan

torch = pytest.importorskip("torch")
pytest.importorskip("openvino")
pytest.importorskip("nncf")

from SegToolkitLib.errors import InputError  # noqa: E402
from SegToolkitLib.interfaces.cli.app import main  # noqa: E402
from SegToolkitLib.methods.deep import calibration, quantization  # noqa: E402
from SegToolkitLib.methods.deep.dataset import load_dataset  # noqa: E402
from SegToolkitLib.methods.deep.inference import predict  # noqa: E402
from SegToolkitLib.methods.deep.model_package import load_model, read_model_json  # noqa: E402
from SegToolkitLib.methods.deep.planning import plan_dataset  # noqa: E402
from SegToolkitLib.methods.deep.training import TrainingOptions, train  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small 3D CT model trained with the default options (which add the int8 network), and its dataset."""
    folder = tmp_path_factory.mktemp("int8")
    data = make_blob_dataset(folder / "data", cases=5, size=(24, 24, 16), spacing=(1.0, 1.0, 1.5), labels=2,
                             modality="CT")
    dataset = load_dataset(data)
    plan = small_plan(plan_dataset(dataset), filters=16, iterations=15)
    plan["training"]["learning_rate"] = 0.01
    summary = train(dataset, folder / "model", plan, TrainingOptions(epochs=4))
    return folder / "model", data, summary


@pytest.fixture
def model_copy(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGTOOLKIT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    shutil.copytree(trained[0], folder)
    return folder


def test_training_checks_the_int8_network_against_fp32(trained):
    folder, _, summary = trained
    entry = read_model_json(folder)["int8"]
    agreement = [v for v in entry["agreement_dice"].values() if v is not None]
    assert set(entry["agreement_dice"]) == {"1", "2"} and agreement and entry["check_cases"] >= 1
    assert entry["accepted"] == (min(agreement) >= quantization.MIN_AGREEMENT)
    assert (folder / quantization.INT8_FILE).is_file() == entry["accepted"]
    assert summary["int8"].startswith("int8 network saved" if entry["accepted"] else "int8 network not kept")


def test_kept_int8_network_is_the_auto_backend_and_agrees(model_copy, trained, monkeypatch):
    monkeypatch.setattr(quantization, "MIN_AGREEMENT", 0.0)  # keep it whatever the tiny model's agreement
    entry = calibration.quantize_folder(model_copy, trained[1])
    assert entry["accepted"] and (model_copy / "network-int8.bin").is_file()
    image, _ = blob_case(np.random.default_rng(5), (24, 24, 16), (1.0, 1.0, 1.5), labels=2)
    model = load_model(model_copy)
    fast = predict(model, image)
    assert fast.backend == "openvino-int8"
    fp32 = sitk.GetArrayFromImage(predict(model, image, backend="torch").label_map.image)
    for value in (1, 2):
        assert dice(sitk.GetArrayFromImage(fast.label_map.image), fp32, value) > 0.9


def test_int8_network_that_disagrees_is_not_kept(model_copy, trained, monkeypatch):
    monkeypatch.setattr(quantization, "MIN_AGREEMENT", 1.01)  # no network can reach it
    entry = calibration.quantize_folder(model_copy, trained[1])
    assert not entry["accepted"] and not (model_copy / quantization.INT8_FILE).exists()
    assert read_model_json(model_copy)["int8"]["accepted"] is False
    image, _ = blob_case(np.random.default_rng(5), (24, 24, 16), (1.0, 1.0, 1.5), labels=2)
    assert predict(load_model(model_copy), image).backend != "openvino-int8"
    with pytest.raises(InputError, match="no int8 network"):
        predict(load_model(model_copy), image, backend="openvino-int8")


def test_missing_stale_or_corrupt_int8_files(model_copy, trained, monkeypatch, capsys):
    monkeypatch.setattr(quantization, "MIN_AGREEMENT", 0.0)
    calibration.quantize_folder(model_copy, trained[1])
    image, _ = blob_case(np.random.default_rng(5), (24, 24, 16), (1.0, 1.0, 1.5), labels=2)
    xml = model_copy / quantization.INT8_FILE
    xml.write_text("<net>cut off", encoding="utf-8")
    with pytest.raises(InputError, match="corrupt int8"):
        predict(load_model(model_copy), image)
    xml.unlink()
    out = model_copy.parent / "out.nii.gz"
    assert main(["predict", "-m", str(model_copy), str(_write(image, model_copy.parent)), "-o", str(out)]) == 2
    assert "network-int8.xml but its files are missing" in capsys.readouterr().err and not out.exists()
    assert predict(load_model(model_copy), image, backend="torch").backend == "torch"  # a forced backend still runs
    # weights replaced after quantization: the int8 network no longer describes them and is not used
    calibration.quantize_folder(model_copy, trained[1])
    meta = json.loads((model_copy / "model.json").read_text())
    meta["int8"]["weights_sha256"] = "0" * 64
    (model_copy / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    assert predict(load_model(model_copy), image).backend != "openvino-int8"


def test_quantize_command_and_its_bad_inputs(model_copy, trained, tmp_path, capsys):
    assert main(["quantize", "-m", str(model_copy), str(trained[1])]) == 0
    assert "int8 network" in capsys.readouterr().out
    assert "int8" in read_model_json(model_copy)
    assert main(["quantize", "-m", str(tmp_path / "nowhere"), str(trained[1])]) == 2
    assert "model folder not found" in capsys.readouterr().err
    two_channels = tmp_path / "two"
    make_blob_dataset(two_channels, cases=2, size=(24, 24, 16), spacing=(1.0, 1.0, 1.5), labels=2, modality="CT")
    meta = json.loads((two_channels / "dataset.json").read_text())
    meta["channels"] = ["CT", "PET"]
    (two_channels / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    for case in (two_channels / "images").glob("case*.nii.gz"):
        shutil.copy(case, case.with_name(case.name.replace(".nii.gz", "_0001.nii.gz")))
    assert main(["quantize", "-m", str(model_copy), str(two_channels)]) == 2
    assert "channels" in capsys.readouterr().err


def test_2d_models_and_opting_out_get_no_int8_network(tmp_path):
    data = make_blob_dataset(tmp_path / "data", cases=4, size=(32, 32, 6), spacing=(1.0, 1.0, 5.0))
    dataset = load_dataset(data)
    plan = small_plan(plan_dataset(dataset), iterations=3)
    summary = train(dataset, tmp_path / "model2d", plan, TrainingOptions(epochs=1))
    assert summary["int8"].startswith("no int8 network") and "int8" not in read_model_json(tmp_path / "model2d")


def _write(image: sitk.Image, folder) -> str:
    path = folder / "input.nii.gz"
    sitk.WriteImage(image, str(path))
    return str(path)
