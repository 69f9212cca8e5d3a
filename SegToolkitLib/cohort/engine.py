"""Running a cohort on a Dask distributed cluster, resuming from OUTDIR, and writing the cohort's tables, QC and
report.

The driver finds the cases, skips those whose records say they are finished (outputs checked against their
checksums), submits the rest to the cluster (a ``LocalCluster`` of worker processes by default, or an existing
scheduler), follows them as they finish, and at the end writes ``measurements.parquet`` / ``.csv``, ``qc.csv``,
``report.html`` and ``run.json``. Workers write each case's outputs and record themselves, so a driver killed
mid-run loses no finished case; a worker killed mid-case has its case re-run by Dask on another worker.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import platform
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import CancelledError, InputError, OutputError, SegToolkitError
from ..io import atomic_output, write_text_atomic
from ..progress import CancelToken, ProgressCallback, report
from .cases import Case, discover_cases
from .choices import FORMATS, TASKS
from .qc import QC_COLUMNS, QcThresholds, evaluate
from .records import (
    DONE,
    FAILED,
    LABELS,
    RECORDS,
    THUMBNAILS,
    all_records,
    finished_records,
    remove_stale_temporaries,
    write_record,
)
from .report import write_report
from .tasks import TaskSpec, run_case

RUN_JSON = "run.json"
LOCK = ".cohort.lock"
MEASUREMENT_KEYS = ("case", "label", "name")
log = logging.getLogger("segtoolkit.cohort")


@dataclass
class CohortResult:
    """What a run left in OUTDIR."""

    outdir: Path
    total: int
    done: int
    failed: int
    flagged: int
    ran: int  # cases processed in this run (the others were already finished)
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)


def run_cohort(source: Path | str, outdir: Path | str, task: str, options: dict | None = None, *,
               scheduler: str | None = None, workers: int | None = None, processes: bool = True,
               output_format: str = "nii.gz", modality: str = "auto", thresholds: QcThresholds | None = None,
               retry_failed: bool = False, progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None) -> CohortResult:
    """Run ``task`` on every case of ``source`` (folder or CSV manifest) into ``outdir``; resumes a previous run.

    ``options``: the task's options (``model`` for predict, ``atlases`` for atlas...; see ``docs/cohort.md``).
    ``scheduler``: address of an existing Dask scheduler; otherwise a local cluster of ``workers`` processes
    (threads with ``processes=False``) is started for the run. ``progress(fraction, message)`` is called once per
    finished case; ``cancel`` stops the run (cases in flight are abandoned, finished cases are kept).
    """
    start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    outdir = Path(outdir)
    options = dict(options or {})
    _check_request(task, options, output_format, workers, scheduler)
    thresholds = thresholds or QcThresholds()
    cases = discover_cases(source, task)
    _prepare_outdir(outdir)
    with _lock(outdir):
        previous = _read_run(outdir)
        model = _model_fingerprint(options.get("model")) if task == "predict" else None
        _check_same_parameters(previous, task, options, output_format, model, outdir)
        remove_stale_temporaries(outdir)
        ids = [c.case for c in cases]
        finished = finished_records(outdir, ids)
        todo = [c for c in cases if _needs_run(c, finished.get(c.case), retry_failed)]
        report(progress, (len(cases) - len(todo)) / len(cases), f"{len(cases) - len(todo)} of {len(cases)} cases "
               f"already finished; {len(todo)} to run", cancel)
        run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        engine = {"scheduler": scheduler or "local", "workers": None, "processes": None if scheduler else processes}
        # written first, so that a run resumed after a crash is checked against these parameters
        _write_run(outdir, _run_document(previous, source, task, options, output_format, model, modality, thresholds,
                                         engine, ids, finished, started, 0.0, len(todo), run_id, state="running"))
        if todo:
            task_options = dict(options, model_sha256=model["sha256"]) if model else options
            _run_on_cluster(todo, cases, finished, outdir, task, task_options, output_format, run_id, scheduler,
                            workers, processes, engine, progress, cancel)
        wanted = set(ids)
        records = {case: record for case, record in all_records(outdir).items() if case in wanted}
        run = _run_document(previous, source, task, options, output_format, model, modality, thresholds, engine,
                            ids, records, started, time.perf_counter() - start, len(todo), run_id)
        files, flagged = write_cohort_outputs(outdir, run, ids, records, thresholds, modality)
    done = sum(1 for r in records.values() if r.get("status") == DONE)
    failed = sum(1 for r in records.values() if r.get("status") == FAILED)
    return CohortResult(outdir, len(ids), done, failed, flagged, len(todo), time.perf_counter() - start, files)


# --- the cluster -------------------------------------------------------------------------------------------

def _run_on_cluster(todo: list[Case], cases: list[Case], finished: dict, outdir: Path, task: str, options: dict,
                    output_format: str, run_id: str, scheduler: str | None, workers: int | None, processes: bool,
                    engine: dict, progress: ProgressCallback | None, cancel: CancelToken | None) -> None:
    from distributed import wait

    total = len(cases)
    counts = {"done": sum(1 for r in finished.values() if r.get("status") == DONE),
              "failed": sum(1 for r in finished.values() if r.get("status") == FAILED)}
    with _client(scheduler, workers, processes) as (client, worker_count):
        engine["workers"] = worker_count
        threads = _threads_per_case(scheduler, processes, worker_count)
        spec = TaskSpec(task, str(outdir.resolve()), options, output_format, threads, run_id)
        futures = {client.submit(run_case, case, spec, key=f"cohort-{case.case}-{run_id}", pure=False): case
                   for case in todo}
        pending = set(futures)
        while pending:
            if cancel is not None and cancel.cancelled:
                client.cancel(list(pending))
                raise CancelledError("cohort run cancelled; finished cases are kept: run it again to resume")
            try:
                result = wait(list(pending), timeout=0.5, return_when="FIRST_COMPLETED")
            except TimeoutError:
                continue
            for future in result.done:
                pending.discard(future)
                record = _collect(future, futures[future], outdir, run_id)
                counts["done" if record.get("status") == DONE else "failed"] += 1
                finished_count = counts["done"] + counts["failed"]
                state = "done" if record.get("status") == DONE else f"FAILED: {record.get('error')}"
                report(progress, finished_count / total, f"{record['case']} {state} ({finished_count}/{total}, "
                       f"{counts['failed']} failed)", cancel)
                future.release()


def _threads_per_case(scheduler: str | None, processes: bool, workers: int) -> int:
    """ITK/torch threads of each case: the local cores shared among the worker processes; one on an existing
    cluster (its workers may run several cases at once); 0 (unchanged) for in-process workers."""
    if scheduler:
        return 1
    return max(1, (os.cpu_count() or 1) // max(workers, 1)) if processes else 0


def _collect(future, case: Case, outdir: Path, run_id: str) -> dict:
    """The case's record from a finished future; a worker that died on the case is recorded as its failure."""
    if future.status == "finished":
        return future.result()
    error = future.exception()
    name = type(error).__name__
    message = (f"{case.case}: the worker process died while processing this case, also when retried (out of memory "
               "or a crash); give the workers more memory or check the case's image") if name == "KilledWorker" \
        else f"{case.case}: {name}: {error}"
    # not the case's own fault as far as we know (a worker lost, a crash): tried again by the next run
    record = {"case": case.case, "status": FAILED, "run_id": run_id, "error": message, "transient": True,
              "input_fingerprint": case.fingerprint(), "inputs": case.input_paths(), "group": case.group,
              "worker": None, "seconds": None}
    write_record(outdir, record)
    return record


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int | None, processes: bool):
    """A Dask client: on an existing scheduler, or on a local cluster started (and closed) here."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as error:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({error}); check the address and that "
                             "the scheduler runs") from None
        try:
            yield client, len(client.scheduler_info().get("workers", {}))
        finally:
            client.close()
        return
    count = workers or default_workers()
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:  # the cluster's own start/stop chatter
        logging.getLogger("distributed").setLevel(logging.ERROR)
    # a case whose worker dies three times is recorded as failed instead of killing more workers
    with dask.config.set({"distributed.scheduler.allowed-failures": 2, "logging.distributed": "error"}):
        try:
            cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=processes,
                                   dashboard_address=None, silence_logs=logging.ERROR)
        except (RuntimeError, OSError, TimeoutError) as error:
            raise SegToolkitError(f"cannot start a local Dask cluster of {count} worker processes ({error}); from a "
                                  "Python script, call run_cohort under 'if __name__ == \"__main__\":' (worker "
                                  "processes import the main script), or pass processes=False") from None
        client = Client(cluster)
        try:
            yield client, count
        finally:
            with contextlib.suppress(Exception):
                client.close()
            with contextlib.suppress(Exception):
                cluster.close()


def default_workers() -> int:
    """Half the CPU cores (each worker runs its method with the other half's threads), at least one."""
    return max(1, (os.cpu_count() or 2) // 2)


# --- OUTDIR state ------------------------------------------------------------------------------------------

def _check_request(task: str, options: dict, output_format: str, workers: int | None, scheduler: str | None) -> None:
    if task not in TASKS:
        raise InputError(f"task {task!r}: choose one of {', '.join(TASKS)}")
    if output_format not in FORMATS:
        raise InputError(f"format {output_format!r}: choose one of {', '.join(FORMATS)}")
    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers}: must be at least 1")
    if workers is not None and scheduler:
        raise InputError("give either --workers (a local cluster) or --scheduler (an existing one), not both")
    if task == "predict" and not options.get("model"):
        raise InputError("--task predict needs --model MODEL_DIR")
    if task == "predict":
        from ..methods.deep.store import resolve_model

        resolve_model(options["model"])  # a path, or a store model's name: a clear error when neither
    if task == "atlas" and not options.get("atlases"):
        raise InputError("--task atlas needs at least one --atlas IMAGE LABELS")
    for image, labels in options.get("atlases", []) if task == "atlas" else []:
        for path in (image, labels):
            if not Path(path).exists():
                raise InputError(f"{path}: atlas file not found")


def _prepare_outdir(outdir: Path) -> None:
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"{outdir}: exists and is not a folder; give a folder for the cohort's outputs")
    if not outdir.parent.exists():
        raise OutputError(f"{outdir}: parent folder {outdir.parent} does not exist; create it first")
    for sub in (RECORDS, LABELS, THUMBNAILS):
        (outdir / sub).mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def _lock(outdir: Path):
    """One driver per OUTDIR at a time; a lock left by a killed driver (its process is gone) is taken over."""
    path = outdir / LOCK
    mine = {"pid": os.getpid(), "host": socket.gethostname()}
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        holder = None
    if holder and holder.get("host") == mine["host"] and _alive(int(holder.get("pid", -1))) \
            and holder.get("pid") != mine["pid"]:
        raise OutputError(f"{outdir}: another cohort run (process {holder['pid']}) is writing here; wait for it or "
                          "stop it first")
    write_text_atomic(path, json.dumps(mine))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_run(outdir: Path) -> dict | None:
    path = outdir / RUN_JSON
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise InputError(f"{path}: damaged run description; move it away to start the cohort afresh") from None


