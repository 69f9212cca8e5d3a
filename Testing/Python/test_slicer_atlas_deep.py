"""Atlas and deep-learning logic of the SegToolkit module on real MRML nodes (slicer-core wheel): atlas segments
keep the atlas's names and colours and land on the target's structures, a tiny trained model's segments are the
voxels SegToolkitLib predicts, training builds its dataset from scene nodes; all through the Job path (compute on
a worker thread, finish on the polling thread) with a working cancel."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer")

import SimpleITK as sitk  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "SegToolkit" / "SegToolkit"))

from deep_synthetic import blob_case, dice  # noqa: E402
from SegToolkitSlicerLib import mrml as adapter  # noqa: E402
from SegToolkitSlicerLib.jobs import JobRunner  # noqa: E402
from SegToolkitSlicerLib.logic import SegToolkitSlicerLogic  # noqa: E402

from SegToolkitLib.errors import InputError  # noqa: E402
from SegToolkitLib.io import LabelMap, LabelTable  # noqa: E402

ORGANS = {"liver": (1, (0.85, 0.4, 0.3)), "spleen": (2, (0.2, 0.5, 0.9))}
SHIFT = (3, -2, 1)  # voxels (i, j, k) the target's content is moved by


def organ_image(shift=(0, 0, 0)) -> tuple[sitk.Image, np.ndarray]:
    """Two ellipsoids of different brightness on a smooth background, and their label array ([k, j, i])."""
    z, y, x = np.mgrid[:20, :36, :40].astype(float)
    x, y, z = x - shift[0], y - shift[1], z - shift[2]
    labels = np.zeros(x.shape, np.uint8)
    labels[((x - 13) / 7) ** 2 + ((y - 17) / 9) ** 2 + ((z - 10) / 5) ** 2 <= 1] = ORGANS["liver"][0]
    labels[((x - 28) / 5) ** 2 + ((y - 15) / 5) ** 2 + ((z - 9) / 4) ** 2 <= 1] = ORGANS["spleen"][0]
    voxels = 20 + 0.5 * x + np.where(labels == 1, 100.0, 0.0) + np.where(labels == 2, 180.0, 0.0)
    voxels += np.random.default_rng(sum(shift) + 3).normal(0, 4, labels.shape)
    image = sitk.GetImageFromArray(voxels.astype(np.float32))
    image.SetSpacing((1.2, 1.0, 2.0))
    image.SetOrigin((-20.0, 15.0, 30.0))
    return image, labels


def organ_table(order=("liver", "spleen")) -> LabelTable:
    table = LabelTable()
    for name in order:
        table.add(ORGANS[name][0], name, ORGANS[name][1])
    return table


def atlas_nodes(scene, name="atlas", order=("liver", "spleen")):
    """An atlas volume and its segmentation (segments created in ``order``)."""
    image, labels = organ_image()
    volume = adapter.add_volume_from_sitk(scene, image, name)
    segmentation = adapter.new_segmentation(scene, volume, f"{name} segmentation")
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    adapter.label_map_to_segments(LabelMap(label_image, organ_table()), segmentation,
                                  values=[ORGANS[name][0] for name in order])
    return volume, segmentation


def segments_by_name(segmentation, volume) -> dict[str, tuple[np.ndarray, tuple]]:
    result = {}
    for segment_id in adapter.segment_ids(segmentation):
        segment = segmentation.GetSegmentation().GetSegment(segment_id)
        mask = sitk.GetArrayFromImage(adapter.segmentation_to_label_map(segmentation, volume, [segment_id]).image)
        result[segment.GetName()] = (mask > 0, tuple(segment.GetColor()))
    return result


def run_in_thread(job) -> JobRunner:
    threads = {}
    compute, finish = job.compute, job.finish

    def watched_compute(progress, cancel):
        threads["compute"] = threading.current_thread()
        return compute(progress, cancel)

    def watched_finish(result):
        threads["finish"] = threading.current_thread()
        return finish(result)

    job.compute, job.finish = watched_compute, watched_finish
    runner = JobRunner(job).start().wait(timeout=120)
    assert threads["compute"] is not threading.current_thread()  # computed off the polling (GUI) thread...
    assert runner.error is not None or threads["finish"] is threading.current_thread()  # ...written on it
    return runner


# ---------------------------------------------------------------------------------------------------------- atlas
def test_atlas_job_writes_atlas_segments_on_the_target_structures(mrml):
    scene = mrml.scene
    logic = SegToolkitSlicerLogic(scene)
    target_image, expected = organ_image(SHIFT)
    target = adapter.add_volume_from_sitk(scene, target_image, "target")
    atlas_volume, atlas_segmentation = atlas_nodes(scene)
    steps = []
    job = logic.atlas_job(target, [(atlas_volume, atlas_segmentation)], transform="affine", preset="fast")
    job_progress = job.compute
    job.compute = lambda progress, cancel: job_progress(lambda f, m: (steps.append(f), progress(f, m)), cancel)
    runner = run_in_thread(job)
    assert runner.error is None and not runner.cancelled and len(runner.result) == 2
    assert steps and steps == sorted(steps)
    segmentation = scene.GetFirstNodeByName("target segmentation")
    written = segments_by_name(segmentation, target)
    assert set(written) == set(ORGANS)
    for name, (value, color) in ORGANS.items():
        mask, segment_color = written[name]
        assert segment_color == pytest.approx(color)
        assert dice(mask, expected == value, True) > 0.9


def test_several_atlases_agree_by_segment_name_and_folder_atlases(mrml, tmp_path):
    scene = mrml.scene
    logic = SegToolkitSlicerLogic(scene)
    target_image, expected = organ_image(SHIFT)
    target = adapter.add_volume_from_sitk(scene, target_image, "target")
    first = atlas_nodes(scene, "first")
    second = atlas_nodes(scene, "second", order=("spleen", "liver"))  # spleen is segment 1 here
    image, labels = organ_image()
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    sitk.WriteImage(image, str(tmp_path / "images" / "a.nrrd"))
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    sitk.WriteImage(label_image, str(tmp_path / "labels" / "a.nrrd"))
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": organ_table().to_json_dict()}))
    ids = logic.atlas(target, [first, second], folder=tmp_path, transform="affine", preset="fast",
                      fusion="majority")
    segmentation = scene.GetFirstNodeByName("target segmentation")
    written = segments_by_name(segmentation, target)
    assert len(ids) == 2 and set(written) == set(ORGANS)
    for name, (value, _) in ORGANS.items():
        assert dice(written[name][0], expected == value, True) > 0.9


def test_atlas_cancel_writes_nothing_and_bad_inputs(mrml):
    scene = mrml.scene
    logic = SegToolkitSlicerLogic(scene)
    target = adapter.add_volume_from_sitk(scene, organ_image(SHIFT)[0], "target")
    segmentation = adapter.new_segmentation(scene, target, "out")
    atlas = atlas_nodes(scene)
    runner = JobRunner(logic.atlas_job(target, [atlas], segmentation, transform="affine", preset="fast")).start()
    runner.cancel()
    runner.wait(timeout=60)
    assert runner.cancelled and runner.error is None
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0
    with pytest.raises(InputError, match="no atlas given"):
        logic.atlas_job(target)
    with pytest.raises(InputError, match="both a volume and its segmentation"):
        logic.atlas_job(target, [(atlas[0], None)])


# ----------------------------------------------------------------------------------------------------------- deep
@pytest.fixture(scope="module")
def blob_model(tmp_path_factory):
    """A small 3D model (labels blob1, blob2) trained through the deep API for a few dozen steps."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    from deep_synthetic import make_blob_dataset, small_plan

    from SegToolkitLib.methods.deep.dataset import load_dataset
    from SegToolkitLib.methods.deep.planning import plan_dataset
    from SegToolkitLib.methods.deep.training import TrainingOptions, train

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("slicer_deep")
    dataset = load_dataset(make_blob_dataset(folder / "data", cases=5, size=(24, 24, 16), spacing=(1.0, 1.0, 1.5),
                                             labels=2, modality="CT"))
    plan = small_plan(plan_dataset(dataset), filters=16, iterations=15)
    plan["training"]["learning_rate"] = 0.01
    train(dataset, folder / "models" / "blobs", plan, TrainingOptions(epochs=4, device="cpu"))
    yield folder / "models"
    torch.set_num_threads(previous)


