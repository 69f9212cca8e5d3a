"""Deep engine inference: input grid kept (oblique, anisotropic), TTA, probability/uncertainty maps, several
inputs through the CLI, cancel, and bad inputs (channels, dimension, memory)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import SimpleITK as sitk
from deep_synthetic import blob_case, dice, make_blob_dataset, small_plan

torch = pytest.importorskip("torch")

from SegToolkitLib.errors import CancelledError, InputError  # noqa: E402
from SegToolkitLib.interfaces.cli.app import main  # noqa: E402
from SegToolkitLib.methods.deep import inference  # noqa: E402
from SegToolkitLib.methods.deep.dataset import load_dataset  # noqa: E402
from SegToolkitLib.methods.deep.inference import estimate_memory_bytes, keep_largest_components, predict  # noqa: E402
from SegToolkitLib.methods.deep.model_package import load_model  # noqa: E402
from SegToolkitLib.methods.deep.planning import plan_dataset  # noqa: E402
from SegToolkitLib.methods.deep.training import TrainingOptions, train  # noqa: E402
from SegToolkitLib.progress import CancelToken  # noqa: E402

OBLIQUE = (0.9659258, -0.258819, 0.0, 0.258819, 0.9659258, 0.0, 0.0, 0.0, 1.0)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def model_3d(tmp_path_factory):
    """A small 3D model (two blob labels) trained for a few dozen steps."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("deep3d")
    data = make_blob_dataset(folder / "data", cases=5, size=(24, 24, 16), spacing=(1.0, 1.0, 1.5), labels=2,
                             modality="CT")  # fixed normalisation: robust to the test images' other sizes
    dataset = load_dataset(data)
    plan = small_plan(plan_dataset(dataset), filters=16, iterations=15)
    plan["training"]["learning_rate"] = 0.01
    train(dataset, folder / "model", plan, TrainingOptions(epochs=4, quantize=False))  # int8: its own tests
    return load_model(folder / "model"), data


def test_prediction_is_on_the_exact_oblique_anisotropic_input_grid(model_3d):
    model, _ = model_3d
    image, label = blob_case(np.random.default_rng(7), (34, 30, 12), (0.8, 0.8, 2.2), labels=2, direction=OBLIQUE)
    image.SetOrigin((12.5, -3.0, 40.0))
    label.CopyInformation(image)
    result = predict(model, image, largest_component=True)
    out = result.label_map.image
    assert out.GetSize() == image.GetSize() and out.GetSpacing() == image.GetSpacing()
    assert out.GetOrigin() == image.GetOrigin() and out.GetDirection() == image.GetDirection()
    truth, predicted = sitk.GetArrayFromImage(label), sitk.GetArrayFromImage(out)
    assert dice(predicted > 0, truth > 0) > 0.7  # a misplaced result would not overlap
    assert result.label_map.labels.name(2) == "blob2"


def test_tta_probabilities_and_uncertainty(model_3d):
    model, _ = model_3d
    image, _ = blob_case(np.random.default_rng(3), (24, 24, 16), (1.0, 1.0, 1.5), labels=2)
    plain = predict(model, image, backend="torch")
    steps = []
    result = predict(model, image, tta=True, probabilities=True, uncertainty=True, backend="torch",
                     progress=lambda fraction, message: steps.append(fraction))
    assert steps == sorted(steps) and steps[-1] == 1.0
    probabilities = sitk.GetArrayFromImage(result.probabilities)
    assert result.probabilities.GetNumberOfComponentsPerPixel() == 2 and probabilities.shape == (16, 24, 24, 2)
    assert probabilities.min() >= 0 and probabilities.sum(-1).max() <= 1.0 + 1e-4
    labels = sitk.GetArrayFromImage(result.label_map.image)
    assert np.all(probabilities[labels == 1][:, 0] > 0.3)
    uncertainty = sitk.GetArrayFromImage(result.uncertainty)
    assert 0 <= uncertainty.min() and uncertainty.max() <= 1.0 + 1e-5
    boundary = sitk.GetArrayFromImage(sitk.BinaryContour(sitk.Cast(result.label_map.image > 0, sitk.sitkUInt8))) > 0
    assert uncertainty[boundary].mean() > uncertainty[~boundary].mean()  # least certain at the edges
    assert dice(sitk.GetArrayFromImage(plain.label_map.image), labels, 1) > 0.9  # TTA refines, does not change


