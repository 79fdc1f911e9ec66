"""K local worker processes on one study (``nas search --workers K``).

The study's storage is what coordinates them, as it does workers on many machines: each worker runs
the same search and the trial target is the study's total (tracking.Tracker.surplus), so K workers
end with the same number of trials as one. This module only starts them, shows one progress bar by
polling the study, and reports a worker that failed.

Workers are fresh interpreters (``python -m sparsenas.workers_main``, settings in the environment), not
multiprocessing children: those re-import the caller's main module, which re-runs a script or
notebook cell that calls ``sparsenas.search(workers=K)`` without an ``if __name__ == "__main__"``
guard.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .errors import SparseNASError

if TYPE_CHECKING:
    from .api import SearchConfig
    from .tracking import Tracker


def run_workers(config: "SearchConfig", tracker: "Tracker", *, progress: bool = True, label: str = "search",
                poll: float = 0.5) -> None:
    """Run ``config.workers`` processes of the search on ``tracker``'s study until they end; raises
    SparseNASError when one exits with an error (the trials finished by the others are kept)."""
    from .progress import Progress

    k = config.workers
    # torch threads are split between the workers: on a machine with C cores, K workers of C/K threads
    threads = max(1, config.threads // k)
    root = str(Path(__file__).resolve().parents[1])  # the workers import this very sparsenas
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
           PARENT_ENV: str(os.getpid())}
    procs: list[subprocess.Popen] = []
    try:
        with _sigterm_as_interrupt():
            # the settings travel in the environment, not the command line: `ps` shows every user the command
            # line, and the storage URL may hold a password
            procs += [subprocess.Popen([sys.executable, "-m", "sparsenas.workers_main", f"worker-{i}"],
                                       env={**env, CONFIG_ENV: json.dumps(asdict(replace(
                                           config, workers=1, worker=i, threads=threads)))},
                                       stdout=subprocess.DEVNULL)
                      for i in range(k)]
            with Progress(config.trials, enabled=progress, label=f"{label} ({k} workers)") as bar:
                while any(p.poll() is None for p in procs):
                    bar.advance_to(min(config.trials, tracker.counts()[0]))
                    time.sleep(poll)
                bar.advance_to(min(config.trials, tracker.counts()[0]))
    except BaseException:  # Ctrl-C, SIGTERM or an error here: stop the workers, their RUNNING trials become FAIL
        _stop(procs)
        raise
    bad = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    if bad:
        raise SparseNASError(f"{len(bad)} of {k} workers failed ({', '.join(f'worker {i} exit code {c}' for i, c in bad)}; "
                             "their error is printed above); the trials finished are saved in the study, re-run the "
                             "same command to resume")


CONFIG_ENV = "SPARSENAS_WORKER_CONFIG"  # a worker's SearchConfig as JSON
PARENT_ENV = "SPARSENAS_WORKERS_PARENT"  # the pid of the `nas search --workers K` a worker belongs to
STOP_GRACE = 20.0  # seconds a worker has to fail its trial after SIGTERM before it is killed


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside (as Ctrl-C does), so ``kill`` runs the clean-up paths: a
    worker fails its RUNNING trial, the parent stops its workers. Python's default for SIGTERM is to
    die at once, leaving the workers running."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every running worker, wait for them to fail their trials, kill what is left."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when its parent dies, even by SIGKILL (no clean-up runs there)."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        raise KeyboardInterrupt
