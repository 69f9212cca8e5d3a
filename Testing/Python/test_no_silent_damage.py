"""No silent damage (issue 16): full disks, broken geometry, hostile files, interrupted runs and user mistakes are
answered with a one-line error and no broken output; one test (or a few) per class of the issue."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SegToolkitLib.errors import InputError, OutputError
from SegToolkitLib.interfaces.cli import main
from SegToolkitLib.io import atomic, read_image, write_image, write_text_atomic


def _image(shape=(8, 10, 12), dtype=np.int16, seed=0) -> sitk.Image:
    array = np.random.default_rng(seed).integers(0, 200, shape).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.9, 2.0))
    image.SetOrigin((10.0, -5.0, 3.0))
    return image


def _run(capsys, argv):
    return _run_out(capsys, argv)[:2]


def _run_out(capsys, argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err.strip(), captured.out


def _assert_one_line_error(code, error, *fragments):
    assert code == 2, error
    assert "Traceback" not in error
    assert len(error.splitlines()) == 1, error
    assert error.startswith("segtoolkit: error: "), error
    for fragment in fragments:
        assert fragment in error, error


@contextlib.contextmanager
def _small_disk(folder: Path, size: str = "64k"):
    """A tiny tmpfs at ``folder`` (a full disk on demand); skips the test where mounting is not allowed."""
    folder.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                            capture_output=True)
    if result.returncode != 0:
        pytest.skip("mounting a small tmpfs is not permitted here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


# ------------------------------------------------------------------ class 1: short writes are never published


def test_full_disk_never_publishes_a_truncated_image_or_text(tmp_path, capsys):
    source = write_image(_image((80, 80, 80)), tmp_path / "ct.nii.gz")  # a random mask: 60 kB+ compressed
    with _small_disk(tmp_path / "disk") as disk:
        with pytest.raises(OutputError, match=r"out.nii: .*(disk is full|incomplete)"):
            write_image(_image((40, 40, 40)), disk / "out.nii", compress=False)
        with pytest.raises(OutputError, match="disk is full"):
            write_text_atomic(disk / "report.csv", "x" * 200_000)
        code, error = _run(capsys, ["threshold", source, "-o", disk / "mask.nrrd", "--lower", "100"])
        _assert_one_line_error(code, error, "mask.nrrd", "nothing was saved")
        assert list(disk.iterdir()) == []  # nothing published, no temporary left


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".seg.nrrd"])
def test_injected_short_image_write_is_caught_before_the_rename(tmp_path, monkeypatch, suffix):
    real_write = sitk.WriteImage
    existing = write_image(_image(), tmp_path / f"out{suffix}")
    before = existing.read_bytes()

    def short_write(image, path, *args, **kwargs):  # what a full disk does to ITK/zlib: no error, data missing
        real_write(image, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) * 2 // 3])

    monkeypatch.setattr(sitk, "WriteImage", short_write)
    with pytest.raises(OutputError, match=f"out{suffix.replace('.', '.')}: the written file is incomplete"):
        if suffix == ".seg.nrrd":
            from SegToolkitLib.io import LabelMap, LabelTable, write_label_map

            labels = sitk.Cast(_image() > 100, sitk.sitkUInt8)
            write_label_map(LabelMap(labels, LabelTable().covering([1])), existing)
        else:
            write_image(_image(seed=3), existing)
    assert existing.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [existing.name]


def test_verification_checks_completeness_not_content(tmp_path):
    nan_map = sitk.GetImageFromArray(np.full((4, 5, 6), np.nan, np.float32))  # e.g. probabilities of a bad input
    for name in ("p.nii.gz", "p.nii", "p.nrrd"):
        assert write_image(nan_map, tmp_path / name).is_file()


def test_injected_short_transform_and_weights_are_caught(tmp_path, monkeypatch):
    from SegToolkitLib.methods.atlas.registration import save_transform

    real_write = sitk.WriteTransform

    def short_write(transform, path):
        real_write(transform, path)
        Path(path).write_bytes(Path(path).read_bytes()[:40])

    monkeypatch.setattr(sitk, "WriteTransform", short_write)
    with pytest.raises(OutputError, match="affine.tfm: the written file is incomplete"):
        save_transform(sitk.AffineTransform(3), tmp_path / "affine.tfm")
    assert not (tmp_path / "affine.tfm").exists()
    with pytest.raises(OutputError, match="incomplete"), atomic.atomic_output(tmp_path / "w.safetensors") as tmp:
        tmp.write_bytes(struct.pack("<Q", 60) + json.dumps({"a": {"dtype": "F32", "shape": [4],
                                                                   "data_offsets": [0, 16]}}).ljust(60).encode()
                        + b"\0" * 8)
    assert list(tmp_path.iterdir()) == []


def test_model_weights_and_checkpoints_cut_short_are_never_published(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    from SegToolkitLib.methods.deep import model_package

    real_save = safetensors.torch.save_model

    def short_save(network, path, *args, **kwargs):
        real_save(network, path, *args, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:-8])  # the disk filled up during the last block

    network = torch.nn.Linear(4, 2)
    monkeypatch.setattr(safetensors.torch, "save_model", short_save)
    with pytest.raises(OutputError, match="model.safetensors: the written file is incomplete"):
        model_package.save_model(tmp_path / "model", network, {"labels": {}})
    assert not (tmp_path / "model" / model_package.WEIGHTS).exists()
    assert not (tmp_path / "model" / model_package.MODEL_JSON).exists()
    with pytest.raises(OutputError, match="incomplete"):
        model_package.save_checkpoint(tmp_path / "model", network, torch.optim.Adam(network.parameters()), {})
    assert sorted(path.name for path in (tmp_path / "model").iterdir()) == []  # no checkpoint, no leftovers


# ------------------------------------------------------------- class 2: broken geometry and non-finite voxels


def _nifti_with(path: Path, pixdim_x: float | None = None, nan_voxels: int = 0) -> Path:
    array = np.ones((4, 5, 6), np.float32)
    array.flat[:nan_voxels] = np.nan
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 0.5, 2.0))
    sitk.WriteImage(image, str(path))
    if pixdim_x is not None:
        data = bytearray(path.read_bytes())
        data[80:84] = struct.pack("<f", pixdim_x)
        path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("spacing", [0.0, -2.0, float("nan")])
def test_zero_negative_or_nan_spacing_is_refused(tmp_path, spacing):
    path = _nifti_with(tmp_path / "bad.nii", pixdim_x=spacing)
    with pytest.raises(InputError, match=r"bad.nii: voxel size in the header is .*positive finite"):
        read_image(path)


def test_nan_voxels_are_refused_not_turned_into_zero(tmp_path, capsys):
    for name in ("nan.nii", "nan.nii.gz"):
        with pytest.raises(InputError, match=f"{name}: 1 voxels are NaN or infinite"):
            read_image(_nifti_with(tmp_path / name, nan_voxels=1))
    array = np.zeros((4, 5, 6), np.float32)
    array[1, 2, 3] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "inf.nrrd"))
    code, error = _run(capsys, ["threshold", tmp_path / "inf.nrrd", "-o", tmp_path / "m.nii.gz", "--lower", "1"])
    _assert_one_line_error(code, error, "inf.nrrd", "NaN or infinite")
    assert not (tmp_path / "m.nii.gz").exists()


def test_sheared_direction_is_refused(tmp_path):
    sitk.WriteImage(_image(), str(tmp_path / "a.nrrd"), False)
    data = (tmp_path / "a.nrrd").read_bytes()
    header_end = data.index(b"\n\n")
    header = data[:header_end].replace(b"space directions: (0.80000000000000004,0,0) (0,0.90000000000000002,0)",
                                       b"space directions: (0.8,0,0) (0.45,0.9,0)")
    assert header != data[:header_end]
    (tmp_path / "sheared.nrrd").write_bytes(header + data[header_end:])
    with pytest.raises(InputError, match="sheared.nrrd: axis directions .* not at right angles"):
        read_image(tmp_path / "sheared.nrrd")


# -------------------------------------------------------------------------------- class 7: memory bombs


def _nifti_bomb(path: Path) -> Path:
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, 2000, 2000, 1000, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 4, 16)  # int16
    struct.pack_into("<8f", header, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", header, 108, 352.0)
    header[344:348] = b"n+1\0"
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(bytes(header)))
    else:
        path.write_bytes(bytes(header))
    return path


def test_tiny_files_declaring_huge_images_are_refused_before_allocating(tmp_path):
    nrrd = tmp_path / "bomb.nrrd"
    nrrd.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2000 2000 1000\nendian: little\n"
                     b"encoding: raw\n\n" + b"\0" * 16)
    gz_nrrd = tmp_path / "bomb_gz.nrrd"
    gz_nrrd.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2000 2000 1000\nendian: little\n"
                        b"encoding: gzip\n\n"
                        + gzip.compress(b"\0" * 64))
    mha = tmp_path / "bomb.mha"
    mha.write_bytes(b"ObjectType = Image\nNDims = 3\nBinaryData = True\nCompressedData = True\n"
                    b"DimSize = 2000 2000 1000\nElementType = MET_SHORT\nElementDataFile = LOCAL\n" + b"x" * 100)
    cases = [(nrrd, "incomplete"), (gz_nrrd, "compressed bytes can hold"), (mha, "compressed bytes can hold"),
             (_nifti_bomb(tmp_path / "bomb.nii"), "incomplete"),
             (_nifti_bomb(tmp_path / "bomb.nii.gz"), "compressed bytes can hold")]
    for path, message in cases:
        start = time.perf_counter()
        with pytest.raises(InputError, match=f"{path.name}: .*{message}"):
            read_image(path)
        assert time.perf_counter() - start < 2.0  # refused from the header, not after allocating 8 GB


def test_segmentation_file_declaring_a_huge_image_is_refused_before_allocating(tmp_path):
    from SegToolkitLib.io import read_label_map

    bomb = tmp_path / "bomb.seg.nrrd"
    bomb.write_bytes(b"NRRD0004\ntype: unsigned char\ndimension: 3\nsizes: 4000 4000 1000\nencoding: gzip\n"
                     b"Segment0_ID:=a\nSegment0_Name:=liver\nSegment0_LabelValue:=1\n\n" + gzip.compress(b"\0" * 64))
    start = time.perf_counter()
    with pytest.raises(InputError, match="bomb.seg.nrrd: .*compressed bytes can hold"):
        read_label_map(bomb)
    assert time.perf_counter() - start < 2.0


# -------------------------------------------------------------------------------------- class 10: leftovers


def test_stale_temporaries_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "out.nii.gz"
    killed = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                            text=True).stdout.strip()  # a pid that has exited
    stale = tmp_path / atomic.temporary_path(target).name.replace(f".{os.getpid()}-", f".{killed}-")
    stale.write_bytes(b"partial")
    mine = atomic.temporary_path(target)
    mine.write_bytes(b"being written")
    foreign = tmp_path / ".out.nii.gz.notes"
    foreign.write_bytes(b"not ours")
    old = time.time() - 3600
    for path in (stale, mine, foreign):
        os.utime(path, (old, old))
    write_image(_image(), target)
    assert not stale.exists()  # a killed run's temporary: removed by the next write into the folder
    assert mine.exists() and foreign.exists()  # a live process's temporary and others' files: kept
    assert atomic.remove_stale_temporaries(tmp_path, now=time.time() + 2 * 86400) == [mine]


def test_a_cohort_rerun_removes_a_killed_writers_fresh_temporary_but_not_a_live_ones(tmp_path):
    from SegToolkitLib.cohort.records import remove_stale_temporaries as cohort_cleanup

    labels = tmp_path / "labels"
    labels.mkdir()
    target = labels / "case.nii.gz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    fresh = labels / atomic.temporary_path(target).name.replace(f".{os.getpid()}-", f".{dead}-")
    fresh.write_bytes(b"partial")  # just written: the ordinary write's 60 s grace keeps it
    live = atomic.temporary_path(target)
    live.write_bytes(b"being written")
    assert atomic.remove_stale_temporaries(labels) == []
    assert cohort_cleanup(tmp_path) == 1
    assert not fresh.exists() and live.exists()


def test_a_zombie_process_counts_as_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 10
    while time.time() < deadline and not atomic._zombie(child.pid):  # exited, not yet reaped
        time.sleep(0.05)
    assert atomic._zombie(child.pid) and not atomic._process_alive(child.pid)
    child.wait()
    assert not atomic._process_alive(child.pid)


# ---------------------------------------------------------------- class 4: training data on different grids


def _blob_dataset(folder: Path, cases: int = 3, size=(24, 24), spacing=(1.0, 1.0)) -> Path:
    from deep_synthetic import make_blob_dataset

    return make_blob_dataset(folder, cases=cases, size=size, spacing=spacing)


@pytest.mark.parametrize("change", ["origin", "spacing", "direction"])
def test_label_map_on_another_grid_than_its_image_is_refused(tmp_path, change):
    from SegToolkitLib.methods.deep.dataset import load_dataset

    data = _blob_dataset(tmp_path / "data")
    label_path = data / "labels" / "case01.nii.gz"
    label = sitk.ReadImage(str(label_path))
    if change == "origin":
        label.SetOrigin((4.0, 0.0))
    elif change == "spacing":
        label.SetSpacing((1.5, 1.0))
    else:
        label.SetDirection((0.0, 1.0, 1.0, 0.0))
    sitk.WriteImage(label, str(label_path))
    dataset = load_dataset(data)
    with pytest.raises(InputError, match=f"case01.nii.gz: not on the same voxel grid as its image case01.nii.gz "
                                         f"\\({change}"):
        dataset.load_case(dataset.cases[1])


# ------------------------------------------------------------------ class 5: user mistakes without traceback


def test_output_under_a_file_and_names_near_the_length_limit(tmp_path, capsys):
    source = write_image(_image(), tmp_path / "ct.nii.gz")
    (tmp_path / "notes.txt").write_text("a file")
    code, error = _run(capsys, ["threshold", source, "-o", tmp_path / "notes.txt" / "mask.nii.gz", "--lower", "50"])
    _assert_one_line_error(code, error, "notes.txt is a file, not a folder")
    # a name of 250 bytes is allowed by the file system; its temporary name must still fit (255 bytes)
    long_name = tmp_path / ("m" * (250 - len(".nii.gz")) + ".nii.gz")
    code, error = _run(capsys, ["threshold", source, "-o", long_name, "--lower", "50"])
    assert code == 0, error
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ct.nii.gz", "notes.txt", long_name.name])


def test_output_folder_that_is_not_writable(tmp_path, capsys):
    source = write_image(_image(), tmp_path / "ct.nii.gz")
    readonly = tmp_path / "readonly"
    with _small_disk(readonly):  # read-only even for root
        subprocess.run(["mount", "-o", "remount,ro", str(readonly)], check=True)
        code, error = _run(capsys, ["threshold", source, "-o", readonly / "mask.nii.gz", "--lower", "50"])
    _assert_one_line_error(code, error, "mask.nii.gz", "is not writable")


def test_path_that_is_not_utf8_is_refused_not_aborting(tmp_path, capsys):
    source = write_image(_image(), tmp_path / "ct.nii.gz")
    strange = os.fsdecode(os.fsencode(str(tmp_path)) + b"/scan\xff.nii.gz")
    os.link(source, os.fsencode(strange))
    code, error = _run(capsys, ["threshold", strange, "-o", tmp_path / "out.nii.gz", "--lower", "50"])
    _assert_one_line_error(code, error, "not valid UTF-8")
    code, error = _run(capsys, ["threshold", source, "-o", strange.replace("scan", "out"), "--lower", "50"])
    _assert_one_line_error(code, error, "not valid UTF-8")


def test_unexpected_os_errors_are_one_line_and_bugs_say_so(tmp_path, capsys, monkeypatch):
    from SegToolkitLib.interfaces.cli import threshold as threshold_command

    def vanished(args):
        raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "gone.nii.gz"))

    monkeypatch.setattr(threshold_command, "run", vanished)
    code, error = _run(capsys, ["threshold", tmp_path / "a.nii.gz", "-o", tmp_path / "b.nii.gz", "--lower", "1"])
    _assert_one_line_error(code, error, "gone.nii.gz: No such file or directory")

    def bug(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(threshold_command, "run", bug)
    code, error = _run(capsys, ["threshold", tmp_path / "a.nii.gz", "-o", tmp_path / "b.nii.gz", "--lower", "1"])
    assert code == 1 and "internal error ZeroDivisionError" in error and "-v" in error
    assert "Traceback" not in error
    code, error = _run(capsys, ["-v", "threshold", tmp_path / "a.nii.gz", "-o", tmp_path / "b.nii.gz", "--lower",
                                "1"])
    assert code == 1 and "Traceback" in error  # -v keeps the traceback for the bug report


def test_existing_file_as_the_output_folder_of_several_inputs(tmp_path, capsys):
    pytest.importorskip("torch")
    inputs = [write_image(_image(seed=seed), tmp_path / f"case{seed}.nii.gz") for seed in (1, 2)]
    (tmp_path / "results").write_text("a file, not a folder")
    code, error = _run(capsys, ["predict", "-m", tmp_path / "model", *inputs, "-o", tmp_path / "results"])
    _assert_one_line_error(code, error, "results")


MALFORMED_LABELS = [{"1": {"name": "liver", "color": "red"}}, {"1": "liver", "liver2": 1},
                    {"1": {"name": "liver", "color": [1, "a", 0]}}, {"inf": "liver"}]


@pytest.mark.parametrize("document", MALFORMED_LABELS, ids=["colour word", "value twice", "colour", "infinite"])
def test_malformed_label_files_are_one_line_errors(tmp_path, capsys, document):
    labels = write_image(sitk.Cast(_image() > 100, sitk.sitkUInt8), tmp_path / "labels.nii.gz")
    (tmp_path / "names.json").write_text(json.dumps(document))
    code, error = _run(capsys, ["measure", labels, "--labels", tmp_path / "names.json"])
    _assert_one_line_error(code, error, "names.json: ")


@pytest.mark.parametrize("edit", ["dataset", "plan", "model"])
def test_malformed_dataset_plan_and_model_files_are_one_line_errors(tmp_path, capsys, edit):
    pytest.importorskip("torch")
    data = _blob_dataset(tmp_path / "data")
    if edit == "dataset":
        (data / "dataset.json").write_text(json.dumps({"labels": {"1": "blob"}, "cases": [1, 2]}))
        code, error = _run(capsys, ["plan", data, "-o", tmp_path / "plan.json"])
        _assert_one_line_error(code, error, "dataset.json: malformed dataset description")
        return
    assert main(["plan", str(data), "-o", str(tmp_path / "plan.json")]) == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    if edit == "plan":
        plan["network"] = []
        (tmp_path / "plan.json").write_text(json.dumps(plan))
        code, error = _run(capsys, ["train", data, "-o", tmp_path / "model", "--plan", tmp_path / "plan.json"])
        _assert_one_line_error(code, error, "plan.json: malformed plan")
        assert not (tmp_path / "model").exists()
        return
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text(json.dumps({"format": "segtoolkit-deep-model", "format_version": 1,
                                                  "labels": {"1": "blob"}, "class_values": "0 1", "channels": ["MR"],
                                                  "plan": plan, "network": {"out_channels": 2}}))
    code, error = _run(capsys, ["predict", "-m", model, data / "images" / "case00.nii.gz", "-o",
                                tmp_path / "out.nii.gz"])
    _assert_one_line_error(code, error, "model.json: malformed model description")


# ------------------------------------------------------------------------------------ class 6: no endless plan


@pytest.mark.parametrize("memory", ["-1", "0", "nan", "1e-9"])
def test_plan_memory_budget_is_validated_and_bounded(tmp_path, capsys, memory):
    pytest.importorskip("torch")
    data = _blob_dataset(tmp_path / "data", size=(24, 24, 16), spacing=(1.0, 1.0, 1.0))
    start = time.perf_counter()
    code, error = _run(capsys, ["plan", data, "-o", tmp_path / "plan.json", "--memory-gb", memory])
    _assert_one_line_error(code, error, "--memory-gb")
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "plan.json").exists()


def test_patch_search_ends_when_an_axis_is_at_its_minimum():
    from SegToolkitLib.methods.deep.planning import fit_patch

    # the coarse z axis is the largest in mm but already at the minimum patch length: it used to be picked forever
    patch, *_ = fit_patch([200.0, 200.0, 8.0], [1.0, 1.0, 40.0], 64 ** 3, 2, 1e-3, (16, 256))
    assert patch[2] == 8 and max(patch[:2]) <= 16


# --------------------------------------------------------------------------- class 8: overwrites, collisions


def test_plan_never_overwrites_the_datasets_own_files(tmp_path, capsys):
    pytest.importorskip("torch")
    data = _blob_dataset(tmp_path / "data")
    before = (data / "dataset.json").read_bytes()
    for target in (data / "dataset.json", data / "labels" / "case00.nii.gz"):
        code, error = _run(capsys, ["plan", data, "-o", target])
        _assert_one_line_error(code, error, "same as an input")
    assert (data / "dataset.json").read_bytes() == before


def test_train_again_refuses_to_replace_a_finished_model_and_finishes_an_interrupted_int8_step(tmp_path, capsys,
                                                                                              monkeypatch):
    pytest.importorskip("torch")
    from SegToolkitLib.methods.deep import training

    data = _blob_dataset(tmp_path / "data", cases=2, size=(16, 16))
    model = tmp_path / "model"
    argv = ["train", data, "-o", model, "--epochs", "1", "--iterations-per-epoch", "1", "--device", "cpu"]
    assert _run(capsys, argv)[0] == 0
    weights = (model / "model.safetensors").read_bytes()
    code, error = _run(capsys, argv)
    _assert_one_line_error(code, error, "holds a trained model already", "--overwrite")
    assert (model / "model.safetensors").read_bytes() == weights
    assert _run(capsys, argv + ["--overwrite", "--seed", "3"])[0] == 0
    assert (model / "model.safetensors").read_bytes() != weights
    # a finished 3D model whose int8 step was interrupted: the same command finishes that step, nothing else
    data3d = _blob_dataset(tmp_path / "data3d", cases=2, size=(16, 16, 8), spacing=(1.0, 1.0, 1.0))
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 1:
            raise KeyboardInterrupt
        return "int8 done"

    monkeypatch.setattr(training, "_add_int8_network", interrupted)
    argv3d = ["train", data3d, "-o", tmp_path / "m3", "--epochs", "1", "--iterations-per-epoch", "1"]
    assert _run(capsys, argv3d)[0] == 130
    weights = (tmp_path / "m3" / "model.safetensors").read_bytes()
    code, error, out = _run_out(capsys, argv3d)
    assert code == 0 and len(calls) == 2 and "int8 done (trained before with the same settings" in out, error
    assert (tmp_path / "m3" / "model.safetensors").read_bytes() == weights  # not trained again


def test_training_logs_a_line_per_epoch_excludes_cases_and_resumes_under_a_new_dataset_folder(tmp_path, capsys):
    pytest.importorskip("torch")
    from SegToolkitLib.errors import CancelledError
    from SegToolkitLib.methods.deep.dataset import load_dataset
    from SegToolkitLib.methods.deep.training import TrainingOptions, train

    data = _blob_dataset(tmp_path / "data", cases=4, size=(16, 16))
    code, error, out = _run_out(capsys, ["train", data, "-o", tmp_path / "model", "--epochs", "2",
                                         "--iterations-per-epoch", "1", "--exclude", "case03"])
    assert code == 0, error
    # stdout is not a terminal here: one line per epoch, as in a log file
    assert [line.split(":")[0] for line in out.splitlines()[:2]] == ["epoch 1/2", "epoch 2/2"]
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["training"]["excluded_cases"] == ["case03"]
    assert "case03" not in meta["training"]["train_cases"] + meta["training"]["validation_cases"]
    code, error = _run(capsys, ["train", data, "-o", tmp_path / "m2", "--exclude", "case09"])
    _assert_one_line_error(code, error, "cannot exclude case09")
    # a Cancel, then the same training from a copy of the data in another folder (Slicer: a new temporary folder)
    lines = []

    def stop_in_second_epoch(fraction, message):
        if "epoch 2" in message:
            raise CancelledError("cancelled")

    options = TrainingOptions(epochs=2, iterations_per_epoch=1, log=lines.append, quantize=False)
    with pytest.raises(CancelledError):
        train(load_dataset(data), tmp_path / "m3", None, options, progress=stop_in_second_epoch)
    copy = _blob_dataset(tmp_path / "another-temporary-name", cases=4, size=(16, 16))
    summary = train(load_dataset(copy), tmp_path / "m3", None, options)
    assert summary["epochs"] == 2 and len(summary["history"]) == 2  # resumed, not refused
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2: loss ") and "validation Dice" in lines[0]
    assert "left" in lines[-1]


# ------------------------------------------------------------ class 10/11: the sample cache and label tables


def _sample_registry(tmp_path, monkeypatch):
    import hashlib

    from SegToolkitLib.samples import sample_data

    payload = b"sample bytes " * 100
    source = tmp_path / "served" / "file.bin"
    source.parent.mkdir()
    source.write_bytes(payload)
    entry = sample_data.SampleDataset("tiny", source.as_uri(), "file.bin",
                                      "sha256:" + hashlib.sha256(payload).hexdigest(), "CC0", "test", len(payload))
    monkeypatch.setenv(sample_data.CACHE_ENV, str(tmp_path / "cache"))
    return sample_data, {"tiny": entry}, payload


def test_damaged_cached_sample_is_rechecked_and_fetched_again(tmp_path, monkeypatch):
    sample_data, registry, payload = _sample_registry(tmp_path, monkeypatch)
    path = sample_data.fetch("tiny", registry)
    path.write_bytes(payload[:-1] + b"X")  # bit rot or an edit in the cache
    assert sample_data.fetch("tiny", registry).read_bytes() == payload


def test_stale_download_temporaries_in_the_sample_cache_are_removed(tmp_path, monkeypatch):
    sample_data, registry, _ = _sample_registry(tmp_path, monkeypatch)
    target = sample_data.cached_path("tiny", registry)
    target.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = target.parent / atomic.temporary_path(target).name.replace(f".{os.getpid()}-", f".{dead}-")
    stale.write_bytes(b"x" * 1000)  # a download killed with SIGKILL
    os.utime(stale, (time.time() - 600, time.time() - 600))
    sample_data.fetch("tiny", registry)
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_two_segments_sharing_one_label_value_are_refused(tmp_path):
    from SegToolkitLib.io import LabelTable, read_label_map

    with pytest.raises(InputError, match="label value 1 is given to both 'liver' and 'spleen'"):
        LabelTable.from_mapping({"liver": 1, "spleen": 1}, "names.json")
    labels = sitk.Cast(_image() > 100, sitk.sitkUInt8)
    labels.SetMetaData("Segment0_ID", "a")
    labels.SetMetaData("Segment0_Name", "liver")
    labels.SetMetaData("Segment0_LabelValue", "1")
    labels.SetMetaData("Segment1_ID", "b")
    labels.SetMetaData("Segment1_Name", "spleen")
    labels.SetMetaData("Segment1_LabelValue", "1")
    sitk.WriteImage(labels, str(tmp_path / "two.seg.nrrd"))
    with pytest.raises(InputError, match="two.seg.nrrd: label value 1 is given to both 'liver' and 'spleen'"):
        read_label_map(tmp_path / "two.seg.nrrd")



# ------------------------------------------------------------------------------------------------- first hour


def test_training_curve_shows_whole_epochs_only(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import matplotlib.pyplot as plt

    from SegToolkitLib.methods.deep.training import plot_curve

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    history = [{"epoch": e, "loss": 1.0 / e, "validation_dice": [0.5 + 0.1 * e]} for e in (1, 2, 3)]
    plot_curve(history, tmp_path / "curve.png")
    ticks = [t for t in figures[0].axes[0].get_xticks() if 1 <= t <= 3]
    monkeypatch.undo()
    plt.close(figures[0])
    assert ticks and all(float(t).is_integer() for t in ticks)