def test_tta_disagreement_uncertainty(model_3d):
    model, _ = model_3d
    image, _ = blob_case(np.random.default_rng(3), (24, 24, 16), (1.0, 1.0, 1.5), labels=2)
    result = predict(model, image, tta=True, uncertainty=True, uncertainty_method="disagreement", backend="torch")
    disagreement = sitk.GetArrayFromImage(result.uncertainty)
    assert result.uncertainty.GetSize() == image.GetSize()
    # 8 mirrored passes: a voxel's value is the (blended) fraction of passes that chose another label
    assert 0 <= disagreement.min() and disagreement.max() <= 7 / 8 + 1e-5
    labels = sitk.GetArrayFromImage(result.label_map.image)
    boundary = sitk.GetArrayFromImage(sitk.BinaryContour(sitk.Cast(result.label_map.image > 0, sitk.sitkUInt8))) > 0
    assert disagreement[boundary].mean() > disagreement[~boundary].mean()
    assert np.median(disagreement[labels == 0]) == 0.0  # the passes agree on most of the background
    entropy = sitk.GetArrayFromImage(predict(model, image, tta=True, uncertainty=True, backend="torch").uncertainty)
    assert not np.allclose(entropy, disagreement)
    with pytest.raises(InputError, match="add --tta"):
        predict(model, image, uncertainty=True, uncertainty_method="disagreement")
    with pytest.raises(InputError, match="uncertainty method 'variance'"):
        predict(model, image, uncertainty=True, uncertainty_method="variance")


