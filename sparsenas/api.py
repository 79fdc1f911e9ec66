"""The Python API: what the CLI calls, and what users call from notebooks."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import optuna

from . import distributed
from .errors import SparseNASError
from .runtimes import DEFAULT_RUNTIME
from .tracking import DEFAULT_STORAGE, MULTI, OBJECTIVE_NAMES, SINGLE, checkpoint_dir_for, mask_url


DEFAULT_EPOCHS = 6
# what a resumed study must keep (tracking.Tracker._check_settings); trials, timeout, workers, threads,
# device and progress may change between runs
RESUME_CHECKED = ("strategy", "epochs", "time_budget", "lr", "batch_size", "seed", "limit", "options")


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
    checkpoint_dir: str | None = None   # supernet checkpoints (<dir>/<study>/); default <db stem>-checkpoints/
    study: str | None = None            # None: derived from space, dataset and strategy
    seed: int = 0
    device: str = "cpu"
    objective: str = "multi"            # "multi": (accuracy, latency); "accuracy": accuracy alone
    objectives: str | None = None       # "accuracy,latency,size" (any subset, accuracy first); overrides objective
    runtime: str = DEFAULT_RUNTIME      # inference runtime whose latency (and weight bytes) the search judges
    max_latency_ms: float | None = None
    latency: str = "auto"               # "table" (hardware profile), "measured", or "auto": table where the profile covers the space
    hw: str | None = None               # hardware profile file for the table latency evaluator
    hw_anchor: bool = True              # scale table predictions by this machine's speed now (hwprofiles/anchor.py)
    timeout: float | None = None        # seconds for this run of the search
    threads: int = 1                    # torch threads while searching (see search())
    limit: int | None = None            # cap on training samples (quick runs, tests)
    workers: int = 1                    # local processes on the study (sparsenas/workers.py); threads are split between them
    resume_anyway: bool = False         # join an existing study even if its budget, seed or strategy differ
    worker: int = 0                     # index of this process among the workers (set by the worker runner)
    options: dict[str, Any] = field(default_factory=dict)  # strategy flags: target_sparsity, search_epochs, ...

    def study_name(self, dataset: str) -> str:
        size = f"{self.input_size}" if self.input_size else ""
        suffix = "" if self.objective == "multi" else "-acc"
        return self.study or f"{self.space}-{dataset}{size}-{self.strategy}{suffix}"


def objectives_of(config: SearchConfig) -> tuple[str, ...]:
    """The study's objectives (EvalResult fields) from ``objectives`` or the older ``objective``."""
    if config.objectives is None:
        return MULTI if config.objective == "multi" else SINGLE
    names = [n.strip() for n in config.objectives.split(",") if n.strip()]
    bad = [n for n in names if n not in OBJECTIVE_NAMES]
    if bad or not names or names[0] != "accuracy" or len(set(names)) != len(names):
        raise SparseNASError(f"--objectives {config.objectives!r} is not a list of distinct objectives starting with "
                             f"accuracy; allowed: {', '.join(OBJECTIVE_NAMES)} (e.g. accuracy,latency,size)")
    return tuple(OBJECTIVE_NAMES[n] for n in names)


