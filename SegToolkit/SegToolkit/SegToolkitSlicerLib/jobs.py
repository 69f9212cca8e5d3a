"""Long work split so the GUI stays responsive: read the nodes on the main thread, compute on a worker thread,
write the nodes back on the main thread.

MRML is not thread-safe, so a :class:`Job` keeps the two sides apart: ``compute(progress, cancel)`` sees only
SimpleITK images and plain values (captured when the job was made), ``finish(result)`` alone touches the scene.
:class:`JobRunner` runs ``compute`` on a thread and is *polled* from the main thread (by a ``qt.QTimer`` in the
module widget, by a loop in scripts and tests), which then calls ``finish``. Cancel goes through a
:class:`~SegToolkitLib.progress.CancelToken` that SegToolkitLib checks between steps.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from SegToolkitLib.errors import CancelledError
from SegToolkitLib.progress import CancelToken, ProgressCallback


@dataclass
class Job:
    """A unit of long work: ``compute`` may run on any thread (no MRML), ``finish`` runs on the main thread."""

    title: str
    compute: Callable[[ProgressCallback, CancelToken], Any]
    finish: Callable[[Any], Any]


class JobRunner:
    """Runs ``job.compute`` on a worker thread; the main thread calls :meth:`poll` until it returns True.

    After completion exactly one of ``result`` (what ``finish`` returned), ``error`` (the exception) or
    ``cancelled`` is set.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        self.cancel_token = CancelToken()
        self.fraction = 0.0
        self.message = "waiting"
        self.result: Any = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.done = False
        self._computed: Any = None
        self._compute_error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name=f"SegToolkit: {job.title}", daemon=True)

    def start(self) -> JobRunner:
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the computation to stop at its next progress check."""
        self.cancel_token.cancel()

    def poll(self) -> bool:
        """Main thread: True when the job is over (finished, failed or cancelled); runs ``finish`` once."""
        if self.done:
            return True
        if self._thread.is_alive() or not self._thread.ident:
            return False
        self.done = True
        if isinstance(self._compute_error, CancelledError) or (self._compute_error is None
                                                               and self.cancel_token.cancelled):
            self.cancelled = True
            self.message = "cancelled"
            return True
        if self._compute_error is not None:
            self.error = self._compute_error
            self.message = f"failed: {self._compute_error}"
            return True
        try:
            self.result = self.job.finish(self._computed)
            self.fraction, self.message = 1.0, "done"
        except Exception as error:  # reported to the user by the caller, like a compute error
            self.error = error
            self.message = f"failed: {error}"
        return True

    def wait(self, poll_seconds: float = 0.05, timeout: float | None = None) -> JobRunner:
        """Block (polling) until the job is over: for scripts and tests, never in the GUI."""
        start = time.monotonic()
        while not self.poll():
            if timeout is not None and time.monotonic() - start > timeout:
                self.cancel()
            time.sleep(poll_seconds)
        return self

    def _progress(self, fraction: float, message: str) -> None:
        with self._lock:
            self.fraction, self.message = float(fraction), message
        self.cancel_token.raise_if_cancelled()

    def _work(self) -> None:
        try:
            self._computed = self.job.compute(self._progress, self.cancel_token)
        except BaseException as error:  # handed to the main thread in poll()
            self._compute_error = error


def run_job(job: Job, progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> Any:
    """Run a job synchronously on the calling thread (Python console, batch scripts)."""
    token = cancel or CancelToken()
    return job.finish(job.compute(progress or (lambda fraction, message: None), token))
