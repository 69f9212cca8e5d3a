"""Per-case completion records: ``OUTDIR/records/<case>.json``, written last and atomically by whoever finished
the case (a worker, or the driver for a worker that died).

A record lists the case's outputs with their SHA-256 checksums and sizes. A case counts as done only when its
record says ``done`` and every output it lists exists with that size and checksum; anything else (no record, a
damaged record, a missing or changed output) is run again. Failed cases keep their record (with the error) and
are retried when their inputs change or with ``retry_failed``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..io import write_text_atomic
from ..io.atomic import remove_stale_temporaries as remove_dead_writers_temporaries

RECORDS = "records"
LABELS = "labels"
THUMBNAILS = "thumbnails"
DONE, FAILED = "done", "failed"


def record_path(outdir: Path, case: str) -> Path:
    return Path(outdir) / RECORDS / f"{case}.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def output_entry(outdir: Path, path: Path) -> dict:
    """How a record lists one output: its path relative to OUTDIR, size and checksum."""
    return {"path": str(Path(path).relative_to(outdir)), "bytes": Path(path).stat().st_size,
            "sha256": sha256_file(path)}


def write_record(outdir: Path, record: dict) -> Path:
    """Write a case's record atomically (the last step of a case)."""
    path = record_path(outdir, record["case"])
    write_text_atomic(path, json.dumps(_finite(record), indent=1, allow_nan=False, default=_plain))
    return path


def read_record(outdir: Path, case: str) -> dict | None:
    """The case's record, or None when there is none or it cannot be read."""
    try:
        record = json.loads(record_path(outdir, case).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("case") == case else None


def outputs_intact(outdir: Path, record: dict) -> bool:
    """Whether every output a ``done`` record lists exists with its recorded size and checksum."""
    for entry in record.get("outputs", {}).values():
        path = Path(outdir) / entry["path"]
        try:
            if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
                return False
        except OSError:
            return False
    return True


def finished_records(outdir: Path, cases: list[str], threads: int = 4) -> dict[str, dict]:
    """Records of the cases that are finished: done with intact outputs, or failed (checked in parallel)."""

    def check(case: str) -> tuple[str, dict | None]:
        record = read_record(outdir, case)
        if record is None:
            return case, None
        if record.get("status") == DONE and not outputs_intact(outdir, record):
            return case, None
        return case, record

    with ThreadPoolExecutor(max(1, threads)) as pool:  # hashing releases the GIL
        return {case: record for case, record in pool.map(check, cases) if record is not None}


def all_records(outdir: Path) -> dict[str, dict]:
    """Every readable record in OUTDIR (for status and report), by case id."""
    records = {}
    for path in sorted((Path(outdir) / RECORDS).glob("*.json")):
        record = read_record(outdir, path.stem)
        if record is not None:
            records[path.stem] = record
    return records


def remove_stale_temporaries(outdir: Path) -> int:
    """Delete temporary files left by interrupted atomic writes (``.<name>.<random>.tmp...``, and the shared
    writer's ``.<name>.<pid>-<random>.segtoolkit-tmp...`` of processes that are gone, however recent: a run starts
    before any of its own workers write, so a dead writer's temporary can only be a killed run's)."""
    removed = 0
    for folder in (Path(outdir), *(Path(outdir) / sub for sub in (RECORDS, LABELS, THUMBNAILS))):
        if not folder.is_dir():
            continue
        removed += len(remove_dead_writers_temporaries(folder, dead_seconds=0.0))
        for path in folder.glob(".*.tmp*"):
            with contextlib.suppress(OSError):
                os.unlink(path)
                removed += 1
    return removed


def _finite(value):
    """The record with NaN and infinite numbers as None (JSON has no such numbers)."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _plain(value):
    """JSON for numpy scalars and paths."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
