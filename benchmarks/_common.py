"""Helpers shared by the benchmark scripts (run by hand: ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Callable

DATA_ENV = "SEGTOOLKIT_DATA"


def shared_data_dir() -> Path:
    """``$SEGTOOLKIT_DATA`` or ``../shared/data`` beside the repository."""
    return Path(os.environ.get(DATA_ENV, Path(__file__).resolve().parents[2] / "shared" / "data"))


def require_shared_data() -> Path:
    """The shared data folder, or exit with a clear message when it is absent."""
    folder = shared_data_dir()
    if not (folder / "datasets_index.json").is_file():
        raise SystemExit(f"shared data not found at {folder}; set {DATA_ENV} to the folder holding the datasets")
    return folder


def best_time(function: Callable[[], object], repeats: int = 3) -> tuple[float, object]:
    """Median wall time over ``repeats`` runs (after the first call's result is kept)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def cpu_model_and_amx() -> tuple[str, list[str]]:
    """The CPU model name and its AMX flags from ``/proc/cpuinfo`` (numbers depend on both; "unknown" elsewhere)."""
    model, flags = "unknown", []
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = sorted(f for f in line.split(":", 1)[1].split() if f.startswith("amx"))
                    break
    except OSError:
        pass
    return model, flags


def cpu_description() -> str:
    """``model (AMX flags; N visible cores)``, printed by every benchmark beside its numbers."""
    model, amx = cpu_model_and_amx()
    return f"{model} ({' '.join(amx) if amx else 'no AMX'}; {os.cpu_count()} visible cores)"
