"""The Python API: what the CLI calls, and what users call from notebooks."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import optuna

from .errors import SparseNASError
from .tracking import DEFAULT_STORAGE, MULTI, SINGLE


DEFAULT_EPOCHS = 6


@dataclass
class SearchConfig:
    space: str = "sparse_mbv2"
    strategy: str = "tpe"
    dataset: str | None = None          # None: the space's default dataset
    data_dir: str | None = None
    input_size: int | None = None
    trials: int = 10
    epochs: int | None = None           # None: 6, or no cap when time_budget is given
    time_budget: float | None = None    # seconds of training per architecture
    batch_size: int = 32
    lr: float = 0.05
    storage: str = DEFAULT_STORAGE
    artifact_dir: str | None = None     # trained weights; default <db stem>-artifacts/ beside file storages
    study: str | None = None            # None: derived from space, dataset and strategy
    seed: int = 0
    device: str = "cpu"
    objective: str = "multi"            # "multi": (accuracy, latency); "accuracy": accuracy alone
    max_latency_ms: float | None = None
    latency: str = "auto"               # "table" (hardware profile), "measured", or "auto": table where the profile covers the space
    hw: str | None = None               # hardware profile file for the table latency evaluator
    hw_anchor: bool = True              # scale table predictions by this machine's speed now (hwprofiles/anchor.py)
    timeout: float | None = None        # seconds for this run of the search
    threads: int = 1                    # torch threads while searching (see search())
    limit: int | None = None            # cap on training samples (quick runs, tests)
    options: dict[str, Any] = field(default_factory=dict)  # strategy flags: target_sparsity, search_epochs, ...
    sampler: str | None = None          # random/tpe/nsga2 loop: another Optuna sampler (strategies/samplers.py SAMPLERS)
    sampler_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the sampler
    pruner: str | None = None           # single-objective studies: median (default), hyperband, ... (PRUNERS)
    pruner_args: dict[str, Any] = field(default_factory=dict)

    def study_name(self, dataset: str, space: str | None = None) -> str:
        """``space``: the space's own name (a plug-in named ``module:Class`` calls itself something shorter)."""
        size = f"{self.input_size}" if self.input_size else ""
        suffix = "" if self.objective == "multi" else "-acc"
        how = self.sampler.rsplit(":", 1)[-1] if self.sampler else self.strategy
        return self.study or f"{space or self.space}-{dataset}{size}-{how}{suffix}"


def _check(config: SearchConfig) -> None:
    if config.objective not in ("multi", "accuracy"):
        raise SparseNASError(f"unknown objective '{config.objective}'; allowed: multi, accuracy")
    if config.max_latency_ms is not None and config.objective != "accuracy":
        raise SparseNASError("--max-latency-ms applies to the single-objective form; add --objective accuracy "
                             "(the multi-objective search already trades latency against accuracy)")
    for name in ("trials", "epochs", "batch_size", "threads"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise SparseNASError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    if config.device not in ("cpu", "cuda", "auto") and not config.device.startswith("cuda:"):
        raise SparseNASError(f"unknown device '{config.device}'; allowed: cpu, cuda, cuda:N, auto")


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SparseNASError(f"--device {name} was asked for, but this machine has no CUDA device; use --device cpu")
    return name


def _latency_kind(config: SearchConfig, space: str, task: Any) -> str:
    """``auto``: the profile's table when it is calibrated for this space, input shape and class count
    (the shipped profile covers sparse_mbv2 on digits at 8x8, 16x16 and 32x32), else measuring each network."""
    if config.latency != "auto":
        return config.latency
    from .hwprofiles import LatencyTable, calibration_key

    table = LatencyTable.load(config.hw)  # a bad --hw file is an error, not a silent fallback
    cal = table.data["calibrations"].get(calibration_key(space, task.input_shape))
    return "table" if cal is not None and cal.get("num_classes") == task.num_classes else "measured"


def search(config: SearchConfig | None = None, *, progress: bool = True, **overrides: Any) -> optuna.Study:
    """Run (or resume) a search and return its Optuna study.

    ``sparsenas.search(space="sparse_mbv2", strategy="random", trials=10)``; any field of
    :class:`SearchConfig` may be passed as a keyword. Optuna's log level is lowered while it runs
    (its per-trial lines repeat ours, logger ``sparsenas``) and restored after.
    """
    from .log import optuna_verbosity

    with optuna_verbosity():
        return _search(config, progress=progress, **overrides)


def _search(config: SearchConfig | None = None, *, progress: bool = True, **overrides: Any) -> optuna.Study:
    from .data import load_dataset
    from .evaluators import LATENCY, Evaluator, TrainBudget
    from .progress import Progress
    from .search_spaces import get_space
    from .strategies import STRATEGIES
    from .strategies.base import SearchContext
    from .strategies.samplers import make_pruner, sampler_check
    from .timing import num_threads
    from .tracking import StudySpec, Tracker

    config = SearchConfig(**{**(asdict(config) if config else {}), **overrides})
    _check(config)
    space = get_space(config.space)
    strategy = STRATEGIES.get(config.strategy)()
    options = strategy.resolve_options(config.options)  # unknown or mistyped options: exit 2, nothing written
    objectives = MULTI if config.objective == "multi" else SINGLE
    sampler_check(strategy, config.sampler, config.sampler_args, objectives, config.seed, config.trials)
    pruner = make_pruner(config.pruner, config.pruner_args, objectives, epochs=config.epochs or DEFAULT_EPOCHS)
    device = _device(config.device)
    data = load_dataset(config.dataset or space.default_dataset, data_dir=config.data_dir,
                        input_size=config.input_size, seed=config.seed, limit=config.limit)
    space.check_task(data.task)
    latency = LATENCY.get(_latency_kind(config, space.name, data.task))(hw=config.hw, anchor=config.hw_anchor)
    strategy.check(space, data.task, options)
    spec = StudySpec(space.name, space.version, data.task.dataset, data.task.to_dict(), objectives)
    tracker = Tracker(config.storage, config.study_name(data.task.dataset, space.name), spec, pruner=pruner,
                      extra_attrs={"strategy": config.strategy, "config": asdict(config)},
                      artifact_dir=config.artifact_dir)
    epochs = config.epochs or (10_000 if config.time_budget else DEFAULT_EPOCHS)
    budget = TrainBudget(epochs=epochs, seconds=config.time_budget, batch_size=config.batch_size, lr=config.lr)
    evaluator = Evaluator(space, data, budget, latency, seed=config.seed, device=device)
    with Progress(config.trials, enabled=progress, label=f"{config.strategy} on {space.name}",
                  objectives=objectives) as bar:
        bar.advance_to(len(tracker.finished()))
        ctx = SearchContext(space=space, task=data.task, data=data, evaluator=evaluator, tracker=tracker,
                            trials=config.trials, seed=config.seed, device=device, timeout=config.timeout,
                            max_latency_ms=config.max_latency_ms, progress=bar, options=options,
                            sampler=config.sampler, sampler_args=dict(config.sampler_args))
        # 1 thread by default: on a 2-core machine with anything else running, a training step took
        # 20-30x longer with 2 threads than with 1 (OpenMP threads spin waiting for a core).
        with num_threads(config.threads):
            strategy.run(ctx)
    return tracker.study


def studies(storage: str = DEFAULT_STORAGE) -> list[dict[str, Any]]:
    """The studies in ``storage``, each with its space, dataset, strategy, runtime (when recorded),
    trials by state and best value per objective; a missing sqlite/journal file is an error."""
    from .tracking import study_overview

    return study_overview(storage)
