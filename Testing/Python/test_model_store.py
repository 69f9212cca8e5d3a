"""The model store: offline import of folders and zips (converted to safetensors + JSON), hostile archives refused
with nothing written, verified and resumable downloads from a local HTTP server (trust on first download, then
verified), tasks of several nnU-Net parts merged into one label map, the ``models`` and ``predict`` commands, and
model folders whose model.json points outside themselves."""

from __future__ import annotations

import http.server
import io
import json
import os
import stat
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunet_synthetic import ct_image, make_trained_folder

torch = pytest.importorskip("torch")
pytest.importorskip("dynamic_network_architectures")

from SegToolkitLib.errors import InputError  # noqa: E402
from SegToolkitLib.interfaces.cli.app import main  # noqa: E402
from SegToolkitLib.methods.deep import catalog, store  # noqa: E402
from SegToolkitLib.methods.deep.formats.loading import open_model, predict_any  # noqa: E402
from SegToolkitLib.methods.deep.formats.task import TaskModel  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGTOOLKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SEGTOOLKIT_CACHE", str(tmp_path / "cache"))
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path / "home"


def zip_folder(source: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(source).as_posix())
    return target


def labels_of(result) -> np.ndarray:
    return sitk.GetArrayFromImage(result.label_map.image)


def test_zip_import_converts_to_safetensors_and_predicts_like_the_folder(home, tmp_path):
    folder = make_trained_folder(tmp_path / "src", folds=(0, 1))
    archive = zip_folder(tmp_path / "src", tmp_path / "Dataset999_Tiny.zip")
    stored = store.import_model(archive, "tiny")
    assert not list(stored.rglob("*.pth")) and len(list(stored.rglob("*.safetensors"))) == 2
    umask = os.umask(0)
    os.umask(umask)
    for weights in stored.rglob("*.safetensors"):  # readable by others as the umask allows, not owner-only
        assert stat.S_IMODE(weights.stat().st_mode) == 0o666 & ~umask
    image = ct_image(seed=7)
    from_store = predict_any(open_model("tiny"), image, backend="torch", tta=False, probabilities=True)
    from_folder = predict_any(open_model(folder), image, backend="torch", tta=False, probabilities=True)
    assert np.array_equal(labels_of(from_store), labels_of(from_folder))
    assert np.array_equal(sitk.GetArrayFromImage(from_store.probabilities),
                          sitk.GetArrayFromImage(from_folder.probabilities))
    info = store.model_info("tiny")
    assert info["format"] == "nnunet" and info["classes"] == {1: "liver", 2: "spleen"}
    with pytest.raises(InputError, match="already in the store"):
        store.import_model(archive, "tiny")
    weights = next(stored.rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(InputError, match="changed since it was stored"):
        open_model("tiny")
    weights.write_bytes(b"")
    entry = json.loads((stored / "store.json").read_text())
    entry["files"] = {}
    entry["folder"] = "../../elsewhere"
    (stored / "store.json").write_text(json.dumps(entry))
    with pytest.raises(InputError, match="not a file name inside the model folder"):
        open_model("tiny")
    store.remove_model("tiny")
    assert not store.installed("tiny")


def hostile_zip(path: Path, kind: str) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Dataset1_X/T__P__3d_fullres/plans.json", "{}")
        if kind == "absolute":
            archive.writestr("/etc/segtoolkit-test", "x")
        elif kind == "traversal":
            archive.writestr("Dataset1_X/../../outside.json", "x")
        elif kind == "link":
            info = zipfile.ZipInfo("Dataset1_X/link")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
        elif kind == "bomb":
            archive.writestr("Dataset1_X/T__P__3d_fullres/fold_0/checkpoint_final.pth", b"\0" * (40 * 1024 ** 2))
    return path


@pytest.mark.parametrize("kind", ["absolute", "traversal", "link", "bomb"])
def test_hostile_zips_are_refused_and_nothing_is_written(home, tmp_path, kind):
    archive = hostile_zip(tmp_path / f"{kind}.zip", kind)
    with pytest.raises(InputError, match="refused"):
        store.import_model(archive, "bad")
    assert not store.installed("bad")
    assert not (home / "models" / "bad").exists()
    assert not any((home / "staging").iterdir()) if (home / "staging").exists() else True
    assert not (tmp_path / "outside.json").exists()


def test_zip_with_pickle_payload_is_refused_and_nothing_is_written(home, tmp_path):
    folder = make_trained_folder(tmp_path / "src")
    path = folder / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["extra"] = os.system  # a global a full unpickler would import
    torch.save(checkpoint, path)
    archive = zip_folder(tmp_path / "src", tmp_path / "payload.zip")
    with pytest.raises(InputError, match="refused: the checkpoint needs more"):
        store.import_model(archive, "payload")
    assert not (home / "models" / "payload").exists()


# ---------------------------------------------------------------------------------------------- downloads


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files of the test's folder, honouring ``Range: bytes=N-`` (resumed downloads)."""

    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.directory) / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        header = self.headers.get("Range")
        RangeHandler.requests.append(header)
        if header and header.startswith("bytes="):
            start = int(header[6:].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()

    def handler(*args, **kwargs):
        return RangeHandler(*args, directory=str(served), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def task_parts(tmp_path: Path) -> list[tuple[str, Path]]:
    """Two nnU-Net datasets zipped as TotalSegmentator ships its parts."""
    parts = []
    for number, classes in ((901, ("liver", "spleen")), (902, ("aorta",))):
        name = f"Dataset{number}_Part{number}"
        root = tmp_path / f"part{number}"
        folder = make_trained_folder(root, classes=classes, seed=number)
        folder.parent.rename(root / name)
        parts.append((name, zip_folder(root, tmp_path / f"{name}.zip")))
    return parts


@pytest.fixture
def fake_catalog(tmp_path, server, monkeypatch):
    served, url = server
    parts = task_parts(tmp_path)
    for _, archive in parts:
        (served / archive.name).write_bytes(archive.read_bytes())
    entry = {"title": "test task", "modality": "CT", "format": "task", "licence": "test licence",
             "non_commercial": False,
             "parts": [{"dataset": name, "url": f"{url}/{name}.zip", "sha256": None, "size_mb": 1,
                        "classes": list(classes)} for (name, _), classes in zip(parts, (("liver", "spleen"),
                                                                                          ("aorta",)))]}
    monkeypatch.setitem(catalog.CATALOG, "testtask", entry)
    return entry, served, parts


def test_first_download_records_the_checksum_and_later_downloads_verify_it(home, fake_catalog):
    entry, served, parts = fake_catalog
    assert "not known" in store.model_info("testtask")["files"][0]["sha256_source"]
    path = store.fetch("testtask")
    recorded = store.read_checksums()
    assert set(recorded) == {part["url"] for part in entry["parts"]}
    assert store.model_info("testtask")["files"][0]["sha256_source"] == "recorded at first download"
    assert TaskModel is type(open_model("testtask")) and path == store.model_path("testtask")
    first = served / f"{parts[0][0]}.zip"
    first.write_bytes(first.read_bytes() + b"tampered")  # the file changes at its source
    with pytest.raises(InputError, match="SHA-256 .* differs"):
        store.fetch("testtask", force=True)
    assert store.installed("testtask")  # the verified copy stays
    assert not list((home / "downloads").glob("*.part"))


def test_download_resumes_a_partial_file(home, fake_catalog):
    entry, served, parts = fake_catalog
    part = entry["parts"][0]
    data = (served / f"{part['dataset']}.zip").read_bytes()
    target = home / "downloads" / "resumed.zip"
    target.parent.mkdir(parents=True)
    target.with_name("resumed.zip.part").write_bytes(data[: len(data) // 2])
    RangeHandler.requests.clear()
    digest = store.download(part["url"], target)
    assert RangeHandler.requests == [f"bytes={len(data) // 2}-"]
    assert target.read_bytes() == data
    import hashlib

    assert digest == hashlib.sha256(data).hexdigest()


def test_no_network_gives_the_offline_route(home, monkeypatch):
    with pytest.raises(InputError, match="carry the file over and run 'segtoolkit models import"):
        store.download("http://127.0.0.1:9/none.zip", home / "x.zip")


def test_task_merges_parts_and_runs_only_the_parts_needed(home, fake_catalog):
    entry, _, parts = fake_catalog
    store.fetch("testtask")
    task = open_model("testtask")
    assert task.classes == {1: "liver", 2: "spleen", 3: "aorta"}
    image = ct_image(seed=8)
    whole = predict_any(task, image, backend="torch", tta=False)
    assert set(whole.label_map.present_values()) <= {1, 2, 3}
    assert whole.label_map.labels.name(3) == "aorta"
    task = open_model("testtask")
    subset = predict_any(task, image, classes=["aorta"], backend="torch", tta=False)
    assert set(task.runtime) == {1}  # only the second part was loaded and run
    expected = labels_of(whole)
    aorta_alone = predict_any(open_model(parts[1][1]), image, backend="torch", tta=False)
    assert np.array_equal(labels_of(subset) == 3, labels_of(aorta_alone) == 1)
    assert np.all(labels_of(subset)[expected == 3] == 3)
    with pytest.raises(InputError, match="unknown class"):
        predict_any(task, image, classes=["kidney"])


def test_hand_carried_totalsegmentator_zips_get_the_catalog_classes(home, fake_catalog):
    entry, _, parts = fake_catalog
    with pytest.raises(InputError, match="lack the part"):
        store.import_model(parts[0][1], "testtask")  # one part of two is not the task
    assert not store.installed("testtask")
    assert main(["models", "import", *[str(p) for _, p in parts], "--name", "testtask"]) == 0
    assert open_model("testtask").classes == {1: "liver", 2: "spleen", 3: "aorta"}


# ---------------------------------------------------------------------------------------------- commands


def test_models_and_predict_commands(home, tmp_path, capsys):
    make_trained_folder(tmp_path / "src")
    zip_folder(tmp_path / "src", tmp_path / "tiny.zip")
    assert main(["models", "import", str(tmp_path / "tiny.zip"), "--name", "tiny"]) == 0
    assert main(["models", "list", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    names = {row["name"]: row for row in listed["models"]}
    assert names["tiny"]["installed"] and names["total"]["classes"] == 117 and not names["total"]["installed"]
    assert main(["models", "info", "total"]) == 0
    out = capsys.readouterr().out
    assert "Dataset291_TotalSegmentator_part1_organs_1559subj.zip" in out and "not known" in out
    image = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ct_image(seed=9), str(image))
    output = tmp_path / "out.seg.nrrd"
    assert main(["predict", "-m", "tiny", str(image), "-o", str(output), "--no-tta", "--backend", "torch",
                 "--classes", "spleen"]) == 0
    written = sitk.ReadImage(str(output))
    assert set(np.unique(sitk.GetArrayFromImage(written))) <= {0, 2}
    from_zip = tmp_path / "from-zip.nii.gz"
    assert main(["predict", "-m", str(tmp_path / "tiny.zip"), str(image), "-o", str(from_zip), "--no-tta",
                 "--backend", "torch", "--classes", "spleen"]) == 0  # a zip is unpacked into the store once
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(from_zip))), sitk.GetArrayFromImage(written))
    assert main(["models", "info", "tiny"]) == 0
    assert "classes (2): 1 liver, 2 spleen" in capsys.readouterr().out
    assert main(["predict", "-m", "total", str(image), "-o", str(output)]) == 2
    assert "not downloaded yet" in capsys.readouterr().err
    assert main(["models", "remove", "tiny"]) == 0 and not store.installed("tiny")


def test_predict_refuses_inputs_that_would_overwrite_each_other(home, tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        sitk.WriteImage(ct_image(), str(tmp_path / folder / "case.nii.gz"))
    out = tmp_path / "out"
    code = main(["predict", "-m", str(tmp_path / "missing-model"), str(tmp_path / "a" / "case.nii.gz"),
                 str(tmp_path / "b" / "case.nii.gz"), "-o", str(out)])
    assert code == 2
    assert "both would be written to" in capsys.readouterr().err
    assert not out.exists()


def test_model_json_paths_outside_the_folder_are_refused(tmp_path):
    from deep_synthetic import make_blob_dataset

    from SegToolkitLib.methods.deep.dataset import load_dataset
    from SegToolkitLib.methods.deep.model_package import load_model, save_model
    from SegToolkitLib.methods.deep.networks import build_network, network_spec
    from SegToolkitLib.methods.deep.planning import plan_dataset

    data = make_blob_dataset(tmp_path / "data", cases=2, size=(16, 16, 8))
    plan = plan_dataset(load_dataset(data))
    spec = network_spec("dilated", plan, 1, 2)
    folder = tmp_path / "model"
    save_model(folder, build_network(spec), {"labels": {"1": "blob1"}, "class_values": [0, 1], "channels": ["MR"],
                                             "plan": plan, "network": spec})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((folder / "model.safetensors").stat().st_mode) == 0o666 & ~umask
    load_model(folder)
    meta = json.loads((folder / "model.json").read_text())
    (tmp_path / "outside.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    for bad in ("../outside.safetensors", str(tmp_path / "outside.safetensors")):
        meta["weights"] = bad
        (folder / "model.json").write_text(json.dumps(meta))
        with pytest.raises(InputError, match="not a file name inside the model folder"):
            load_model(folder)
    meta["weights"] = "model.safetensors"
    meta["int8"] = {"accepted": True, "file": "../../network-int8.xml", "weights_sha256": "0"}
    (folder / "model.json").write_text(json.dumps(meta))
    from SegToolkitLib.methods.deep.model_package import int8_ready

    with pytest.raises(InputError, match="int8 network '../../network-int8.xml' is not a file name inside"):
        int8_ready(load_model(folder))


def test_checksum_catalog_has_no_invented_values():
    for entry in catalog.CATALOG.values():
        for part in entry["parts"]:
            assert part["sha256"] is None or len(part["sha256"]) == 64
            assert part["url"].startswith("https://github.com/wasserth/TotalSegmentator/releases/download/")
    assert len(catalog.task_classes(catalog.CATALOG["total"])) == 117


def test_catalog_numbers_task_classes_as_totalsegmentator():
    total = catalog.task_classes(catalog.CATALOG["total"])
    assert (total[1], total[25], total[51], total[117]) == ("spleen", "sacrum", "heart", "costal_cartilages")
    mr = catalog.task_classes(catalog.CATALOG["total_mr"])
    assert (len(mr), mr[10], mr[29], mr[30], mr[50]) == (50, "lung_left", "iliac_vena_right", "humerus_left",
                                                          "brain")
    for fast in ("total_mr_fast", "total_mr_fastest"):
        assert catalog.task_classes(catalog.CATALOG[fast]) == mr
    assert catalog.CATALOG["total_mr"]["locator"] == "total_mr_fastest"


def test_store_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGTOOLKIT_HOME", str(tmp_path / "elsewhere"))
    assert store.models_folder() == tmp_path / "elsewhere" / "models"
    monkeypatch.delenv("SEGTOOLKIT_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if os.name == "posix" and not str(store.store_home()).startswith(str(Path.home() / "Library")):
        assert store.store_home() == tmp_path / "xdg" / "segtoolkit"


def test_hostile_zip_member_names_are_checked_before_writing(tmp_path):
    from SegToolkitLib.methods.deep.formats.archive import extract

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("good.json", "{}")
        archive.writestr("..\\evil.json", "{}")
    (tmp_path / "mixed.zip").write_bytes(buffer.getvalue())
    with pytest.raises(InputError, match="refused"):
        extract(tmp_path / "mixed.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_classes_with_a_locator_predict_only_near_them(home, fake_catalog, monkeypatch):
    from SegToolkitLib.methods.deep.formats import task as task_module

    entry, _, parts = fake_catalog
    locator = {**entry, "title": "locator", "parts": [dict(entry["parts"][1])]}  # finds "aorta" (random weights)
    monkeypatch.setitem(catalog.CATALOG, "testlocator", locator)
    monkeypatch.setitem(catalog.CATALOG["testtask"], "locator", "testlocator")
    monkeypatch.setattr(task_module, "MARGIN_MM", 0.0)
    store.fetch("testtask")
    image = ct_image(seed=10)
    task = open_model("testtask")
    whole = predict_any(task, image, classes=["spleen"], backend="torch", tta=False)
    assert ("locator", "testlocator") not in task.runtime  # not in the store: the whole image
    store.fetch("testlocator")
    task = open_model("testtask")
    found = predict_any(open_model("testlocator"), image, backend="torch", tta=False)
    near = predict_any(task, image, classes=["spleen"], backend="torch", tta=False)
    assert ("locator", "testlocator") in task.runtime
    assert near.label_map.image.GetSize() == image.GetSize() and near.label_map.image.GetOrigin() == image.GetOrigin()
    box = sitk.GetArrayFromImage(found.label_map.image) == 1
    labels = labels_of(near)
    outside = np.ones(labels.shape, bool)
    outside[tuple(slice(idx.min(), idx.max() + 1) for idx in np.nonzero(box))] = False
    assert not labels[outside].any()  # nothing is predicted away from the located classes
    assert set(np.unique(labels)) <= {0, 2} and set(np.unique(labels_of(whole))) <= {0, 2}