def test_predict_job_writes_the_models_labels_on_the_predicted_voxels(mrml, blob_model):
    from SegToolkitLib.methods.deep.inference import predict

    scene = mrml.scene
    logic = SegToolkitSlicerLogic(scene)
    models = logic.models([blob_model])
    assert [(m.name, m.labels) for m in models] == [("blobs", ["blob1", "blob2"])]
    image, truth = blob_case(np.random.default_rng(11), (24, 24, 16), (1.0, 1.0, 1.5), labels=2)
    volume = adapter.add_volume_from_sitk(scene, image, "blobs")
    runner = run_in_thread(logic.predict_job(volume, models[0].folder, device="cpu"))
    assert runner.error is None and len(runner.result) == 2
    segmentation = scene.GetFirstNodeByName("blobs segmentation")
    written = segments_by_name(segmentation, volume)
    direct = predict(models[0].folder, adapter.volume_to_sitk(volume), device="cpu").label_map
    direct_array = sitk.GetArrayFromImage(direct.image)
    truth_array = sitk.GetArrayFromImage(truth)
    for value, name in ((1, "blob1"), (2, "blob2")):
        mask, color = written[name]
        assert np.array_equal(mask, direct_array == value)
        assert color == pytest.approx(direct.labels.get(value).color)
        assert dice(mask, truth_array == value, True) > 0.7
    with pytest.raises(InputError, match="not a SegToolkit model folder"):
        logic.predict_job(volume, blob_model)


