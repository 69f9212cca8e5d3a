"""Cohort runs: one task over thousands of scans on a Dask cluster, resumable, with measurements and automatic QC.

Python API::

    from SegToolkitLib.cohort import run_cohort, QcThresholds
    result = run_cohort("scans/", "out/", "predict", {"model": "MODEL_DIR"}, workers=4,
                        progress=callback, cancel=token)

* :mod:`.cases`: the cases of a folder or CSV manifest;
* :mod:`.tasks`: the work for one case on a worker (segment, write, measure, QC values, thumbnail, record);
* :mod:`.records`: per-case completion records with output checksums (what resuming trusts);
* :mod:`.qc`: the automatic QC checks and their thresholds;
* :mod:`.report`: the self-contained ``report.html``;
* :mod:`.engine`: the driver: Dask cluster, resume, tables, ``run.json``.

Sits above ``io``, ``measurement`` and ``methods``; only ``interfaces`` import it. See ``docs/cohort.md``.
"""

from __future__ import annotations

import importlib

from .choices import FORMATS, TASKS

# Imported on first use, so that ``segtoolkit --help`` and the other commands do not pay for Dask, pyarrow and
# the measurement modules.
_EXPORTS = {"CohortResult": "engine", "cohort_status": "engine", "rebuild_report": "engine", "run_cohort": "engine",
            "QcThresholds": "qc", "load_task_model": "tasks"}

__all__ = ["FORMATS", "TASKS", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
