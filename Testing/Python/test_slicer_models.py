"""The Deep section's model store in the Slicer logic on real MRML nodes (slicer-core wheel): an nnU-Net zip imported
in the background appears in the list with its classes, a class subset becomes segments named by class on the
voxels SegToolkitLib predicts, catalog models are listed for download, and a cancelled import writes nothing."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer")
pytest.importorskip("torch")
pytest.importorskip("dynamic_network_architectures")

import SimpleITK as sitk  # noqa: E402
from nnunet_synthetic import ct_image, make_trained_folder  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "SegToolkit" / "SegToolkit"))

from SegToolkitSlicerLib import mrml as adapter  # noqa: E402
from SegToolkitSlicerLib.jobs import JobRunner  # noqa: E402
from SegToolkitSlicerLib.logic import SegToolkitSlicerLogic, store_models  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGTOOLKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SEGTOOLKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "home"


def exported_zip(tmp_path: Path) -> Path:
    make_trained_folder(tmp_path / "src")
    archive = tmp_path / "Dataset999_Tiny.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted((tmp_path / "src").rglob("*")):
            if path.is_file():
                handle.write(path, path.relative_to(tmp_path / "src").as_posix())
    return archive


def test_imported_nnunet_model_is_listed_and_segments_are_named_by_class(mrml, home, tmp_path):
    from SegToolkitLib.methods.deep.formats.loading import open_model, predict_any

    logic = SegToolkitSlicerLogic(mrml.scene)
    runner = JobRunner(logic.import_model_job(exported_zip(tmp_path), "tiny")).start().wait(timeout=120)
    assert runner.error is None and runner.result.name == "tiny"
    listed = {model.name: model for model in store_models()}
    assert listed["tiny"].labels == ["liver", "spleen"] and not listed["tiny"].downloadable
    assert listed["total"].downloadable and len(listed["total"].labels) == 117
    image = ct_image(seed=12)
    volume = adapter.add_volume_from_sitk(mrml.scene, image, "ct")
    job = logic.predict_job(volume, "tiny", device="cpu", classes=["spleen"])
    runner = JobRunner(job).start().wait(timeout=120)
    assert runner.error is None
    segmentation = mrml.scene.GetFirstNodeByName("ct segmentation")
    ids = adapter.segment_ids(segmentation)
    assert [segmentation.GetSegmentation().GetSegment(i).GetName() for i in ids] == ["spleen"]
    written = sitk.GetArrayFromImage(adapter.segmentation_to_label_map(segmentation, volume, ids).image) > 0
    direct = predict_any(open_model("tiny"), adapter.volume_to_sitk(volume), classes=["spleen"],
                         largest_component=False)
    assert np.array_equal(written, sitk.GetArrayFromImage(direct.label_map.image) == 2)


def test_cancelled_import_writes_nothing_and_unknown_models_are_refused(mrml, home, tmp_path):
    from SegToolkitLib.errors import InputError

    logic = SegToolkitSlicerLogic(mrml.scene)
    runner = JobRunner(logic.import_model_job(exported_zip(tmp_path), "tiny")).start()
    runner.cancel()
    runner.wait(timeout=120)
    assert runner.cancelled or runner.error is None  # cancelled in time, or it had already finished
    if runner.cancelled:
        assert not (home / "models" / "tiny").exists()
    with pytest.raises(InputError, match="not a model of the catalog"):
        logic.download_model_job("no-such-model")
    volume = adapter.add_volume_from_sitk(mrml.scene, ct_image(), "ct")
    with pytest.raises(InputError, match="not a SegToolkit model folder, nnU-Net model or store model"):
        logic.predict_job(volume, "no-such-model")