def scene_training_pairs(scene, count=2):
    pairs, truths = [], []
    rng = np.random.default_rng(5)
    for number in range(count):
        image, label = blob_case(rng, (20, 20, 12), (1.0, 1.0, 2.0))
        volume = adapter.add_volume_from_sitk(scene, image, f"train{number}")
        segmentation = adapter.new_segmentation(scene, volume, f"train{number} segmentation")
        table = LabelTable()
        table.add(1, "blob", (0.1, 0.8, 0.2))
        adapter.label_map_to_segments(LabelMap(label, table), segmentation)
        pairs.append((volume, segmentation))
        truths.append((image, sitk.GetArrayFromImage(label)))
    return pairs, truths


def test_training_dataset_from_scene_nodes(mrml, tmp_path):
    from SegToolkitLib.methods.deep.dataset import load_dataset

    logic = SegToolkitSlicerLogic(mrml.scene)
    pairs, truths = scene_training_pairs(mrml.scene)
    folder = logic.build_training_dataset(pairs, tmp_path / "dataset", modality="MR")
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == {"1": {"name": "blob", "color": [0.1, 0.8, 0.2]}} and meta["modality"] == "MR"
    dataset = load_dataset(folder)
    assert [case.name for case in dataset.cases] == ["case000", "case001"]
    for case, (image, truth) in zip(dataset.cases, truths):
        images, labels = dataset.load_case(case)
        assert np.array_equal(labels, truth)
        assert np.allclose(images[0].GetOrigin(), image.GetOrigin())
        assert np.array_equal(sitk.GetArrayFromImage(images[0]), sitk.GetArrayFromImage(image))
    with pytest.raises(InputError, match="at least one volume"):
        logic.build_training_dataset([], tmp_path / "empty")


def test_train_job_adds_the_model_to_the_list(mrml, tmp_path, monkeypatch):
    import tempfile

    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    logic = SegToolkitSlicerLogic(mrml.scene)
    pairs, _ = scene_training_pairs(mrml.scene)
    try:
        runner = run_in_thread(logic.train_job(pairs, tmp_path / "models" / "mine", None, epochs=1,
                                               iterations_per_epoch=2, device="cpu"))
    finally:
        torch.set_num_threads(previous)
    assert runner.error is None and not runner.cancelled
    assert runner.result.name == "mine" and runner.result.labels == ["blob"]
    assert [model.folder for model in logic.models()] == [tmp_path / "models" / "mine"]
    assert not list((tmp_path / "tmp").iterdir())  # the temporary dataset is gone
    with pytest.raises(InputError, match="already holds a model"):
        logic.train_job(pairs, tmp_path / "models" / "mine", 1.0)


def test_deep_requirements_are_a_separate_group():
    from SegToolkitSlicerLib.dependencies import read_requirements

    shipped = Path(__file__).resolve().parents[2] / "SegToolkit/SegToolkit/Resources/requirements.txt"
    core, deep = read_requirements(shipped), read_requirements(shipped, "deep")
    assert "monai>=1.3" in deep and "safetensors>=0.4" in deep and not any("monai" in line for line in core)
    assert not any(line.startswith("torch") for line in deep)  # torch comes from the PyTorch extension
