"""nnU-Net v2 trained model folders run natively: parity with nnU-Net's own ``nnUNetPredictor`` on folders made
here (tiny random-weight PlainConvUNet / ResidualEncoderUNet, 2D and 3D, CT and z-score normalisation, anisotropic
spacing, a transposed plan, several folds), and hostile or broken folders refused before anything is written.

nnU-Net 2.8 accumulates the sliding-window logits in float16; we accumulate in float32. The exact comparison runs
nnU-Net's predictor with its accumulation switched to float32 (``fp32_nnunet``); the comparison with the unchanged
predictor checks the labels only, with the tolerance its float16 sums allow on random (undecided) networks.
"""

from __future__ import annotations

import json
import shutil
import types

import numpy as np
import pytest
import SimpleITK as sitk
from nnunet_synthetic import ct_image, image_2d, make_trained_folder, mr_image, nnunet_environment

torch = pytest.importorskip("torch")
pytest.importorskip("dynamic_network_architectures")

from SegToolkitLib.errors import InputError  # noqa: E402
from SegToolkitLib.methods.deep.formats.nnunet import load_nnunet, predict_nnunet  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def nnunet_predictor(tmp_path_factory):
    """nnU-Net's own predictor class (skipped when nnunetv2 is not installed)."""
    nnunet_environment(tmp_path_factory.mktemp("nnunet_env"))
    pytest.importorskip("nnunetv2")
    from nnunetv2.inference import predict_from_raw_data

    return predict_from_raw_data


@pytest.fixture
def fp32_nnunet(nnunet_predictor, monkeypatch):
    """nnU-Net's predictor with its float16 logit sums and Gaussian made float32 (nothing else changed)."""
    module = nnunet_predictor
    proxy = types.SimpleNamespace(**{name: getattr(torch, name) for name in dir(torch) if not name.startswith("__")})
    proxy.half = torch.float32
    original = module.compute_gaussian

    def gaussian32(*args, **kwargs):
        kwargs["dtype"] = torch.float32
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "torch", proxy)
    monkeypatch.setattr(module, "compute_gaussian", gaussian32)
    return module


def reference(module, folder, image: sitk.Image, folds, mirroring=True):
    """Labels and probabilities from nnUNetPredictor for one image (array order z, y, x)."""
    predictor = module.nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                       device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=tuple(folds),
                                                   checkpoint_name="checkpoint_final.pth")
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    if array.ndim == 2:
        spacing = [max(image.GetSpacing()) * 999, *reversed(image.GetSpacing())]
        array = array[None]
    else:
        spacing = list(reversed(image.GetSpacing()))
    labels, probabilities = predictor.predict_single_npy_array(array[None], {"spacing": spacing}, None, None, True)
    return labels, probabilities


def ours(folder, image, folds=None, backend="torch", tta=None):
    model = load_nnunet(folder, folds=folds, device="cpu")
    result = predict_nnunet(model, image, backend=backend, tta=tta, probabilities=True, largest_component=False)
    labels = sitk.GetArrayFromImage(result.label_map.image)
    probabilities = sitk.GetArrayFromImage(result.probabilities)
    return result, labels, probabilities


def dice_per_class(a: np.ndarray, b: np.ndarray, classes: int) -> list[float]:
    values = []
    for c in range(classes):
        total = (a == c).sum() + (b == c).sum()
        values.append(1.0 if total == 0 else 2 * ((a == c) & (b == c)).sum() / total)
    return values