def _check(config: SearchConfig) -> None:
    if config.objective not in ("multi", "accuracy"):
        raise SparseNASError(f"unknown objective '{config.objective}'; allowed: multi, accuracy")
    objectives_of(config)
    if config.max_latency_ms is not None and config.objective != "accuracy":
        raise SparseNASError("--max-latency-ms applies to the single-objective form; add --objective accuracy "
                             "(the multi-objective search already trades latency against accuracy)")
    for name in ("trials", "epochs", "batch_size", "threads", "workers"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise SparseNASError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    if not 0 <= config.seed < 2 ** 32:
        raise SparseNASError(f"--seed must be between 0 and 2**32 - 1 (numpy's seed range), got {config.seed}")
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

    table = LatencyTable.load(config.hw, config.runtime)  # a bad --hw file is an error, not a silent fallback
    cal = table.data["calibrations"].get(calibration_key(space, task.input_shape))
    return "table" if cal is not None and cal.get("num_classes") == task.num_classes else "measured"


def search(config: SearchConfig | None = None, *, progress: bool = True, **overrides: Any) -> optuna.Study:
    """Run (or resume) a search and return its Optuna study.

    ``sparsenas.search(space="sparse_mbv2", strategy="random", trials=10)``; any field of
    :class:`SearchConfig` may be passed as a keyword.
    """
    from .data import load_dataset
    from .evaluators import LATENCY, Evaluator, TrainBudget
    from .progress import Progress
    from .search_spaces import get_space
    from .strategies import STRATEGIES
    from .strategies.base import SearchContext
    from .strategies.samplers import SamplerStrategy
    from .timing import num_threads
    from .tracking import StudySpec, Tracker

    config = SearchConfig(**{**(asdict(config) if config else {}), **overrides})
    _check(config)
    space = get_space(config.space)
    strategy = STRATEGIES.get(config.strategy)()
    device = _device(config.device)
    if distributed.env_world_size() > 1:  # under torchrun: only rank 0 opens the study (below)
        if not strategy.runs_distributed:
            raise SparseNASError(f"strategy '{config.strategy}' does not run under torchrun; the supernet strategies "
                                 "do (dass, entangled, balanced). Spread other searches with one `nas search` per "
                                 "worker on a shared --storage")
        distributed.init_from_env(device)
        progress = progress and distributed.is_main()
    data = load_dataset(config.dataset or space.default_dataset, data_dir=config.data_dir,
                        input_size=config.input_size, seed=config.seed, limit=config.limit)
    space.check_task(data.task)
    from .runtimes import get_runtime

    get_runtime(config.runtime)  # not installed: a clear error naming the extra, before any work
    latency = LATENCY.get(_latency_kind(config, space.name, data.task))(hw=config.hw, anchor=config.hw_anchor,
                                                                         runtime=config.runtime)
    strategy.check(space, data.task, config.options)
    objectives = objectives_of(config)
    spec = StudySpec(space.name, space.version, data.task.dataset, data.task.to_dict(), objectives, config.runtime)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2) if len(objectives) == 1 else None
    if config.workers > 1 and not isinstance(strategy, SamplerStrategy):
        raise SparseNASError(f"--workers applies to the sampler strategies (random, tpe, nsga2); '{config.strategy}' "
                             "trains one supernet: run it with torchrun to use several processes")
    recorded = {**asdict(config), "storage": mask_url(config.storage)}
    storage: Any = config.storage if distributed.is_main() else optuna.storages.InMemoryStorage()
    tracker = Tracker(storage, config.study_name(data.task.dataset), spec, pruner=pruner,
                      extra_attrs={"strategy": config.strategy, "config": recorded},
                      artifact_dir=config.artifact_dir, resume_anyway=config.resume_anyway,
                      settings={k: recorded[k] for k in RESUME_CHECKED})
    if config.workers > 1:
        from .workers import run_workers

        run_workers(config, tracker, progress=progress, label=f"{config.strategy} on {space.name}")
        return tracker.study
    epochs = config.epochs or (10_000 if config.time_budget else DEFAULT_EPOCHS)
    budget = TrainBudget(epochs=epochs, seconds=config.time_budget, batch_size=config.batch_size, lr=config.lr)
    evaluator = Evaluator(space, data, budget, latency, seed=config.seed, device=device)
    with Progress(config.trials, enabled=progress, label=f"{config.strategy} on {space.name}") as bar:
        bar.advance_to(len(tracker.finished()))
        ctx = SearchContext(space=space, task=data.task, data=data, evaluator=evaluator, tracker=tracker,
                            trials=config.trials, seed=config.seed, device=device, timeout=config.timeout,
                            max_latency_ms=config.max_latency_ms, progress=bar, options=config.options,
                            checkpoint_dir=checkpoint_dir_for(config.storage, tracker.study.study_name,
                                                              config.checkpoint_dir),
                            worker=config.worker)
        # 1 thread by default: on a 2-core machine with anything else running, a training step took
        # 20-30x longer with 2 threads than with 1 (OpenMP threads spin waiting for a core).
        with num_threads(config.threads):
            strategy.run(ctx)
    return tracker.study
