"""How a one-shot strategy fits a wall-clock budget (``--timeout``).

A supernet's schedule (the cosine learning rate, DASS' warm-up / prune / fine-tune phases) is fixed
by its epoch count before the first step, so a budget cannot simply stop the training early: the
count has to be chosen up front. :func:`probe_epochs` times a few real steps of a throwaway copy of
the trainer (its own epochs, cut short by :func:`~sparsenas.supernets.base.step_limit`), and the
strategy sizes its epochs to its share of the budget. The plan is stored on the study
(:func:`stored_plan`): a resumed search keeps the epochs it was sized to, where a new probe would
differ by timing noise and the checkpoint would refuse the run.

After the supernet, :class:`Deadline` lets a strategy start another standalone retraining only when
the last one's duration still fits, so a search ends near its budget instead of one retraining after.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from .. import distributed
from ..errors import SparseNASError
from ..supernets.base import SupernetTrainer, seed_everything, step_limit
from .base import SearchContext

PROBE_STEPS = (1, 3)  # the difference of the two runs is the step time; the rest is per-epoch cost


@dataclass(frozen=True)
class EpochCost:
    """Estimated seconds of one full epoch of a trainer: ``fixed_s + steps * step_s``."""

    step_s: float
    fixed_s: float      # per epoch beyond its steps: end-of-epoch evaluation, set-up
    steps: int

    @property
    def epoch_s(self) -> float:
        return self.fixed_s + self.steps * self.step_s


def probe_epochs(make_trainer: Callable[[], SupernetTrainer], epochs: Sequence[int], seed: int = 0) -> list[EpochCost]:
    """The cost of each epoch index in ``epochs`` of a fresh trainer from ``make_trainer()`` (built
    here and thrown away), each timed at 1 and at 3 steps after a 1-step warm-up. The trainer needs ``steps_per_epoch``."""
    seed_everything(seed)
    trainer = make_trainer()
    trainer.build()
    costs = []
    for epoch in epochs:
        with step_limit(1):  # warm-up: the first call of a phase pays for lazy initialisation
            trainer.train_epoch(epoch)
        seconds = []
        for steps in PROBE_STEPS:
            t0 = time.perf_counter()
            with step_limit(steps):
                trainer.train_epoch(epoch)
            seconds.append(time.perf_counter() - t0)
        step_s = max(0.0, (seconds[1] - seconds[0]) / (PROBE_STEPS[1] - PROBE_STEPS[0]))
        costs.append(EpochCost(step_s=step_s, fixed_s=max(0.0, seconds[0] - PROBE_STEPS[0] * step_s),
                               steps=int(trainer.steps_per_epoch)))
    return costs


def epochs_within(seconds: float, cost: EpochCost, least: int = 1) -> int:
    """Whole epochs of ``cost`` that fit in ``seconds`` (at least ``least``)."""
    return max(least, int(seconds // max(cost.epoch_s, 1e-6)))


def stored_plan(ctx: SearchContext, key: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The plan stored on the study under ``key`` or, on a first run, ``make()`` (rank 0's, on every
    rank under torchrun) stored there."""
    plan = getattr(ctx.tracker.read_study(), key) if distributed.is_main() else None
    if plan is None:
        plan = make()  # every rank probes (the collectives of a DDP step need all of them) ...
        plan = distributed.broadcast(plan if distributed.is_main() else None)  # ... and follows rank 0
        if distributed.is_main():
            ctx.tracker.set_study_attr(key, plan)
        return plan
    return distributed.broadcast(plan)


class Deadline:
    """The end of a search's budget, started at ``start`` (``time.perf_counter()``); no budget when
    ``timeout`` is None."""

    def __init__(self, start: float, timeout: float | None) -> None:
        self.start, self.timeout = start, timeout
        self.last: float | None = None  # seconds the last timed piece of work took

    def share(self, fraction: float) -> float | None:
        """The moment ``fraction`` of the budget has passed (None without a budget)."""
        return None if self.timeout is None else self.start + fraction * self.timeout

    def fits(self) -> bool:
        """Whether another piece of work as long as the last one ends within the budget (the first
        always starts: a search that logs nothing is worse than one that ends a little late)."""
        if self.timeout is None or self.last is None:
            return True
        return time.perf_counter() + self.last <= self.start + self.timeout

    def spent(self) -> float:
        """The share of the budget spent so far, at most 1 (0 without a budget)."""
        return min(1.0, (time.perf_counter() - self.start) / self.timeout) if self.timeout else 0.0

    def passed(self) -> bool:
        """Whether the budget is spent."""
        return self.timeout is not None and time.perf_counter() > self.start + self.timeout

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """``with deadline.timed(): ...`` records how long the block took as :attr:`last`."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.last = time.perf_counter() - t0


def budget_seconds(ctx: SearchContext, share: float) -> float | None:
    """``share`` of the search's ``--timeout`` in seconds, or None without one."""
    return None if ctx.timeout is None else float(share) * float(ctx.timeout)


def check_share(strategy: str, share: Any) -> float:
    """``share`` as a float when it is a fraction of the budget in (0, 1); otherwise one clear error."""
    if not 0.0 < float(share) < 1.0:
        raise SparseNASError(f"strategy '{strategy}': budget-share must be a fraction of --timeout in (0, 1), "
                             f"got {float(share):g}")
    return float(share)


def is_set(ctx: SearchContext, *names: str) -> bool:
    """Whether the user gave any of these options (a budget sizes only what the user left open)."""
    return any(ctx.options.get(n) is not None for n in names)

