"""Logging: everything sparsenas says goes through the ``sparsenas`` logger.

As a library it adds no handler of its own (Python's convention: the application decides); the
``nas`` command line calls :func:`setup` (``-v``/``-q``). Optuna's log level is changed only while
a search runs (:func:`optuna_verbosity`) and restored after, so importing sparsenas leaves the
process's Optuna logging as it was.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, Iterator

logger = logging.getLogger("sparsenas")
logger.addHandler(logging.NullHandler())

# Optuna's level during a search; Optuna's own INFO line per trial repeats ours, so WARNING unless -vv
_optuna_level = logging.WARNING


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (tests and notebooks swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        """Ignored: ``StreamHandler.__init__`` sets a stream, but this handler always follows ``sys.stderr``."""


def setup(verbosity: int = 0) -> None:
    """The command line's logging: INFO (one line per finished trial, phases), DEBUG with ``-v``,
    warnings only with ``-q``; ``-vv`` lets Optuna's own INFO lines through too."""
    global _optuna_level
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    for h in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # the CLI's handler is the one; no duplicates through the root logger
    _optuna_level = logging.INFO if verbosity > 1 else logging.WARNING


class _NoTraceback(logging.Filter):
    """Optuna logs a failed trial with the traceback of its error. The search logs its own line with
    the reason, and an error that stops the search is raised (and shown) anyway; a full disk, say,
    is then one paragraph instead of a traceback first."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True


@contextlib.contextmanager
def optuna_verbosity(level: int | None = None) -> Iterator[None]:
    """Optuna's verbosity at ``level`` (default: WARNING, INFO after ``-vv``) inside, restored after."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(_optuna_level if level is None else level)
    trial_loop = logging.getLogger("optuna.study._optimize")
    quiet = _NoTraceback()
    if _optuna_level > logging.INFO:  # -vv keeps Optuna's tracebacks
        trial_loop.addFilter(quiet)
    try:
        yield
    finally:
        trial_loop.removeFilter(quiet)
        optuna.logging.set_verbosity(before)


def trial_line(trial: Any, objectives: tuple[str, ...] | None = None, seconds: float | None = None) -> str:
    """``trial 3 COMPLETE accuracy=0.9123 latency_ms=0.412 in 12.3s`` for a FrozenTrial."""
    state = getattr(trial.state, "name", str(trial.state))
    values = ""
    if trial.values:
        names = list(objectives or ()) + [f"value{i}" for i in range(len(objectives or ()), len(trial.values))]
        values = " " + " ".join(f"{n}={v:.4g}" for n, v in zip(names, trial.values))
    if seconds is None and trial.duration is not None:
        seconds = trial.duration.total_seconds()
    took = f" in {seconds:.1f}s" if seconds is not None else ""
    from .tracking import trial_record

    reason = trial_record(trial).reason
    return f"trial {trial.number} {state}{values}{took}" + (f" ({reason})" if reason else "")