def _write_run(outdir: Path, run: dict) -> Path:
    path = outdir / RUN_JSON
    write_text_atomic(path, json.dumps(run, indent=1, default=str))
    return path


def _check_same_parameters(previous: dict | None, task: str, options: dict, output_format: str, model: dict | None,
                           outdir: Path) -> None:
    """A resumed run must compute what the finished cases were computed with."""
    if previous is None:
        return
    before = (previous.get("task"), previous.get("options"), previous.get("format"),
              (previous.get("model") or {}).get("sha256"))
    now = (task, json.loads(json.dumps(options)), output_format, (model or {}).get("sha256"))
    if before != now:
        names = [n for n, a, b in zip(("task", "options", "format", "model"), before, now) if a != b]
        raise InputError(f"{outdir}: holds a run with other {', '.join(names)} ({previous.get('task')} "
                         f"{previous.get('options')}); use a new output folder to run with these settings")


def _needs_run(case: Case, record: dict | None, retry_failed: bool) -> bool:
    if record is None:
        return True
    if record.get("status") == DONE:
        return False
    return retry_failed or bool(record.get("transient")) or record.get("input_fingerprint") != case.fingerprint()


def _model_fingerprint(folder: str | None) -> dict | None:
    """SHA-256 over the model folder's files (names and contents), so a changed model is noticed."""
    if not folder:
        return None
    from ..methods.deep.store import resolve_model

    digest = hashlib.sha256()
    root = resolve_model(folder)  # a folder, an nnU-Net zip, or a store model's folder
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in (p for p in files if "checkpoint" not in p.relative_to(root).parts):
        digest.update(str(path.relative_to(root) if root.is_dir() else path.name).encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return {"path": str(root.resolve()), "sha256": digest.hexdigest()}


def _versions() -> dict:
    import importlib.metadata as metadata

    versions = {"segtoolkit": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for package in ("numpy", "SimpleITK", "scipy", "dask", "distributed", "pyarrow", "torch", "monai"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def _run_document(previous: dict | None, source, task, options, output_format, model, modality, thresholds, engine,
                  ids, records, started, seconds, ran, run_id, state: str = "finished") -> dict:
    done = [r for r in records.values() if r.get("status") == DONE]
    history = [dict(entry, state="interrupted" if entry.get("state") == "running" else entry.get("state"))
               for entry in (previous or {}).get("runs", []) if entry.get("run_id") != run_id]
    history.append({"run_id": run_id, "state": state, "started": started, "seconds": round(seconds, 2),
                    "cases_run": ran, "engine": engine, "host": socket.gethostname()})
    return {
        "schema": "segtoolkit.cohort-run", "schema_version": 1, "state": state, "input": str(source), "task": task,
        "options": json.loads(json.dumps(options)), "format": output_format, "model": model, "modality": modality,
        "qc_thresholds": thresholds.to_dict(), "versions": _versions(), "engine": engine,
        "cases": {"total": len(ids), "done": len(done),
                  "failed": sum(1 for r in records.values() if r.get("status") == FAILED)},
        "timing": {"started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "seconds": round(seconds, 2), "cases_run": ran,
                   "case_seconds_total": round(sum(r.get("seconds") or 0.0 for r in done), 2)},
        "runs": history, "case_ids": ids,
    }


# --- tables, QC and report ---------------------------------------------------------------------------------

def write_cohort_outputs(outdir: Path, run: dict, ids: list[str], records: dict[str, dict],
                         thresholds: QcThresholds, modality: str) -> tuple[dict[str, Path], int]:
    """Write measurements (Parquet + CSV), qc.csv, report.html and run.json; returns the files and flag count."""
    rows = [row for case in ids if records.get(case, {}).get("status") == DONE
            for row in records[case].get("measurements", [])]
    files = {"measurements_parquet": write_parquet(outdir / "measurements.parquet", rows),
             "measurements_csv": write_csv(outdir / "measurements.csv", rows, _measurement_columns(rows))}
    reviewed = read_reviewed(outdir / "qc.csv")
    qc = evaluate(ids, records, thresholds, modality)
    qc_rows = []
    for case in ids:
        if case in qc:
            row = qc[case].row
            row["reviewed"] = reviewed.get(case, "")
            qc_rows.append(row)
    files["qc"] = write_csv(outdir / "qc.csv", qc_rows, list(QC_COLUMNS))
    files["report"] = write_report(outdir, run, ids, records, qc, reviewed)
    run["cases"]["flagged"] = sum(1 for row in qc_rows if row["flagged"])
    files["run"] = _write_run(outdir, run)
    return files, run["cases"]["flagged"]


def _measurement_columns(rows: list[dict]) -> list[str]:
    columns = list(MEASUREMENT_KEYS)
    for row in rows:
        columns += [key for key in row if key not in columns]
    return columns


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    """Write a CSV table atomically (booleans as true/false, missing values empty) and check its row count."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(column)) for column in columns])
    write_text_atomic(path, buffer.getvalue())
    with open(path, newline="", encoding="utf-8") as handle:
        written = sum(1 for _ in csv.reader(handle)) - 1
    if written != len(rows):
        raise OutputError(f"{path}: wrote {written} rows instead of {len(rows)}; check the disk")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    """Write the measurement rows as Parquet atomically and check the row count read back."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = _measurement_columns(rows)
    table = pa.Table.from_pylist([{c: _parquet_cell(row.get(c)) for c in columns} for row in rows],
                                 schema=_parquet_schema(rows, columns) if rows else pa.schema([(c, pa.string())
                                                                                                for c in columns]))
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)
    if pq.read_metadata(path).num_rows != len(rows):
        raise OutputError(f"{path}: the Parquet file written does not hold {len(rows)} rows; check the disk")
    return path


def _parquet_schema(rows: list[dict], columns: list[str]):
    """A column type per column from its values: bool, int64, float64 or string (mixed numbers are float64)."""
    import pyarrow as pa

    schema = []
    for column in columns:
        values = [row.get(column) for row in rows if row.get(column) is not None]
        if values and all(isinstance(v, bool) for v in values):
            kind = pa.bool_()
        elif values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            kind = pa.int64()
        elif values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            kind = pa.float64()
        else:
            kind = pa.string()
        schema.append((column, kind))
    return pa.schema(schema)


def _parquet_cell(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return value


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 6)) if math.isfinite(value) else ""
    return str(value)


def read_reviewed(path: Path) -> dict[str, str]:
    """The ``reviewed`` column of an existing qc.csv (what a person wrote), by case."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        return {row["case"]: row["reviewed"].strip() for row in reader
                if row.get("case") and (row.get("reviewed") or "").strip().lower() not in ("", "false", "no", "0")}


def cohort_status(outdir: Path | str) -> dict:
    """How far a cohort in OUTDIR is: totals from run.json and the records (checksums not re-checked)."""
    outdir = Path(outdir)
    run = _read_run(outdir)
    if run is None and not (outdir / RECORDS).is_dir():
        raise InputError(f"{outdir}: not a cohort output folder (no {RUN_JSON}, no {RECORDS}/)")
    ids = (run or {}).get("case_ids") or sorted(all_records(outdir))
    records = all_records(outdir)
    done = sum(1 for c in ids if records.get(c, {}).get("status") == DONE)
    failed = sum(1 for c in ids if records.get(c, {}).get("status") == FAILED)
    flagged = reviewed = 0
    if (outdir / "qc.csv").is_file():
        with open(outdir / "qc.csv", newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
        flagged = sum(1 for row in rows if row.get("flagged") == "true")
        reviewed = len(read_reviewed(outdir / "qc.csv"))
    holder = None
    with contextlib.suppress(OSError, ValueError):
        holder = json.loads((outdir / LOCK).read_text(encoding="utf-8"))
    running = bool(holder and holder.get("host") == socket.gethostname() and _alive(int(holder.get("pid", -1))))
    return {"outdir": str(outdir), "task": (run or {}).get("task"), "total": len(ids), "done": done,
            "failed": failed, "missing": len(ids) - done - failed, "flagged": flagged, "reviewed": reviewed,
            "running": running, "last_run": ((run or {}).get("timing") or {}).get("finished")}


def rebuild_report(outdir: Path | str, threshold_texts: list[str] | None = None) -> dict[str, Path]:
    """Recompute the QC from the records (with changed thresholds if given) and rewrite the tables and report,
    keeping what people wrote in qc.csv's ``reviewed`` column."""
    outdir = Path(outdir)
    run = _read_run(outdir)
    if run is None:
        raise InputError(f"{outdir}: no {RUN_JSON}; run 'segtoolkit cohort run' into this folder first")
    thresholds = QcThresholds.from_settings(run.get("qc_thresholds"), threshold_texts)
    run["qc_thresholds"] = thresholds.to_dict()
    ids = run.get("case_ids") or sorted(all_records(outdir))
    wanted = set(ids)
    records = {case: record for case, record in all_records(outdir).items() if case in wanted}
    with _lock(outdir):
        files, _ = write_cohort_outputs(outdir, run, ids, records, thresholds, run.get("modality", "auto"))
    return files

