"""K local worker processes on one study (``nas search --workers K``).

The study's storage is what coordinates them, as it does workers on many machines: each worker runs
the same search and the trial target is the study's total (tracking.Tracker.surplus), so K workers
end with the same number of trials as one. This module only starts them, shows one progress bar by
polling the study, and reports a worker that failed.

Workers are fresh interpreters (``python -m sparsenas.workers_main CONFIG``), not multiprocessing
children: those re-import the caller's main module, which re-runs a script or notebook cell that
calls ``sparsenas.search(workers=K)`` without an ``if __name__ == "__main__"`` guard.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    procs = [subprocess.Popen([sys.executable, "-m", "sparsenas.workers_main",
                               json.dumps(asdict(replace(config, workers=1, worker=i, threads=threads)))],
                              env=env, stdout=subprocess.DEVNULL)
             for i in range(k)]
    try:
        with Progress(config.trials, enabled=progress, label=f"{label} ({k} workers)") as bar:
            while any(p.poll() is None for p in procs):
                bar.advance_to(min(config.trials, tracker.counts()[0]))
                time.sleep(poll)
            bar.advance_to(min(config.trials, tracker.counts()[0]))
    except BaseException:  # Ctrl-C or an error here: stop the workers, their RUNNING trials become FAIL
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait(timeout=30)
        raise
    bad = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    if bad:
        raise SparseNASError(f"{len(bad)} of {k} workers failed ({', '.join(f'worker {i} exit code {c}' for i, c in bad)}; "
                             "their error is printed above); the trials finished are saved in the study, re-run the "
                             "same command to resume")
