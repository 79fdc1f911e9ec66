"""Progress display for long work: rich bars when enabled; log lines (logger ``sparsenas``) when
the bar is off or stdout is not a terminal (nohup, CI), one per finished trial."""
from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Progress:
    """Two bars: trials done of the budget, and the running trial's training progress."""

    def __init__(self, total: int, *, enabled: bool = True, console: Console | None = None,
                 label: str = "search", objectives: tuple[str, ...] | None = None) -> None:
        self.enabled = enabled
        self._objectives = objectives
        self._log_trials = not enabled or not sys.stdout.isatty()
        self._started = time.perf_counter()
        self._bar: RichProgress | None = None
        self._total, self._label, self._console = total, label, console
        self._best: float | None = None

    @classmethod
    def disabled(cls) -> "Progress":
        return cls(0, enabled=False)

    def __enter__(self) -> "Progress":
        if self.enabled:
            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(),
                                     console=self._console or Console(stderr=True), transient=False)
            self._bar.start()
            self._trials = self._bar.add_task(self._label, total=self._total)
            self._current = self._bar.add_task("  trial", total=100, visible=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def advance_to(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(self._trials, completed=done)

    def trial_started(self, number: int, what: str) -> None:
        self._started = time.perf_counter()
        if self._log_trials:
            from .log import logger

            logger.debug(f"trial {number} started: {what}")
        if self._bar is not None:
            self._bar.update(self._current, description=f"  trial {number} ({what})", completed=0, visible=True)

    def trial_progress(self, fraction: float) -> None:
        if self._bar is not None:
            self._bar.update(self._current, completed=int(100 * fraction))

    def trial_finished(self, trial: Any, counts: bool = True) -> None:
        """Log ``trial``; advance the bar when it ``counts`` towards the target (a trial stopped by a
        full-fidelity pruner does not)."""
        if self._log_trials:
            from .log import logger, trial_line

            took = None if trial.duration is not None else time.perf_counter() - self._started
            logger.info(trial_line(trial, self._objectives, took))
        if self._bar is None:
            return
        if trial.values:
            self._best = max(self._best or 0.0, trial.values[0])
        best = f" best acc {self._best:.3f}" if self._best is not None else ""
        self._bar.update(self._trials, advance=int(counts), description=f"{self._label}{best}")
        self._bar.update(self._current, visible=False)

    def log(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.print(message)
        else:
            from .log import logger

            logger.info(message)
