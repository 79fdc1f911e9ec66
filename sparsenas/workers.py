"""K local worker processes on one study (``nas search --workers K``).

The study's storage is what coordinates them, as it does workers on many machines: each worker runs
the same search and the trial target is the study's total (tracking.Tracker.surplus), so K workers
end with the same number of trials as one. This module only starts them, shows one progress bar by
polling the study, and reports a worker that failed.
"""
from __future__ import annotations

import multiprocessing
import sys
import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

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
    spawn = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools and locks
    procs = [spawn.Process(target=_worker_main, name=f"nas-worker-{i}",
                           args=(asdict(replace(config, workers=1, worker=i, threads=threads)),))
             for i in range(k)]
    for p in procs:
        p.start()
    try:
        with Progress(config.trials, enabled=progress, label=f"{label} ({k} workers)") as bar:
            while any(p.is_alive() for p in procs):
                bar.advance_to(min(config.trials, tracker.counts()[0]))
                time.sleep(poll)
            bar.advance_to(min(config.trials, tracker.counts()[0]))
    except BaseException:  # Ctrl-C or an error here: stop the workers, their RUNNING trials become FAIL
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=30)
        raise
    for p in procs:
        p.join()
    bad = [(p.name, p.exitcode) for p in procs if p.exitcode != 0]
    if bad:
        raise SparseNASError(f"{len(bad)} of {k} workers failed ({', '.join(f'{n} exit code {c}' for n, c in bad)}; "
                             "their error is printed above); the trials finished are saved in the study, re-run the "
                             "same command to resume")


def _worker_main(config: dict[str, Any]) -> None:
    from .api import SearchConfig, search

    try:
        search(SearchConfig(**config), progress=False)
    except SparseNASError as e:
        print(f"nas search worker {config['worker']}: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