def test_bf16_backend_agrees_with_fp32(model_3d, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGTOOLKIT_CACHE", str(tmp_path))
    model, _ = model_3d
    image, _ = blob_case(np.random.default_rng(5), (24, 24, 16), (1.0, 1.0, 1.5), labels=2)
    fp32 = sitk.GetArrayFromImage(predict(model, image, backend="torch").label_map.image)
    bf16 = sitk.GetArrayFromImage(predict(model, image, backend="torch-bf16").label_map.image)
    assert dice(fp32 > 0, bf16 > 0) > 0.97


def test_openvino_backend_agrees_and_is_cached(model_3d, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    model, _ = model_3d
    monkeypatch.setenv("SEGTOOLKIT_CACHE", str(tmp_path / "cache"))
    image, _ = blob_case(np.random.default_rng(5), (24, 24, 16), (1.0, 1.0, 1.5), labels=2)
    fp32 = sitk.GetArrayFromImage(predict(model, image, backend="torch").label_map.image)
    converted = predict(model, image, backend="openvino")
    assert converted.backend == "openvino" and len(list((tmp_path / "cache" / "openvino").glob("*.xml"))) == 1
    assert dice(fp32 > 0, sitk.GetArrayFromImage(converted.label_map.image) > 0) > 0.97
    monkeypatch.setattr(inference, "has_bf16_matrix_units", lambda: False)  # AMX CPUs choose openvino-bf16
    assert predict(model, image).backend == "openvino"  # auto uses the cached conversion


def test_bad_inputs(model_3d, monkeypatch):
    model, _ = model_3d
    image, _ = blob_case(np.random.default_rng(3), (24, 24, 16), (1.0, 1.0, 1.5))
    with pytest.raises(InputError, match=r"needs 1 channel\(s\)"):
        predict(model, [image, image])
    flat, _ = blob_case(np.random.default_rng(3), (24, 24), (1.0, 1.0))
    with pytest.raises(InputError, match="2D image but this model is a 3D model"):
        predict(model, flat)
    big = sitk.Image(512, 512, 300, sitk.sitkInt16)
    need = estimate_memory_bytes(model, big)
    assert 1e9 < need < 4e9
    monkeypatch.setattr(inference, "available_memory_bytes", lambda: int(need // 2))
    with pytest.raises(InputError, match="needs about .* GB but only"):
        predict(model, big)
    monkeypatch.undo()
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        predict(model, image, cancel=token)
    with pytest.raises(InputError, match="backend"):
        predict(model, image, backend="tpu")


def test_largest_component_keeps_one_piece():
    array = np.zeros((1, 10, 10), np.uint8)
    array[0, 1:3, 1:3] = 1
    array[0, 5:9, 5:9] = 1
    image = sitk.GetImageFromArray(array)
    from SegToolkitLib.io import LabelMap, LabelTable

    kept = sitk.GetArrayFromImage(keep_largest_components(LabelMap(image, LabelTable())).image)
    assert kept.sum() == 16 and kept[0, 1, 1] == 0


def test_cli_predicts_several_inputs_with_one_model(model_3d, tmp_path, capsys):
    model, data = model_3d
    inputs = [str(data / "images" / f"case0{i}.nii.gz") for i in range(2)]
    out = tmp_path / "out"
    code = main(["predict", "-m", str(model.folder), *inputs, "-o", str(out), "--tta", "--backend", "torch",
                 "--uncertainty", str(tmp_path / "unc"), "--uncertainty-method", "disagreement",
                 "--probabilities", str(tmp_path / "prob")])
    assert code == 0
    for index in range(2):
        label = sitk.ReadImage(str(out / f"case0{index}.nii.gz"))
        truth = sitk.ReadImage(str(data / "labels" / f"case0{index}.nii.gz"))
        assert label.GetSize() == truth.GetSize()
        assert (tmp_path / "unc" / f"case0{index}.nii.gz").is_file()
        assert (tmp_path / "prob" / f"case0{index}.nii.gz").is_file()
    assert capsys.readouterr().out.count("labels [1, 2]") == 2
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(blob_case(np.random.default_rng(0), (20, 20), (1.0, 1.0))[0], str(flat))
    assert main(["predict", "-m", str(model.folder), str(flat), "-o", str(tmp_path / "x.nii.gz")]) == 2
    assert "3D model" in capsys.readouterr().err and not (tmp_path / "x.nii.gz").exists()


def _sample(labels: np.ndarray):
    from SegToolkitLib.methods.deep.training import _Sample

    return _Sample("case", np.zeros((1,) + labels.shape, np.float32), labels.astype(np.int16), [], np.zeros((0, 3)))


def test_shape_priors_come_from_the_training_labels():
    from SegToolkitLib.methods.deep.training import shape_priors

    solid = np.zeros((1, 12, 12), np.int16)
    solid[0, 2:10, 2:10] = 1
    solid[0, 4:6, 4:6] = 2  # label 1 has a hole (filled by label 2); label 2 is one solid piece
    split = np.zeros((1, 12, 12), np.int16)
    split[0, 1:3, 1:3] = split[0, 6:9, 6:9] = 1  # label 1 in two pieces
    # label 1 is not convex either (its hole), label 2 is a convex square
    assert shape_priors([_sample(solid)], [0, 1, 2]) == {"largest_component": [1, 2], "fill_holes": [2],
                                                        "convex": [2]}
    assert shape_priors([_sample(solid), _sample(split)], [0, 1, 2]) == {"largest_component": [2], "fill_holes": [2],
                                                                        "convex": [2]}
    sparse = solid.copy()
    sparse[0, 0] = -1  # unannotated voxels: no shape claim at all
    assert shape_priors([_sample(sparse)], [0, 1, 2]) == {"largest_component": [], "fill_holes": [], "convex": []}


def test_only_2d_labels_convex_in_every_case_are_convex():
    from SegToolkitLib.methods.deep.training import shape_priors

    disc = (np.hypot(*np.mgrid[-10:11, -10:11]) <= 8).astype(np.int16)[None]
    bent = np.zeros((1, 21, 21), np.int16)
    bent[0, 2:18, 2:6] = bent[0, 14:18, 2:18] = 1  # an L: one solid piece, far from convex
    assert shape_priors([_sample(disc)], [0, 1])["convex"] == [1]
    assert shape_priors([_sample(disc), _sample(bent)], [0, 1]) == {"largest_component": [1], "fill_holes": [1],
                                                                   "convex": []}
    volume = np.concatenate([disc, disc])  # two slices: a 3D case, no 2D convexity claim
    assert shape_priors([_sample(volume)], [0, 1])["convex"] == []


def test_postprocess_follows_the_model_defaults_unless_overridden(model_3d):
    from SegToolkitLib.io import LabelMap

    model = load_model(model_3d[0].folder)
    model.meta["postprocessing"] = {"largest_component": [1], "fill_holes": [1]}
    array = np.zeros((1, 12, 12), np.uint8)
    array[0, 2:9, 2:9] = 1
    array[0, 5, 5] = 0  # a hole
    array[0, 10:12, 10:12] = 1  # an island
    label_map = LabelMap(sitk.GetImageFromArray(array), model.labels)
    cleaned = sitk.GetArrayFromImage(inference.postprocess(label_map, model, None, None).image)
    assert cleaned.sum() == 49 and cleaned[0, 5, 5] == 1 and cleaned[0, 11, 11] == 0
    untouched = sitk.GetArrayFromImage(inference.postprocess(label_map, model, False, False).image)
    np.testing.assert_array_equal(untouched, array)


def test_ct_content_box_is_on_by_default_and_follows_the_window_grid():
    plan = {"normalisation": [{"scheme": "ct", "clip": [-100.0, 200.0], "mean": 50.0, "std": 50.0}],
            "configuration": "3d", "patch_size": [8, 8, 8]}
    array = np.full((1, 40, 40, 40), -3.0, np.float32)  # (-100 - 50) / 50: the lower clip (air)
    array[0, 10:20, 15:25, 5:30] = 1.0
    # whole-array windows start at 0, 4, ..., 32; the box spans those that overlap the content
    assert inference.window_starts(40, 8, 0.5) == list(range(0, 33, 4))
    assert inference.window_starts(42, 8, 0.5)[-2:] == [32, 34]  # the last one ends at the border
    assert inference.content_box(array, plan) == (slice(4, 24), slice(8, 32), slice(0, 36))
    plan["inference"] = {"crop_to_content": False}  # the plan's switch
    assert inference.content_box(array, plan) == (slice(0, 40),) * 3
    plan["inference"] = {}
    plan["normalisation"] = [{"scheme": "zscore"}]  # other modalities: no constant floor to crop
    assert inference.content_box(array, plan) == (slice(0, 40),) * 3


def test_content_crop_skips_air_windows_and_keeps_the_whole_array_labels(model_3d):
    model, _ = model_3d
    image, _ = blob_case(np.random.default_rng(11), (24, 24, 16), (1.0, 1.0, 1.5), labels=2)
    array = sitk.GetArrayFromImage(image)
    padded = np.concatenate([array, np.full(array.shape[:2] + (48,), -5.0, np.float32)], axis=2)  # air beside
    image = sitk.GetImageFromArray(padded)
    image.SetSpacing((1.0, 1.0, 1.5))
    whole_model = copy.copy(model)
    whole_model.meta = copy.deepcopy(model.meta)
    whole_model.plan["inference"] = {"crop_to_content": False}
    runs = {}
    for name, each in (("crop", model), ("whole", whole_model)):
        messages: list[str] = []
        result = predict(each, image, backend="torch", largest_component=False, fill_holes=False,
                         progress=lambda fraction, message, seen=messages: seen.append(message))
        windows = max(int(m.split("/")[1]) for m in messages if m.startswith("window"))
        runs[name] = (sitk.GetArrayFromImage(result.label_map.image), windows)
    assert runs["crop"][1] < runs["whole"][1]
    assert runs["crop"][0][..., :24].any()
    np.testing.assert_array_equal(runs["crop"][0][..., :24], runs["whole"][0][..., :24])


def test_clean_up_inside_label_boxes_matches_the_whole_image():
    from scipy import ndimage

    from SegToolkitLib.io import LabelMap, LabelTable

    noise = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal((20, 30, 30)), 1.5)
    array = np.digitize(noise, [-0.04, 0.04]).astype(np.uint8)  # labels 0, 1, 2 in many pieces, with holes
    array[:, :, :3] = 0
    expected = array.copy()
    for value in (1, 2):  # the plain whole-image reference
        components, count = ndimage.label(expected == value)
        assert count > 1
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        expected[(components != sizes.argmax()) & (components > 0)] = 0
    kept = expected.copy()
    for value in (1, 2):
        mask = expected == value
        expected[ndimage.binary_fill_holes(mask) & ~mask] = value
    assert (expected != kept).any()  # there were holes to fill
    label_map = LabelMap(sitk.GetImageFromArray(array), LabelTable())
    largest = keep_largest_components(label_map)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(largest.image), kept)
    filled = inference.fill_label_holes(largest, [1, 2])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(filled.image), expected)


def test_auto_backend_converts_only_when_it_pays_off_and_a_forced_backend_stays(monkeypatch):
    import importlib.util

    if importlib.util.find_spec("openvino") is not None:
        monkeypatch.setattr(inference, "has_bf16_matrix_units", lambda: False)
        assert inference.choose_backend("auto", "cpu", windows=inference.OPENVINO_MIN_WINDOWS) == "openvino"
        assert inference.choose_backend("auto", "cpu", windows=1, converted=True) == "openvino"  # cached
        monkeypatch.setattr(inference, "has_bf16_matrix_units", lambda: True)  # AMX: bf16 matrix units
        assert inference.choose_backend("auto", "cpu", windows=1, converted=True) == "openvino-bf16"
        monkeypatch.setattr(inference, "has_bf16_matrix_units", lambda: False)
    fallback = inference.choose_backend("auto", "cpu", windows=inference.OPENVINO_MIN_WINDOWS - 1)
    assert fallback in ("torch", "torch-bf16")
    for forced in ("torch", "torch-bf16"):
        assert inference.choose_backend(forced, "cpu", windows=1000, converted=True) == forced
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "openvino"
                        else find_spec(name, *args))
    assert inference.choose_backend("auto", "cpu", windows=1000, converted=True) == fallback
    with pytest.raises(InputError, match="openvino package"):
        inference.choose_backend("openvino", "cpu")


def test_first_argmax_matches_numpy_argmax_including_ties():
    rng = np.random.default_rng(3)
    channels = rng.integers(0, 4, (5, 7, 9, 11)).astype(np.float32)  # few distinct values: many ties
    assert np.array_equal(inference.first_argmax(list(channels)), channels.argmax(0))
    assert inference.first_argmax(list(channels)).dtype == np.uint8
