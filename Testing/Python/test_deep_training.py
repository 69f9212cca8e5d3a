"""Deep engine training: loss with ignore label, a short training run, resume, transfer, model package, accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from deep_synthetic import blob_case, dice, make_blob_dataset, small_plan

torch = pytest.importorskip("torch")

from SegToolkitLib.errors import InputError  # noqa: E402
from SegToolkitLib.interfaces.cli.app import main  # noqa: E402
from SegToolkitLib.methods.deep.dataset import load_dataset  # noqa: E402
from SegToolkitLib.methods.deep.inference import keep_most_certain_components, predict  # noqa: E402
from SegToolkitLib.methods.deep.model_package import load_model, read_model_json  # noqa: E402
from SegToolkitLib.methods.deep.planning import plan_dataset  # noqa: E402
from SegToolkitLib.methods.deep.training import TrainingOptions, dice_ce_loss, train  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def blobs_2d(tmp_path_factory):
    folder = make_blob_dataset(tmp_path_factory.mktemp("blobs2d"), cases=6, size=(40, 40), spacing=(1.0, 1.0))
    dataset = load_dataset(folder)
    return dataset, small_plan(plan_dataset(dataset))


def test_ignore_label_is_left_out_of_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    ignored = target.clone()
    ignored[:, :4] = -1
    other = logits.detach().clone()
    other[:, :, :4] = torch.randn(2, 3, 4, 8) * 10  # changing ignored voxels' logits changes nothing
    assert float(dice_ce_loss(logits.detach(), ignored)) == pytest.approx(float(dice_ce_loss(other, ignored)), abs=1e-5)
    full = float(dice_ce_loss(logits.detach(), target))
    assert float(dice_ce_loss(logits.detach(), ignored)) != pytest.approx(full, abs=1e-3)
    loss = dice_ce_loss(logits, ignored)
    loss.backward()
    assert torch.all(logits.grad[:, :, :4] == 0) and torch.any(logits.grad[:, :, 4:] != 0)
    assert float(dice_ce_loss(logits.detach(), torch.full_like(target, -1))) == 0.0


def two_components(large_p: float, small_p: float) -> np.ndarray:
    """Probabilities (2, 1, 20, 40) of a 20x20 region at ``large_p`` and a separate 10x10 one at ``small_p``."""
    foreground = np.full((1, 20, 40), 0.02, np.float32)
    foreground[0, :, :20] = large_p
    foreground[0, 5:15, 28:38] = small_p
    return np.stack([1 - foreground, foreground])


def test_the_most_certain_component_is_kept_not_the_largest():
    hesitant = two_components(0.7, 0.97)  # a large region the network hesitates on, a small confident one
    keep_most_certain_components(hesitant, [1])
    assert not (hesitant.argmax(0)[0, :, :20] == 1).any() and (hesitant.argmax(0)[0, 5:15, 28:38] == 1).all()
    sure = two_components(0.97, 0.97)  # equally certain: the larger one stays
    keep_most_certain_components(sure, [1])
    assert (sure.argmax(0)[0, :, :20] == 1).all() and not (sure.argmax(0)[0, :, 20:] == 1).any()
    untouched = two_components(0.7, 0.97)
    keep_most_certain_components(untouched, [])
    assert np.array_equal(untouched, two_components(0.7, 0.97))


def head_beside_placenta(head_p: float, placenta_p: float) -> np.ndarray:
    """Probabilities (2, 1, 60, 60): a disc of radius 10 at ``head_p`` touching a larger ragged region at
    ``placenta_p``; above p = 0.5 they form one non-convex region."""
    rows, columns = np.mgrid[:60, :60]
    foreground = np.full((1, 60, 60), 0.02, np.float32)
    foreground[0, 5:30, 5:55] = placenta_p
    foreground[0, 5:12, 20:40] = 0.02  # a notch: the ragged region is not convex either
    foreground[0][np.hypot(rows - 40, columns - 30) <= 10] = head_p
    return np.stack([1 - foreground, foreground])


def test_a_convex_class_merged_with_a_neighbour_keeps_its_convex_piece():
    from SegToolkitLib.measurement.shape import solidity

    merged = head_beside_placenta(0.98, 0.75)
    assert solidity(merged.argmax(0)[0] == 1) < 0.95
    keep_most_certain_components(merged, [1], convex=[1])
    kept = merged.argmax(0)[0] == 1
    disc = np.hypot(*(np.mgrid[:60, :60] - np.array([40, 30])[:, None, None])) <= 10
    assert np.array_equal(kept, disc)  # the confident disc, nothing of the ragged region
    unsplittable = head_beside_placenta(0.75, 0.75)  # no level separates a convex piece: left as predicted
    keep_most_certain_components(unsplittable, [1], convex=[1])
    assert np.array_equal(unsplittable, head_beside_placenta(0.75, 0.75))
    not_convex_class = head_beside_placenta(0.98, 0.75)
    keep_most_certain_components(not_convex_class, [1], convex=[])
    assert np.array_equal(not_convex_class, head_beside_placenta(0.98, 0.75))


def test_a_convex_class_prefers_a_convex_component_over_a_more_certain_ragged_one():
    apart = head_beside_placenta(0.9, 0.85)
    apart[:, 0, 30:32] = [[1.0], [0.0]]  # a gap of background between the head and the ragged region
    apart[:, 0, 5:30, 5:55] = [[[0.15]], [[0.85]]]
    apart[:, 0, 5:12, 20:40] = [[[0.98]], [[0.02]]]
    assert (apart.argmax(0) == 1).sum() > 3 * 314  # the ragged region holds far more certainty than the disc
    plain = apart.copy()
    keep_most_certain_components(plain, [1])
    assert not (plain.argmax(0)[0, 40, 25:35] == 1).any()  # without the prior the ragged region wins
    keep_most_certain_components(apart, [1], convex=[1])
    assert (apart.argmax(0)[0, 40, 25:35] == 1).all() and not (apart.argmax(0)[0, 5:29] == 1).any()
    speck = head_beside_placenta(0.02, 0.85)
    speck[:, 0, 50:52, 50:52] = [[[0.02]], [[0.98]]]  # a tiny convex speck beside a large ragged region
    keep_most_certain_components(speck, [1], convex=[1])
    assert (speck.argmax(0)[0, 20, 10:15] == 1).all() and not (speck.argmax(0)[0, 50:52, 50:52] == 1).any()


def test_a_convex_prediction_and_a_3d_volume_are_left_alone():
    disc = head_beside_placenta(0.98, 0.02)
    keep_most_certain_components(disc, [1], convex=[1])
    assert np.array_equal(disc, head_beside_placenta(0.98, 0.02))
    volume = np.concatenate([head_beside_placenta(0.98, 0.75)] * 2, axis=1)  # (2, 2, 60, 60): two slices
    keep_most_certain_components(volume, [1], convex=[1])
    assert np.array_equal(volume, np.concatenate([head_beside_placenta(0.98, 0.75)] * 2, axis=1))


def test_partly_known_voxels_are_negatives_of_their_absent_classes():
    """Code 3 + 0b010 (three classes): the voxel is not class 1, and may be class 0 or 2."""
    target = torch.full((1, 4, 4), 3 + 0b010)
    target[0, 0] = 1  # a few drawn voxels of class 1
    flat = torch.zeros(1, 3, 4, 4)
    says_1, says_2 = flat.clone(), flat.clone()
    says_1[:, 1, 1:] = 4.0
    says_2[:, 2, 1:] = 4.0
    assert float(dice_ce_loss(says_1, target)) > float(dice_ce_loss(flat, target)) > float(dice_ce_loss(says_2, target))
    logits = flat.clone().requires_grad_(True)
    dice_ce_loss(logits, target).backward()
    assert torch.isfinite(logits.grad).all() and float(logits.grad[0, 1, 1:].min()) > 0  # pushes class 1 down


def test_tiny_model_learns_blobs_and_package_loads_without_pickle(blobs_2d, tmp_path, monkeypatch):
    dataset, plan = blobs_2d
    summary = train(dataset, tmp_path / "model", plan, TrainingOptions(epochs=4))
    assert summary["iterations"] == 4 * plan["training"]["iterations_per_epoch"]
    assert len(summary["history"]) == 4 and summary["final_validation_dice"] > 0.8
    files = {path.name for path in (tmp_path / "model").iterdir()}
    assert {"model.json", "model.safetensors", "training_curve.png"} <= files and "checkpoint" not in files
    meta = read_model_json(tmp_path / "model")
    assert meta["format_version"] == 1 and meta["labels"]["1"]["name"] == "blob1" and meta["class_values"] == [0, 1]

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load must not be used")

    monkeypatch.setattr(torch, "load", no_pickle)
    model = load_model(tmp_path / "model")
    image, label = blob_case(np.random.default_rng(42), (40, 40), (1.0, 1.0))
    result = predict(model, image)
    assert dice(sitk.GetArrayFromImage(result.label_map.image), sitk.GetArrayFromImage(label)) > 0.8


def test_resume_continues_from_checkpoint(blobs_2d, tmp_path):
    dataset, plan = blobs_2d
    folder = tmp_path / "model"

    class InterruptError(Exception):
        pass

    def stop_in_second_epoch(fraction, message):
        if message.startswith("epoch 2 "):
            raise InterruptError

    with pytest.raises(InterruptError):
        train(dataset, folder, plan, TrainingOptions(epochs=3), progress=stop_in_second_epoch)
    state = json.loads((folder / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1 and not (folder / "model.json").exists()
    with pytest.raises(InputError, match="other settings"):
        train(dataset, folder, plan, TrainingOptions(epochs=3, seed=5))
    summary = train(dataset, folder, plan, TrainingOptions(epochs=3))
    assert summary["epochs"] == 3 and summary["iterations"] == 3 * plan["training"]["iterations_per_epoch"]
    assert summary["history"][0] == state["history"][0]  # the first epoch was not redone


def test_transfer_learning_with_frozen_encoder(blobs_2d, tmp_path):
    dataset, plan = blobs_2d
    train(dataset, tmp_path / "base", plan, TrainingOptions(epochs=1, iterations_per_epoch=2))
    summary = train(dataset, tmp_path / "tuned", plan, TrainingOptions(epochs=1, iterations_per_epoch=2,
                                                                       init=tmp_path / "base", freeze_encoder=True))
    assert summary["init"]["tensors_copied"] > 0 and summary["init"]["frozen_parameters"] > 0
    base, tuned = load_model(tmp_path / "base"), load_model(tmp_path / "tuned")
    base_state, tuned_state = base.network.state_dict(), tuned.network.state_dict()
    encoder = [k for k in base_state if k.startswith("net.input_block.") and k.endswith("weight")]
    decoder = [k for k in base_state if k.startswith("net.output_block.") and k.endswith("weight")]
    assert encoder and all(torch.equal(base_state[k], tuned_state[k]) for k in encoder)
    assert not all(torch.equal(base_state[k], tuned_state[k]) for k in decoder)


@pytest.mark.parametrize("network", ["resenc", "dilated", "swinunetr"])
def test_other_networks_train_and_predict(blobs_2d, tmp_path, network):
    dataset, plan = blobs_2d
    summary = train(dataset, tmp_path / network, plan, TrainingOptions(network=network, epochs=1,
                                                                       iterations_per_epoch=2))
    assert summary["network"] == network
    image, _ = blob_case(np.random.default_rng(1), (40, 40), (1.0, 1.0))
    result = predict(tmp_path / network, image)
    assert result.label_map.image.GetSize() == (40, 40)


def test_cli_train_and_bad_model_folders(tmp_path, capsys):
    data = make_blob_dataset(tmp_path / "data", cases=3, size=(24, 24), spacing=(1.0, 1.0))
    assert main(["plan", str(data), "-o", str(tmp_path / "plan.json")]) == 0
    plan = small_plan(json.loads((tmp_path / "plan.json").read_text()), iterations=2)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    assert main(["train", str(data), "-o", str(tmp_path / "model"), "--plan", str(tmp_path / "plan.json"),
                 "--epochs", "1", "--network", "dilated"]) == 0
    assert "validation Dice" in capsys.readouterr().out
    assert main(["train", str(data), "-o", str(tmp_path / "m2"), "--epochs", "0"]) == 2
    assert "--epochs 0" in capsys.readouterr().err
    (tmp_path / "model" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="corrupt weights"):
        load_model(tmp_path / "model")
    (tmp_path / "model" / "model.json").write_text("{")
    with pytest.raises(InputError, match="corrupt model description"):
        load_model(tmp_path / "model")
    with pytest.raises(InputError, match="not a SegToolkit model folder"):
        load_model(tmp_path / "data")
    assert main(["predict", "-m", str(tmp_path / "data"), str(data / "images" / "case00.nii.gz"),
                 "-o", str(tmp_path / "out.nii.gz")]) == 2
    assert "not a SegToolkit model folder" in capsys.readouterr().err
    assert not (tmp_path / "out.nii.gz").exists()


def test_thick_slice_volumes_train_and_predict_slice_by_slice(tmp_path):
    data = make_blob_dataset(tmp_path / "data", cases=4, size=(32, 32, 6), spacing=(1.0, 1.0, 5.0))
    dataset = load_dataset(data)
    plan = small_plan(plan_dataset(dataset), iterations=5)
    assert plan["configuration"] == "2d"
    train(dataset, tmp_path / "model", plan, TrainingOptions(epochs=1))
    model = load_model(tmp_path / "model")
    assert model.spatial_dims == 2
    image, _ = blob_case(np.random.default_rng(2), (30, 28, 7), (1.1, 1.1, 4.0))
    result = predict(model, image, tta=True, uncertainty=True)
    assert result.label_map.image.GetSize() == (30, 28, 7) and result.uncertainty.GetSize() == (30, 28, 7)
    # 2D models mirror by default (cheap; nnU-Net's default): the default is the TTA result, not the single pass
    assert plan["inference"]["tta"] is True
    default = predict(model, image, uncertainty=True, uncertainty_method="disagreement", largest_component=False)
    explicit = predict(model, image, tta=True, uncertainty=True, uncertainty_method="disagreement",
                       largest_component=False)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(default.uncertainty),
                                  sitk.GetArrayFromImage(explicit.uncertainty))
    with pytest.raises(InputError, match="add --tta"):
        predict(model, image, tta=False, uncertainty=True, uncertainty_method="disagreement")
