"""``predict`` on a DICOM series writes a DICOM SEG that names the model and the hash of its weights."""

from __future__ import annotations

import highdicom as hd
import pytest
import SimpleITK as sitk

pytest.importorskip("torch")

from dicom_synthetic import write_series  # noqa: E402
from test_deep_inference import model_3d  # noqa: E402, F401 - the module's small trained model fixture
from test_dicom_seg import dciodvfy_errors  # noqa: E402

from SegToolkitLib.interfaces.cli import main  # noqa: E402
from SegToolkitLib.methods.deep.model_package import weights_sha256  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_predict_on_a_dicom_series_writes_a_seg_with_the_model_identified(model_3d, tmp_path):  # noqa: F811
    model, data = model_3d
    image = sitk.Cast(sitk.ReadImage(str(data / "images" / "case00.nii.gz")), sitk.sitkInt16)
    write_series(tmp_path / "ct", image)
    out = tmp_path / "organs.dcm"

    assert main(["predict", "-m", str(model.folder), str(tmp_path / "ct"), "-o", str(out), "--backend", "torch"]) == 0

    seg = hd.seg.segread(out)
    assert seg.SegmentationType == "BINARY" and len(seg.SegmentSequence) >= 1
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "SegToolkit predict"
    assert weights_sha256(model) in algorithm.AlgorithmParameters and model.folder.name in \
        algorithm.AlgorithmParameters
    assert dciodvfy_errors(out) == []
