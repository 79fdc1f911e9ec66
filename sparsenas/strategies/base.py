"""The Strategy interface and what every strategy is handed."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..data import DataSplits
from ..evaluators import Evaluator
from ..progress import Progress
from ..search_spaces.base import SearchSpace
from ..task import Task
from ..tracking import Tracker
from .options import Option, resolve_options


@dataclass
class SearchContext:
    space: SearchSpace
    task: Task
    data: DataSplits
    evaluator: Evaluator
    tracker: Tracker
    trials: int                      # architectures to evaluate in total (a resumed study counts its own)
    seed: int = 0
    device: str = "cpu"
    timeout: float | None = None     # seconds for this run; no new trial starts after it
    max_latency_ms: float | None = None
    progress: Progress = field(default_factory=Progress.disabled)
    options: dict[str, Any] = field(default_factory=dict)  # the strategy's options, resolved (see Strategy.options)
    sampler: str | None = None       # sampler strategies: an Optuna sampler by name (strategies/samplers.py)
    sampler_args: dict[str, Any] = field(default_factory=dict)
    checkpoint_dir: str | None = None  # supernet strategies checkpoint every epoch here (None: not at all)
    worker: int = 0                  # index of this process among the workers on the study


class Strategy(ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    runs_distributed: ClassVar[bool] = False  # runs under torchrun (the supernet strategies)

    # Every option this strategy reads from ctx.options, declared once: the CLI flags, the config
    # file's [options] table and the errors for unknown or mistyped options all come from here.
    options: ClassVar[tuple[Option, ...]] = ()

    @classmethod
    def resolve_options(cls, given: dict[str, Any]) -> dict[str, Any]:
        """``given`` checked against :attr:`options`, with the declared defaults filled in."""
        return resolve_options(cls.name, cls.options, given)

    def check(self, space: SearchSpace, task: Task, options: dict[str, Any]) -> None:
        """Raise SparseNASError for options or a space this strategy cannot use; called before the study
        is created, so a bad flag leaves nothing half-written."""

    @abstractmethod
    def run(self, ctx: SearchContext) -> None:
        """Evaluate architectures and record each one as a trial of ``ctx.tracker.study``."""
