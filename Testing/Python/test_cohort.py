"""Cohort runs: a local cluster of 2 worker processes survives a killed worker and a killed driver (the rerun
completes every case exactly once), 1 and 2 workers give the same results, outputs are checked against their
checksums when resuming, cancel keeps finished cases, bad manifests give one-line errors, and predict loads its
model once per worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cohort_phantoms import make_grow_cohort, read_csv

from SegToolkitLib.cohort import run_cohort
from SegToolkitLib.cohort.records import all_records, sha256_file
from SegToolkitLib.errors import CancelledError, InputError
from SegToolkitLib.interfaces.cli.app import main
from SegToolkitLib.io import read_label_map
from SegToolkitLib.progress import CancelToken

CASES = 16


@pytest.fixture(scope="module")
def grow_manifest(tmp_path_factory):
    return make_grow_cohort(tmp_path_factory.mktemp("grow"), CASES)


def _wait_for(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _record_count(outdir: Path) -> int:
    folder = outdir / "records"
    return len(list(folder.glob("*.json"))) if folder.is_dir() else 0


def _worker_processes(driver_pid: int) -> list:
    import psutil

    children = psutil.Process(driver_pid).children(recursive=True)
    return [p for p in children if any("spawn_main" in part for part in p.cmdline())]


@pytest.fixture(scope="module")
def killed_and_resumed(grow_manifest, tmp_path_factory):
    """Run with 2 worker processes; kill a worker mid-run, then the driver (SIGKILL); run again to completion."""
    import psutil

    outdir = tmp_path_factory.mktemp("killed") / "out"
    command = [sys.executable, "-m", "SegToolkitLib", "cohort", "run", str(grow_manifest), "-o", str(outdir),
               "--task", "grow", "--workers", "2"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: _record_count(outdir) >= 2, 180, "the first cases")
        workers = _worker_processes(driver.pid)
        assert len(workers) == 2
        workers[0].send_signal(signal.SIGKILL)
        killed_at = _record_count(outdir)
        _wait_for(lambda: _record_count(outdir) >= killed_at + 2, 180, "cases after the worker was killed")
        survivors = _worker_processes(driver.pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
        psutil.wait_procs(survivors, timeout=30)  # local workers exit with their driver
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in survivors)
    finally:
        if driver.poll() is None:
            driver.kill()
    # finished records only: a dot-file is an atomic write the kill interrupted, which the rerun clears away
    before = {path.name: path.read_bytes() for path in (outdir / "records").glob("*.json")
              if not path.name.startswith(".")}
    labels_before = sorted(p.name for p in (outdir / "labels").iterdir())
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    return outdir, before, labels_before, rerun.stdout


def test_killed_worker_and_driver_then_rerun_completes_every_case_exactly_once(killed_and_resumed):
    outdir, before, labels_before, stdout = killed_and_resumed
    assert 0 < len(before) < CASES  # the driver really died mid-run
    assert all(name.endswith(".nii.gz") or name.startswith(".") for name in labels_before)  # no partial final file
    records = all_records(outdir)
    assert len(records) == CASES
    assert all(r["status"] == "done" for r in records.values()), [r.get("error") for r in records.values()]
    for name, data in before.items():  # finished cases were not run again
        assert (outdir / "records" / name).read_bytes() == data
    run = json.loads((outdir / "run.json").read_text())
    assert [entry["state"] for entry in run["runs"]] == ["interrupted", "finished"]
    second = run["runs"][-1]["run_id"]
    assert sum(r["run_id"] == second for r in records.values()) == CASES - len(before) == run["timing"]["cases_run"]
    for record in records.values():
        label = record["outputs"]["label"]
        assert sha256_file(outdir / label["path"]) == label["sha256"]
    assert not list((outdir / "labels").glob(".*"))  # temporaries of the killed run removed
    assert f"{CASES} cases, {CASES} done, 0 failed" in stdout


def test_one_worker_gives_the_same_results_as_two(killed_and_resumed, grow_manifest, tmp_path):
    outdir, *_ = killed_and_resumed
    single = run_cohort(grow_manifest, tmp_path / "one", "grow", {"method": "connected", "lower": None,
                                                                   "upper": None},
                        workers=1, processes=False, output_format="seg.nrrd")
    assert single.done == CASES
    for case in ("subject000", "subject007", "subject015"):
        two = read_label_map(outdir / "labels" / f"{case}.nii.gz").image
        one = read_label_map(tmp_path / "one" / "labels" / f"{case}.seg.nrrd").image
        import SimpleITK as sitk

        assert np.array_equal(sitk.GetArrayFromImage(one), sitk.GetArrayFromImage(two))
        assert np.allclose(one.GetOrigin(), two.GetOrigin()) and np.allclose(one.GetSpacing(), two.GetSpacing())
    drop = {"name"}  # grown region name is the same; compare every measured number
    rows_two = [{k: v for k, v in row.items() if k not in drop} for row in read_csv(outdir / "measurements.csv")]
    rows_one = [{k: v for k, v in row.items() if k not in drop} for row in read_csv(single.outdir / "measurements.csv")]
    assert rows_one == rows_two


def test_changed_output_is_redone_and_other_parameters_are_refused(grow_manifest, tmp_path):
    outdir = tmp_path / "out"
    first = run_cohort(grow_manifest, outdir, "grow", {"method": "connected"}, workers=1, processes=False)
    assert first.ran == CASES
    damaged = outdir / "labels" / "subject005.nii.gz"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    (outdir / "records" / "subject007.json").unlink()
    (outdir / "labels" / ".subject009.nii.gz.abc.tmp.nii.gz").write_bytes(b"partial")
    second = run_cohort(grow_manifest, outdir, "grow", {"method": "connected"}, workers=1, processes=False)
    assert second.ran == 2 and second.done == CASES
    records = all_records(outdir)
    run_ids = {record["run_id"] for record in records.values()}
    assert len(run_ids) == 2
    redone = sorted(case for case, record in records.items() if record["run_id"] != records["subject000"]["run_id"])
    assert redone == ["subject005", "subject007"]
    assert not (outdir / "labels" / ".subject009.nii.gz.abc.tmp.nii.gz").exists()
    with pytest.raises(InputError, match="other options"):
        run_cohort(grow_manifest, outdir, "grow", {"method": "confidence"}, workers=1, processes=False)


def test_cancel_keeps_finished_cases_and_the_rerun_finishes(grow_manifest, tmp_path):
    token = CancelToken()
    messages = []

    def progress(fraction: float, message: str) -> None:
        messages.append((fraction, message))
        if "done" in message and fraction > 0:
            token.cancel()

    with pytest.raises(CancelledError):
        run_cohort(grow_manifest, tmp_path / "out", "grow", workers=1, processes=False, progress=progress,
                   cancel=token)
    finished = _record_count(tmp_path / "out")
    assert 1 <= finished < CASES
    result = run_cohort(grow_manifest, tmp_path / "out", "grow", workers=1, processes=False)
    assert result.ran == CASES - finished and result.done == CASES
    assert any(f"(1/{CASES}, 0 failed)" in message for _, message in messages)


def test_bad_manifests_give_one_line_errors(tmp_path, capsys):
    (tmp_path / "no_image.csv").write_text('case,seeds\na,"1,2,3"\n')
    (tmp_path / "unquoted.csv").write_text("case,image,seeds\na,x.nii.gz,1,2,3\n")
    (tmp_path / "twice.csv").write_text("case,image\na,x.nii.gz\na,y.nii.gz\n")
    (tmp_path / "empty").mkdir()
    for source, words in (("no_image.csv", "no column image"), ("twice.csv", "repeats line 2"),
                          ("unquoted.csv", "quote values holding commas"),
                          ("empty", "no cases found"), ("missing", "not found")):
        code = main(["cohort", "run", str(tmp_path / source), "-o", str(tmp_path / "out"), "--task", "grow",
                     "--workers", "1"])
        error = capsys.readouterr().err
        assert code == 2 and words in error and error.count("\n") == 1, error
    code = main(["cohort", "run", str(tmp_path / "twice.csv"), "-o", str(tmp_path / "out"), "--task", "predict"])
    assert code == 2 and "needs --model" in capsys.readouterr().err


def test_failed_case_is_recorded_and_retried_when_its_input_changes(tmp_path):
    import shutil

    manifest = make_grow_cohort(tmp_path / "in", 2)
    rows = manifest.read_text().splitlines()
    rows.append('broken,images/missing.nii.gz,"1,2,3"')
    manifest.write_text("\n".join(rows) + "\n")
    result = run_cohort(manifest, tmp_path / "out", "grow", workers=1, processes=False)
    assert (result.done, result.failed) == (2, 1)
    record = all_records(tmp_path / "out")["broken"]
    assert record["status"] == "failed" and "missing.nii.gz: file not found" in record["error"]
    assert run_cohort(manifest, tmp_path / "out", "grow", workers=1, processes=False).ran == 0
    shutil.copy(tmp_path / "in" / "images" / "subject000.nii.gz", tmp_path / "in" / "images" / "missing.nii.gz")
    again = run_cohort(manifest, tmp_path / "out", "grow", workers=1, processes=False)
    assert again.ran == 1 and again.failed == 1  # the seed 1,2,3 lies outside the image: a clear error, recorded
    assert "outside" in all_records(tmp_path / "out")["broken"]["error"]


@pytest.mark.usefixtures("torch_one_thread")
def test_predict_cohort_loads_the_model_once_per_worker(tmp_path):
    pytest.importorskip("torch")
    from deep_synthetic import make_blob_dataset, small_plan

    from SegToolkitLib.methods.deep.dataset import load_dataset
    from SegToolkitLib.methods.deep.planning import plan_dataset
    from SegToolkitLib.methods.deep.training import TrainingOptions, train

    data = make_blob_dataset(tmp_path / "data", cases=4, size=(24, 24, 12), spacing=(1.0, 1.0, 2.0), modality="MR")
    dataset = load_dataset(data)
    plan = small_plan(plan_dataset(dataset), filters=8, iterations=8)
    train(dataset, tmp_path / "model", plan, TrainingOptions(epochs=2, quantize=False))
    images = data / "images"
    import SimpleITK as sitk

    case = sitk.ReadImage(str(images / "case00.nii.gz"))
    noise = sitk.GetImageFromArray(np.random.default_rng(1).normal(0, 0.25, case.GetSize()[::-1]).astype(np.float32))
    noise.CopyInformation(case)
    sitk.WriteImage(noise, str(images / "noise.nii.gz"))  # nothing to find
    result = run_cohort(images, tmp_path / "out", "predict", {"model": str(tmp_path / "model"), "backend": "torch",
                                                               "uncertainty": "entropy"},
                        workers=1, processes=False)
    assert result.done == 5
    records = all_records(tmp_path / "out")
    assert len({r["model_load_id"] for r in records.values()}) == 1  # loaded once for the five cases
    assert all(r["uncertainty_mean"] is None or 0 <= r["uncertainty_mean"] <= 1 for r in records.values())
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert len(run["model"]["sha256"]) == 64 and run["versions"]["torch"]
    qc = {row["case"]: row for row in read_csv(tmp_path / "out" / "qc.csv")}
    # a noise image: this barely trained model either finds nothing or is unsure everywhere; either is flagged
    assert qc["noise"]["flagged"] == "true"
    assert any(words in qc["noise"]["reasons"] for words in ("empty segmentation", "high uncertainty"))
    assert float(qc["noise"]["uncertainty_mean"] or 0) <= 1
    assert os.path.getsize(tmp_path / "out" / "labels" / "case01.nii.gz") > 0


@pytest.mark.usefixtures("torch_one_thread")
def test_predict_cohort_takes_an_nnunet_model_folder_as_predict_does(tmp_path):
    pytest.importorskip("dynamic_network_architectures")
    import SimpleITK as sitk
    from nnunet_synthetic import ct_image, make_trained_folder

    from SegToolkitLib.methods.deep.formats.loading import open_model, predict_any

    model = make_trained_folder(tmp_path / "nnunet", mirror=None)
    images = tmp_path / "images"
    images.mkdir()
    for seed in range(3):
        sitk.WriteImage(ct_image(seed=seed), str(images / f"ct{seed}.nii.gz"))
    result = run_cohort(images, tmp_path / "out", "predict", {"model": str(model), "backend": "torch"},
                        workers=1, processes=False)
    assert result.done == 3 and result.failed == 0
    direct = predict_any(open_model(model), sitk.ReadImage(str(images / "ct1.nii.gz")), backend="torch")
    cohort = sitk.ReadImage(str(tmp_path / "out" / "labels" / "ct1.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(cohort), sitk.GetArrayFromImage(direct.label_map.image))
    assert len({r["model_load_id"] for r in all_records(tmp_path / "out").values()}) == 1


def test_dicom_studies_split_into_series_and_labels_written_as_dicom_seg(tmp_path):
    pytest.importorskip("highdicom")
    import SimpleITK as sitk
    from dicom_synthetic import write_series

    from SegToolkitLib.cohort.cases import discover_cases
    from SegToolkitLib.io import read_image
    from SegToolkitLib.samples.phantom import LIVER, make_phantom

    phantom = make_phantom(0, shape=(24, 21, 12), spacing=(8.0, 8.0, 12.0))
    image = sitk.Cast(phantom.image, sitk.sitkInt16)
    write_series(tmp_path / "dicom" / "patientA", image)
    write_series(tmp_path / "dicom" / "patientB" / "study", image)
    write_series(tmp_path / "dicom" / "patientB" / "study", image[:, :, :10])
    cases = discover_cases(tmp_path / "dicom", "predict")
    ids = [c.case for c in cases]
    assert ids[0] == "patientA" and all(i.startswith("patientB_study_") for i in ids[1:]) and len(set(ids)) == 3
    assert len({c.images[0] for c in cases}) == 3 and all("::" in c.images[0] for c in cases)
    seed = ",".join(f"{v:.2f}" for v in phantom.seeds[LIVER])
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f'case,image,seeds\na,dicom/patientA,"{seed}"\n')
    result = run_cohort(manifest, tmp_path / "out", "grow", workers=1, processes=False, output_format="dcm")
    assert result.done == 1, all_records(tmp_path / "out")["a"].get("error")
    reference = read_image(tmp_path / "dicom" / "patientA")
    written = read_label_map(tmp_path / "out" / "labels" / "a.dcm", reference=reference)
    from SegToolkitLib.methods.classic import grow

    direct = grow(reference, [phantom.seeds[LIVER]])  # the same task outside the cohort
    assert np.array_equal(sitk.GetArrayFromImage(written.image) > 0, sitk.GetArrayFromImage(direct) > 0)
    assert sitk.GetArrayFromImage(direct).sum() > 20


def test_an_existing_dask_scheduler_runs_the_cases(tmp_path):
    from distributed import LocalCluster

    manifest = make_grow_cohort(tmp_path / "in", 3)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        result = run_cohort(manifest, tmp_path / "out", "grow", scheduler=cluster.scheduler_address)
    assert result.done == 3
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["engine"] == {"scheduler": cluster.scheduler_address, "workers": 1, "processes": None}


def test_atlas_task_with_reference_labels_reports_dice(tmp_path, capsys):
    from cohort_phantoms import phantom_case, write_case

    atlas_image, atlas_labels = write_case(tmp_path / "atlas", "atlas", *phantom_case(0))
    image, reference = write_case(tmp_path / "in", "s1", *phantom_case(1))
    (tmp_path / "m.csv").write_text(f"case,image,reference\ns1,{image},{reference}\n")
    code = main(["cohort", "run", str(tmp_path / "m.csv"), "-o", str(tmp_path / "out"), "--task", "atlas",
                 "--atlas", str(atlas_image), str(atlas_labels), "--transform", "affine", "--preset", "fast",
                 "--workers", "1", "--format", "seg.nrrd", "--qc", "dice_min=0.95"])
    assert code == 0, capsys.readouterr().err
    rows = {row["name"]: row for row in read_csv(tmp_path / "out" / "measurements.csv")}
    assert float(rows["liver"]["dice"]) > 0.8 and float(rows["liver"]["hd95_mm"]) < 15
    assert read_label_map(tmp_path / "out" / "labels" / "s1.seg.nrrd").labels.name(1) == "liver"
    qc = read_csv(tmp_path / "out" / "qc.csv")[0]
    assert 0 < float(qc["dice_min"]) < 0.95 and "against the reference" in qc["reasons"]


def test_a_case_that_kills_its_worker_is_recorded_as_failed_and_retried_later(tmp_path):
    """Out of memory or a crash: the worker process dies; the case is recorded as failed (clear error) and the
    next run tries it again."""
    import dask
    from distributed import Client, LocalCluster

    from SegToolkitLib.cohort.cases import Case
    from SegToolkitLib.cohort.engine import _collect, _needs_run

    case = Case("crashing", [str(tmp_path / "image.nii.gz")])
    (tmp_path / "records").mkdir()
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            future = client.submit(os._exit, 1, pure=False)  # what the kernel's OOM killer does to a worker
            with pytest.raises(Exception, match="KilledWorker|died"):
                future.result(timeout=120)
            record = _collect(future, case, tmp_path, "run1")
    assert record["status"] == "failed" and "worker process died" in record["error"]
    assert all_records(tmp_path)["crashing"]["error"] == record["error"]
    assert _needs_run(case, record, retry_failed=False)


def test_folder_cases_group_channels_only_beside_a_0000_file(tmp_path):
    from SegToolkitLib.cohort.cases import discover_cases

    (tmp_path / "sub").mkdir()
    for name in ("scan_2019", "scan_2020", "a_0000", "a_0001", "sub/b", ".hidden"):
        (tmp_path / f"{name}.nii.gz").write_bytes(b"")
    cases = {case.case: [Path(p).name for p in case.images] for case in discover_cases(tmp_path, "predict")}
    assert cases == {"a": ["a_0000.nii.gz", "a_0001.nii.gz"], "scan_2019": ["scan_2019.nii.gz"],
                     "scan_2020": ["scan_2020.nii.gz"], "sub_b": ["b.nii.gz"]}