CASES = {
    "plain-3d-ct-two-folds": (dict(folds=(0, 1)), ct_image),
    "resenc-3d-zscore-mask-anisotropic-transposed": (
        dict(network="ResidualEncoderUNet", normalization="ZScoreNormalization", use_mask=True,
             spacing=(1.0, 1.0, 3.5), transpose=(2, 1, 0), patch=(16, 16, 8), mirror=(0, 1)), mr_image),
    "plain-2d-zscore": (dict(configuration="2d", normalization="ZScoreNormalization", mirror=(0, 1)), image_2d),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_probabilities_and_labels_as_nnunet_predictor(case, fp32_nnunet, tmp_path):
    options, make_image = CASES[case]
    folder = make_trained_folder(tmp_path, **options)
    image = make_image()
    folds = [str(f) for f in options.get("folds", (0,))]
    expected_labels, expected_probabilities = reference(fp32_nnunet, folder, image, folds)
    result, labels, probabilities = ours(folder, image)
    assert result.label_map.image.GetSize() == image.GetSize()
    assert result.label_map.image.GetOrigin() == image.GetOrigin()
    expected = np.moveaxis(expected_probabilities[1:], 0, -1).reshape(probabilities.shape)
    assert np.abs(probabilities - expected).max() < 1e-4
    classes = 3
    assert len(np.unique(expected_labels)) == classes  # the random networks do decide something
    assert min(dice_per_class(labels, expected_labels.reshape(labels.shape), classes)) >= 0.999
    assert result.label_map.labels.name(1) == "liver" and result.label_map.labels.name(2) == "spleen"


def test_labels_agree_with_unchanged_nnunet_predictor_with_and_without_mirroring(nnunet_predictor, tmp_path):
    folder = make_trained_folder(tmp_path, folds=(0, 1))
    image = ct_image(seed=3)
    for mirroring in (True, False):
        expected, _ = reference(nnunet_predictor, folder, image, ["0", "1"], mirroring)
        _, labels, _ = ours(folder, image, tta=mirroring)
        assert (labels == expected).mean() > 0.995


def test_openvino_backend_agrees_with_torch(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setenv("SEGTOOLKIT_CACHE", str(tmp_path / "cache"))
    folder = make_trained_folder(tmp_path, folds=(0, 1))
    image = ct_image(seed=4)
    _, torch_labels, torch_probabilities = ours(folder, image, tta=False)
    result, labels, probabilities = ours(folder, image, backend="openvino", tta=False)
    assert result.backend == "openvino"
    assert np.abs(probabilities - torch_probabilities).max() < 1e-3
    assert min(dice_per_class(labels, torch_labels, 3)) >= 0.999
    assert len(list((tmp_path / "cache" / "openvino").glob("*.xml"))) == 2  # one per fold, cached


def test_dataset_folder_configuration_folds_and_checkpoint_choice(tmp_path):
    folder = make_trained_folder(tmp_path, folds=(0, 1, 2))
    make_trained_folder(tmp_path, configuration="2d", normalization="ZScoreNormalization")
    dataset_folder = folder.parent
    assert load_nnunet(dataset_folder).configuration == "3d_fullres"  # nnU-Net's default pick
    assert load_nnunet(dataset_folder, configuration="2d").configuration == "2d"
    assert load_nnunet(folder).folds == ["0", "1", "2"]
    assert load_nnunet(folder, folds=[2, 0]).folds == ["2", "0"]
    with pytest.raises(InputError, match="fold.*5.*no checkpoint_final"):
        load_nnunet(folder, folds=[5])
    with pytest.raises(InputError, match="no trained configuration '3d_lowres'"):
        load_nnunet(dataset_folder, configuration="3d_lowres")
    with pytest.raises(InputError, match="no fold_N/checkpoint_best"):
        load_nnunet(folder, checkpoint="best")
    shutil.copy(folder / "fold_1" / "checkpoint_final.pth", folder / "fold_1" / "checkpoint_best.pth")
    assert load_nnunet(folder, checkpoint="best").folds == ["1"]


def test_plans_of_nnunet_before_2_2_are_read_as_nnunet_reads_them(tmp_path, nnunet_predictor):
    """TotalSegmentator's weights come with plans in the older format (UNet_class_name, conv_kernel_sizes...)."""
    folder = make_trained_folder(tmp_path, mirror=None)
    plans = json.loads((folder / "plans.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    kwargs = config.pop("architecture")["arch_kwargs"]
    config.update({"UNet_class_name": "PlainConvUNet", "UNet_base_num_features": kwargs["features_per_stage"][0],
                   "unet_max_num_features": kwargs["features_per_stage"][-1],
                   "n_conv_per_stage_encoder": kwargs["n_conv_per_stage"],
                   "n_conv_per_stage_decoder": kwargs["n_conv_per_stage_decoder"], "num_pool_per_axis": [2, 2, 2],
                   "pool_op_kernel_sizes": kwargs["strides"], "conv_kernel_sizes": kwargs["kernel_sizes"]})
    (folder / "plans.json").write_text(json.dumps(plans))
    image = ct_image(seed=6)
    expected, _ = reference(nnunet_predictor, folder, image, ["0"])
    _, labels, _ = ours(folder, image)
    assert (labels == expected).mean() > 0.995


def test_stored_postprocessing_is_read_from_its_json_never_the_pickle(tmp_path):
    folder = make_trained_folder(tmp_path)
    crossval = folder / "crossval_results_folds_0"
    crossval.mkdir()
    (crossval / "postprocessing.pkl").write_bytes(b"not read")
    (crossval / "postprocessing.json").write_text(json.dumps({
        "postprocessing_fns": ["remove_all_but_largest_component_from_segmentation"],
        "postprocessing_kwargs": [{"labels_or_regions": [1, 2]}]}))
    model = load_nnunet(folder)
    assert model.postprocessing == [[1, 2]]
    image = ct_image(seed=5)
    plain = predict_nnunet(model, image, backend="torch", tta=False, largest_component=False).label_map.image
    cleaned = predict_nnunet(model, image, backend="torch", tta=False).label_map.image
    from scipy import ndimage

    foreground = sitk.GetArrayFromImage(cleaned) > 0
    assert ndimage.label(foreground, np.ones((3, 3, 3)))[1] == 1
    assert foreground.sum() <= (sitk.GetArrayFromImage(plain) > 0).sum()


# ---------------------------------------------------------------------------------------------- hostile input


class Payload:
    """A pickle that would run code when fully unpickled."""

    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-segtoolkit-test",))


def test_pickle_payload_in_checkpoint_is_refused(tmp_path):
    folder = make_trained_folder(tmp_path)
    path = folder / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["logging"]["payload"] = Payload()
    torch.save(checkpoint, path)
    with pytest.raises(InputError, match="refused: the checkpoint needs more than tensors"):
        load_nnunet(folder)


def test_unknown_architecture_and_foreign_building_blocks_are_refused(tmp_path):
    folder = make_trained_folder(tmp_path)
    plans = json.loads((folder / "plans.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    arch["network_class_name"] = "my_lab.networks.FancyNet"
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(InputError, match="network class 'my_lab.networks.FancyNet' is not supported"):
        load_nnunet(folder)
    arch["network_class_name"] = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    arch["arch_kwargs"]["nonlin"] = "os.system"
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(InputError, match="nonlin = 'os.system' is not a known torch.nn building block"):
        load_nnunet(folder)


def test_wrong_channel_count_and_missing_folds(tmp_path):
    folder = make_trained_folder(tmp_path)
    dataset = json.loads((folder / "dataset.json").read_text())
    dataset["channel_names"] = {"0": "CT", "1": "PET"}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(InputError, match="2 channels"):
        load_nnunet(folder)
    dataset["channel_names"] = {"0": "CT"}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    other = make_trained_folder(tmp_path / "b", channels=2)
    model = load_nnunet(other)
    with pytest.raises(InputError, match="needs 2 channel"):
        predict_nnunet(model, ct_image())
    (folder / "fold_0" / "checkpoint_final.pth").unlink()
    with pytest.raises(InputError, match="no fold_N/checkpoint_final"):
        load_nnunet(folder)


def test_regions_and_2d_image_for_3d_model_are_refused(tmp_path):
    folder = make_trained_folder(tmp_path)
    model = load_nnunet(folder)
    with pytest.raises(InputError, match="is 3D"):
        predict_nnunet(model, image_2d())
    dataset = json.loads((folder / "dataset.json").read_text())
    dataset["labels"]["whole"] = [1, 2]
    (folder / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(InputError, match="region-based"):
        load_nnunet(folder)


# ---------------------------------------------------------------------------------------------- engine features


def test_progress_cancel_and_memory_guard(tmp_path, monkeypatch):
    from SegToolkitLib.errors import CancelledError
    from SegToolkitLib.methods.deep import inference
    from SegToolkitLib.progress import CancelToken

    model = load_nnunet(make_trained_folder(tmp_path))
    image = ct_image()
    seen = []
    predict_nnunet(model, image, backend="torch", tta=False, progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and any("window" in m for _, m in seen)
    token = CancelToken()

    def cancel_at_first_window(fraction, message):
        if message.startswith("window"):
            token.cancel()

    with pytest.raises(CancelledError):
        predict_nnunet(model, image, backend="torch", progress=cancel_at_first_window, cancel=token)
    monkeypatch.setattr(inference, "available_memory_bytes", lambda: 1000)
    with pytest.raises(InputError, match="needs about .* GB but only"):
        predict_nnunet(model, image, backend="torch")


def test_int8_networks_for_an_imported_model_calibrated_on_named_images(tmp_path, monkeypatch, capsys):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from SegToolkitLib.interfaces.cli.app import main
    from SegToolkitLib.methods.deep import quantization
    from SegToolkitLib.methods.deep.formats.loading import open_model
    from SegToolkitLib.methods.deep.store import import_model

    monkeypatch.setenv("SEGTOOLKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SEGTOOLKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(quantization, "MIN_AGREEMENT", 0.0)  # keep it whatever the random network's agreement
    folder = make_trained_folder(tmp_path / "src")
    images = []
    for seed in (20, 21):
        images.append(tmp_path / f"ct{seed}.nii.gz")
        sitk.WriteImage(ct_image(seed=seed), str(images[-1]))
    assert main(["quantize", "-m", str(folder), str(images[0])]) == 2
    assert "import the model first" in capsys.readouterr().err
    import_model(folder.parent, "tiny")
    assert main(["quantize", "-m", "tiny", *map(str, images)]) == 0
    assert "int8 network saved" in capsys.readouterr().out
    model = open_model("tiny")
    result = predict_nnunet(model, ct_image(seed=22), tta=False)
    assert result.backend == "openvino-int8"
    fp32 = predict_nnunet(model, ct_image(seed=22), tta=False, backend="torch")
    agreement = (sitk.GetArrayFromImage(result.label_map.image) == sitk.GetArrayFromImage(fp32.label_map.image))
    assert agreement.mean() > 0.9


# ---------------------------------------------------------------------------------------------- bf16, streaming


def test_bf16_matrix_unit_check_reads_the_cpu_flags(tmp_path):
    from SegToolkitLib.methods.deep.backends import has_bf16_matrix_units

    with_amx, without = tmp_path / "amx", tmp_path / "zen4"
    with_amx.write_text("processor\t: 0\nflags\t\t: fpu avx512_bf16 amx_bf16 amx_tile amx_int8\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    assert has_bf16_matrix_units(str(with_amx)) is True
    assert has_bf16_matrix_units(str(without)) is False  # bf16 instructions alone are not matrix units
    assert has_bf16_matrix_units(str(tmp_path / "absent")) is False  # not Linux


def test_auto_chooses_openvino_bf16_only_on_cpus_with_bf16_matrix_units(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from SegToolkitLib.methods.deep.formats import nnunet

    monkeypatch.setenv("SEGTOOLKIT_CACHE", str(tmp_path / "cache"))
    model = load_nnunet(make_trained_folder(tmp_path))
    many = nnunet.OPENVINO_MIN_PASSES
    monkeypatch.setattr(nnunet, "has_bf16_matrix_units", lambda: True)
    assert nnunet.choose_backend(model, "auto", many) == "openvino-bf16"
    assert nnunet.choose_backend(model, "auto", 1) in ("torch", "torch-bf16")  # the conversion would not pay
    assert nnunet.choose_backend(model, "openvino", many) == "openvino"  # a forced backend stays
    monkeypatch.setattr(nnunet, "has_bf16_matrix_units", lambda: False)
    assert nnunet.choose_backend(model, "auto", many) == "openvino"
    monkeypatch.setattr(nnunet, "int8_ready", lambda model: True)  # a checked int8 network comes first
    monkeypatch.setattr(nnunet, "has_bf16_matrix_units", lambda: True)
    assert nnunet.choose_backend(model, "auto", many) == "openvino-int8"


def test_openvino_bf16_labels_agree_with_torch_fp32_and_the_cli_takes_it(tmp_path, monkeypatch, capsys):
    pytest.importorskip("openvino")
    from SegToolkitLib.interfaces.cli.app import main

    monkeypatch.setenv("SEGTOOLKIT_CACHE", str(tmp_path / "cache"))
    folder = make_trained_folder(tmp_path)
    image = ct_image(seed=5)
    _, fp32_labels, _ = ours(folder, image, tta=False)
    result, labels, _ = ours(folder, image, backend="openvino-bf16", tta=False)
    assert result.backend == "openvino-bf16"
    assert len(np.unique(fp32_labels)) == 3
    assert min(dice_per_class(labels, fp32_labels, 3)) >= 0.99
    source, out = tmp_path / "ct.nii.gz", tmp_path / "labels.nii.gz"
    sitk.WriteImage(image, str(source))
    assert main(["predict", "-m", str(folder), str(source), "-o", str(out), "--backend", "openvino-bf16"]) == 0
    assert "openvino-bf16" in capsys.readouterr().out
    default = predict_nnunet(load_nnunet(folder), sitk.ReadImage(str(source)), backend="openvino-bf16")  # as predict
    assert (sitk.GetArrayFromImage(sitk.ReadImage(str(out))) == sitk.GetArrayFromImage(default.label_map.image)).all()


@pytest.mark.parametrize("spacing", [(0.9, 0.8, 0.7), (0.9, 0.8, 3.5)], ids=["joint", "separate-axis"])
def test_logits_streamed_band_by_band_give_the_whole_array_result(tmp_path, spacing):
    """Large cases never hold the whole working-grid logits: rows go to the input grid as soon as no later window
    reaches them. The result is the one of resampling the whole logits at once."""
    from SegToolkitLib.methods.deep.formats import nnunet

    model = load_nnunet(make_trained_folder(tmp_path, patch=(4, 8, 8)))
    image = ct_image(seed=6)
    image.SetSpacing(spacing)
    case = nnunet.preprocess(model, [image])
    run = [lambda windows: torch.cat([torch.sin(windows[:, :1] * (c + 1) + c) for c in range(3)], 1)]
    whole = nnunet.sliding_window_logits(model, case.data, run, [()])
    expected_labels, expected_probabilities = nnunet.logits_to_input_grid(model, whole, case, True)
    made = []
    grid = nnunet.InputGridLabels(model, case, case.data.shape[1:], True)
    grid.OUTPUT_VOXELS = 2000  # small bands
    original = grid._make
    grid._make = lambda rows, first, last: (made.append(first), original(rows, first, last))
    assert grid.streams and nnunet.sliding_window_logits(model, case.data, run, [()], sink=grid) is None
    labels, probabilities = grid.result(case, model)
    assert len(made) > 2
    assert (labels == expected_labels).all()
    assert np.abs(probabilities - expected_probabilities).max() < 1e-6
