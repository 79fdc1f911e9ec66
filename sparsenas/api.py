"""The Python API: what the CLI calls, and what users call from notebooks."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna

from . import distributed
from .errors import SparseNASError
from .runtimes import DEFAULT_RUNTIME
from .tracking import DEFAULT_STORAGE, MULTI, OBJECTIVE_NAMES, SINGLE, checkpoint_dir_for, mask_url


from .config import DEFAULT_EPOCHS  # noqa: E402  (defined once)
# what a resumed study must keep (tracking.Tracker._check_settings); trials, timeout, workers, threads,
# device and progress may change between runs
RESUME_CHECKED = ("strategy", "epochs", "time_budget", "lr", "batch_size", "seed", "limit", "options")


@dataclass
class SearchConfig:
    """Everything a search runs with: one field per config-file key and `nas search` flag (every key,
    its default and its help: docs/reference.md, "Search config keys")."""

    space: str | Any = "sparse_mbv2"   # a name, module:Class, or (Python) a SearchSpace subclass or instance
    strategy: str | Any = "tpe"        # a name, module:Class, or (Python) a Strategy subclass
    dataset: str | Any | None = None   # a name, module:loader, or (Python) a loader or DatasetSpec; None: the space's default
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
    latency: str = "auto"               # "table" (hardware profile + cache), "measured", or "auto": table where there is a profile
    hw: str | None = None               # hardware profile file for the table latency evaluator
    hw_anchor: bool = True              # scale table predictions by this machine's speed now (hwprofiles/anchor.py)
    timeout: float | None = None        # seconds for this run of the search
    threads: int = 1                    # torch threads while searching (see search())
    limit: int | None = None            # cap on training samples (quick runs, tests)
    workers: int = 1                    # local processes on the study (sparsenas/workers.py); threads are split between them
    resume_anyway: bool = False         # join an existing study even if its budget, seed or strategy differ
    worker: int = 0                     # index of this process among the workers (set by the worker runner)
    options: dict[str, Any] = field(default_factory=dict)  # strategy flags: target_sparsity, search_epochs, ...
    sampler: str | None = None          # random/tpe/nsga2 loop: another Optuna sampler (strategies/samplers.py SAMPLERS)
    sampler_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the sampler
    pruner: str | None = None           # median (single-objective default), hyperband, ..., mo-asha (any study)
    pruner_args: dict[str, Any] = field(default_factory=dict)

    def study_name(self, dataset: str, space: str | None = None) -> str:
        """``space``: the space's own name (a plug-in named ``module:Class`` calls itself something shorter)."""
        size = f"{self.input_size}" if self.input_size else ""
        suffix = "" if self.objective == "multi" else "-acc"
        return self.study or f"{space or self.space}-{dataset}{size}-{_ran(self)}{suffix}"


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


def _fields(config: SearchConfig) -> dict[str, Any]:
    """The fields as they are (``asdict`` would deep-copy a space instance)."""
    return {f: getattr(config, f) for f in config.__dataclass_fields__}


def _named(config: SearchConfig, space: Any) -> SearchConfig:
    """``config`` with components given as objects replaced by the names they are registered under
    (their ``module:Qualname`` when they come from outside sparsenas): what the study records."""
    from .data import DATASETS
    from .search_spaces import SPACES
    from .strategies import STRATEGIES

    def name(registry: Any, item: Any) -> Any:
        if item is None or isinstance(item, str):
            return item
        own = registry.name_of(item)
        return registry.ref_of(own) or own

    names = {"space": name(SPACES, type(space) if not isinstance(config.space, str) else config.space),
             "strategy": name(STRATEGIES, config.strategy), "dataset": name(DATASETS, config.dataset)}
    return SearchConfig(**{**_fields(config), **names})


def _ran(config: SearchConfig) -> str:
    """What searches: the sampler when one replaces the strategy's own (``--sampler gp``), else the strategy."""
    return config.sampler.rsplit(":", 1)[-1] if config.sampler else config.strategy


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SparseNASError(f"--device {name} was asked for, but this machine has no CUDA device; use --device cpu")
    return name


def _latency_kind(config: SearchConfig, space: str, task: Any) -> str:
    """``auto``: the hardware profile's table whenever there is a profile of the runtime (``--hw``, or
    the one shipped for it); what it lacks for this space and input is timed once on this machine
    and cached (:mod:`sparsenas.hwprofiles.cache`). Without a profile of the runtime, each network
    is measured, and the log says so."""
    if config.latency != "auto":
        return config.latency
    from .hwprofiles import LatencyTable, ProfileError, default_profile_path
    from .log import logger

    if config.hw is None:
        try:
            default_profile_path(config.runtime)
        except ProfileError as e:
            logger.warning(f"latency: MEASURING every network end to end in {config.runtime}, not predicting it: {e}. "
                           "Measured latency moves with this machine's load; pass --latency measured to choose it "
                           "and silence this warning")
            return "measured"
    LatencyTable.load(config.hw, config.runtime)  # a bad --hw file is an error, not a silent fallback
    return "table"


def search(config: SearchConfig | None = None, *, progress: bool = True, **overrides: Any) -> optuna.Study:
    """Run (or resume) a search and return its Optuna study.

    ``sparsenas.search(space="sparse_mbv2", strategy="random", trials=10)``; any field of
    :class:`SearchConfig` may be passed as a keyword. Optuna's log level is lowered while it runs
    (its per-trial lines repeat ours, logger ``sparsenas``) and restored after.
    """
    from .log import optuna_verbosity

    config = SearchConfig(**{**(asdict(config) if config else {}), **overrides})
    with optuna_verbosity():
        try:
            return _search(config, progress=progress)
        except Exception as e:  # a full disk or a damaged database is the user's to fix: one paragraph
            from .tracking import search_fault

            fault = None if isinstance(e, SparseNASError) else search_fault(e, config.storage, config.artifact_dir)
            if fault is None:
                raise
            raise fault from None


def _search(config: SearchConfig | None = None, *, progress: bool = True, **overrides: Any) -> optuna.Study:
    from .data import load_dataset
    from .evaluators import LATENCY, Evaluator, TrainBudget
    from .log import logger
    from .progress import Progress
    from .search_spaces import get_space
    from .strategies import STRATEGIES
    from .strategies.base import SearchContext
    from .strategies.samplers import SamplerStrategy, make_pruner, sampler_check
    from .timing import num_threads
    from .tracking import StudySpec, Tracker

    config = SearchConfig(**{**(_fields(config) if config else {}), **overrides})
    _check(config)
    space = get_space(config.space)
    config = _named(config, space)
    strategy = STRATEGIES.get(config.strategy)()
    options = strategy.resolve_options(config.options)  # unknown or mistyped options: exit 2, nothing written
    objectives = objectives_of(config)
    sampler_check(strategy, config.sampler, config.sampler_args, objectives, config.seed, config.trials)
    pruner = make_pruner(config.pruner, config.pruner_args, objectives, epochs=config.epochs or DEFAULT_EPOCHS,
                         strategy=strategy)
    device = _device(config.device)
    if distributed.env_world_size() > 1:  # under torchrun: only rank 0 opens the study (below)
        if not strategy.runs_distributed:
            raise SparseNASError(f"strategy '{config.strategy}' does not run under torchrun; the supernet strategies "
                                 "do (dass, entangled, balanced). Spread other searches with one `nas search` per "
                                 "worker on a shared --storage")
        distributed.init_from_env(device)
        progress = progress and distributed.is_main()
    started = time.perf_counter()
    data = load_dataset(config.dataset or space.default_dataset, data_dir=config.data_dir,
                        input_size=config.input_size, seed=config.seed, limit=config.limit)
    sizes = data.meta["sizes"]
    # logged once the study is open: a search refused before (bad storage...) says only why
    set_up = [f"set-up: data {data.task.dataset} {sizes['train']}/{sizes['val']}/{sizes['test']} train/val/test, "
              f"input {data.task.input_shape}, {data.task.num_classes} classes, loaded in "
              f"{time.perf_counter() - started:.1f} s"]
    space.check_task(data.task)
    space.check_network(data.task, config.seed)
    from .runtimes import get_runtime

    get_runtime(config.runtime)  # not installed: a clear error naming the extra, before any work
    kind = _latency_kind(config, space.name, data.task)
    latency = LATENCY.get(kind)(hw=config.hw, anchor=config.hw_anchor, runtime=config.runtime)
    table = getattr(latency, "table", None)
    set_up.append(f"set-up: latency {kind} in {config.runtime}"
                  + (f" from profile {table.name}" + (" (a speed anchor is re-timed before the first trial's "
                                                      "prediction)" if config.hw_anchor else "")
                     if table is not None else " (each network timed on this machine)"))
    strategy.check(space, data.task, options)
    if hasattr(latency, "prepare"):  # before workers start: what the profile lacks is timed once, here
        latency.prepare(space, data.task)
    spec = StudySpec(space.name, space.version, data.task.dataset, data.task.to_dict(), objectives, config.runtime)
    if config.workers > 1 and not isinstance(strategy, SamplerStrategy):
        raise SparseNASError(f"--workers applies to the sampler strategies (random, tpe, nsga2); '{config.strategy}' "
                             "trains one supernet: run it with torchrun to use several processes")
    recorded = {**asdict(config), "storage": mask_url(config.storage)}
    storage: Any = config.storage if distributed.is_main() else optuna.storages.InMemoryStorage()
    tracker = Tracker(storage, config.study_name(data.task.dataset, space.name), spec, pruner=pruner,
                      extra_attrs={"strategy": config.strategy, "config": recorded,
                                   "input": data.contract.to_dict()},
                      artifact_dir=config.artifact_dir, resume_anyway=config.resume_anyway,
                      settings={k: recorded[k] for k in RESUME_CHECKED})
    for line in set_up:
        logger.info(line)
    if config.workers > 1:
        from .workers import run_workers

        run_workers(config, tracker, progress=progress, label=f"{_ran(config)} on {space.name}")
        return tracker.study
    epochs = config.epochs or (10_000 if config.time_budget else DEFAULT_EPOCHS)
    budget = TrainBudget(epochs=epochs, seconds=config.time_budget, batch_size=config.batch_size, lr=config.lr)
    evaluator = Evaluator(space, data, budget, latency, seed=config.seed, device=device)
    with Progress(config.trials, enabled=progress, label=f"{_ran(config)} on {space.name}",
                  objectives=objectives) as bar:
        bar.advance_to(tracker.counts()[0])
        ctx = SearchContext(space=space, task=data.task, data=data, evaluator=evaluator, tracker=tracker,
                            trials=config.trials, seed=config.seed, device=device, timeout=config.timeout,
                            max_latency_ms=config.max_latency_ms, progress=bar, options=options,
                            sampler=config.sampler, sampler_args=dict(config.sampler_args),
                            checkpoint_dir=checkpoint_dir_for(config.storage, tracker.study.study_name,
                                                              config.checkpoint_dir),
                            worker=config.worker)
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


# ---------------------------------------------------------------- the rest of the front door
# The command line calls only these (and search/studies above); each is what a notebook calls too.
def spaces() -> dict[str, str]:
    """Search space name -> one-line description (plug-ins from entry points included)."""
    from .search_spaces import SPACES

    return {n: cls.description for n, cls in SPACES.items()}


def strategies() -> dict[str, str]:
    """Strategy name -> one-line description."""
    from .strategies import STRATEGIES

    return {n: cls.description for n, cls in STRATEGIES.items()}


def datasets() -> dict[str, str]:
    """Dataset name -> one-line description (those read from files say so)."""
    from .data import DATASETS

    return {n: spec.description + (" [needs --data-dir]" if spec.needs_data_dir else "")
            for n, spec in DATASETS.items()}


def runtimes() -> dict[str, str]:
    """Inference runtime name -> description, whether it is installed, and what sparsity buys in it."""
    from .runtimes import RUNTIMES

    items = {}
    for name, cls in RUNTIMES.items():
        try:
            status = cls.version()
        except SparseNASError:
            status = f"not installed: pip install 'sparsenas[{cls.extra}]'"
        default = ", the default" if name == DEFAULT_RUNTIME else ""
        items[name] = f"{cls.description} [{status}{default}]; sparsity buys: {cls.sparsity_buys}"
    return items


def pareto_front(study: optuna.Study) -> list[Any]:
    """The best trials of a study: its Pareto front (or best trial), by accuracy."""
    from .tracking import pareto_front as front

    return front(study)


def trial_record(trial: Any) -> Any:
    """A trial's recorded figures as typed fields (:class:`sparsenas.tracking.TrialRecord`)."""
    from .tracking import trial_record as record

    return record(trial)


def study_record(study: Any) -> Any:
    """What a study records about its search as typed fields (:class:`sparsenas.tracking.StudyRecord`)."""
    from .tracking import study_record as record

    return record(study)


def report(storage: str = DEFAULT_STORAGE, study: str | None = None, out: str = "report", **kwargs: Any) -> Any:
    """Plots of a search and one HTML page (see :func:`sparsenas.report.make_report`)."""
    from .report import make_report

    return make_report(storage, study, out, **kwargs)


def export(storage: str = DEFAULT_STORAGE, study: str | None = None, out: str = "found", **kwargs: Any) -> list[Any]:
    """Export trials of a study (see :func:`sparsenas.export.export_trials`)."""
    from .export import export_trials

    return export_trials(storage, study, out, **kwargs)


def train(arch_path: str, *, dataset: str | None = None, data_dir: str | None = None, input_size: int | None = None,
          epochs: int = 8, batch_size: int = 32, lr: float = 0.05, seed: int = 0, limit: int | None = None,
          out: str | None = None, formats: str = "json,pt,onnx,torchscript", sparse_format: str | None = None,
          onnx_exporter: str = "dynamo", measure: bool = True, runtime: str | None = None, progress: bool = False,
          graph_input: str = "raw") -> tuple[Any, dict[str, Any]]:
    """Retrain the architecture in ``arch_path`` (arch.json or its folder) from scratch and export it
    (with ``measure``, its latency measured in ``runtime``; None: the default runtime); returns (the
    export, the training figures)."""
    import os

    from .export import normalize_formats, read_arch, resolve_plugin, retrain, write_export
    from .progress import Progress

    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise SparseNASError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    normalize_formats(formats)  # a bad format fails before training, not after
    arch, task, doc = read_arch(arch_path)
    dataset = dataset or (resolve_plugin(doc, "dataset", arch_path) or task.dataset if task else None)
    if dataset is None:
        raise SparseNASError(f"{arch_path} names no dataset; pass --dataset")
    if input_size is None and task is not None and len(task.input_shape) == 3 and dataset in (
            task.dataset, (doc.get("plugins") or {}).get("dataset")):
        input_size = task.input_shape[-1]
    out = out or (arch_path if os.path.isdir(arch_path) else os.path.dirname(os.path.abspath(arch_path)))
    with Progress(1, enabled=progress, label=f"train {arch.digest()}") as bar:
        bar.trial_started(0, f"{epochs} epochs on {dataset}")
        model, task, figures = retrain(arch, dataset=dataset, data_dir=data_dir, input_size=input_size, epochs=epochs,
                                       batch_size=batch_size, lr=lr, seed=seed, limit=limit, measure=measure,
                                       runtime=runtime, on_step=bar.trial_progress)
    info = {"weights": f"retrained from scratch for {figures['epochs']} epochs on {task.dataset} (seed {seed}) "
                       "by `nas train`",
            "retrained": figures, "source": doc.get("source") or {}, "latency_timed": "at retraining",
            **{k: figures.get(k) for k in ("latency_ms", "latency_source", "latency_runtime", "measured_latency_ms",
                                           "measured_latency_cpu_ms", "flops", "effective_flops", "kernels")}}
    res = write_export(model, arch, task, out, formats=formats, sparse_format=sparse_format, info=info,
                       onnx_exporter=onnx_exporter, contract=figures.get("contract"), graph_input=graph_input)
    return res, {**figures, "out": out, "digest": arch.digest(), "dataset": task.dataset}


def inspect(arch_path: str, *, dataset: str | None = None, data_dir: str | None = None,
            input_size: int | None = None, runtime: str | None = None, hw: str | None = None) -> dict[str, Any]:
    """An architecture file checked against its space and built for a task (the one the file
    records, unless ``dataset``/``input_size`` say otherwise): the Arch (in today's version), Task,
    traced layers with their mask kinds, params, non-zeros and MACs; with ``runtime``, also
    ``prediction``: each layer's predicted time and kernel in that runtime (from ``hw``'s profile)."""
    from .data import load_dataset
    from .evaluators import count_flops, count_params
    from .export import read_arch, resolve_plugin
    from .ops.spec import trace_named_layers
    from .search_spaces import get_space

    arch, task, doc = read_arch(arch_path)
    space = get_space(arch.space)
    if task is None or dataset is not None or input_size is not None or data_dir is not None:
        recorded = (resolve_plugin(doc, "dataset", arch_path) or task.dataset) if task else space.default_dataset
        task = load_dataset(dataset or recorded, data_dir=data_dir, input_size=input_size).task
    arch = space.validate(arch, task)  # an architecture of an older space version, in today's terms
    model = space.build(arch, task)
    layers = space.layers(arch, task)
    modules = dict(model.named_modules())
    masks = [getattr(modules.get(name), "mask_kind", "-") for name, _ in trace_named_layers(model, task.input_shape)]
    params, nnz = count_params(model)
    flops, eff = count_flops(layers)
    return {"arch": arch, "task": task, "layers": layers, "masks": masks, "params": params, "nnz": nnz,
            "flops": flops, "effective_flops": eff, "prediction": _predict_layers(runtime, hw, space, arch, task)}


def _predict_layers(runtime: str | None, hw: str | None, space: Any, arch: Any, task: Any) -> Any:
    """The profile's per-layer prediction in ``runtime`` (None without it); calibrated when the
    profile covers this space and input size, else the plain kernel sum."""
    from .evaluators.latency import profile_prediction

    if runtime is None:
        if hw:
            raise SparseNASError("--hw needs --runtime (the runtime whose per-layer times to show)")
        return None
    return profile_prediction(space, arch, task, runtime, hw)


def _profile_jobs(spaces: list[str] | None, dataset: str | None, data_dir: str | None,
                  input_sizes: list[int] | None) -> list[tuple[Any, Any]]:
    from .data import load_dataset
    from .search_spaces import get_space

    jobs = []
    for name in spaces or ["sparse_mbv2"]:
        space = get_space(name)
        for size in input_sizes or [None]:
            data = load_dataset(dataset or space.default_dataset, data_dir=data_dir, input_size=size, limit=1)
            space.check_task(data.task)
            jobs.append((space, data.task))
    return jobs


def profile(out: str, *, spaces: list[str] | None = None, dataset: str | None = None, data_dir: str | None = None,
            input_sizes: list[int] | None = None, name: str | None = None, repeats: int = 100,
            calibration_networks: int = 80, network_repeats: int = 200, seed: int = 0, device: str = "cpu",
            runtime: str | None = None, progress: bool = False, log: Any = None) -> dict[str, Any]:
    """Time every kernel the spaces can emit on this machine and write the hardware profile ``out``."""
    from .hwprofiles.profiler import KernelTimer, run_profile

    if calibration_networks < 0 or 0 < calibration_networks < 20:
        raise SparseNASError(f"--calibration-networks must be 0 (no calibration) or at least 20 (the calibration "
                             f"fits 7 coefficients), got {calibration_networks}")
    if device == "cuda":
        _device("cuda")
    jobs = _profile_jobs(spaces, dataset, data_dir, input_sizes)
    timer = KernelTimer(repeats=repeats, runtime=runtime)  # None: the default runtime
    data = run_profile(jobs, out, name=name, timer=timer,
                       calibration_networks=calibration_networks, calibration_repeats=network_repeats,
                       seed=seed, cuda=device == "cuda", progress=progress, log=log or (lambda s: None))
    data["spaces"] = [space.name for space, _ in jobs]
    return data


def profile_coverage(*, spaces: list[str] | None = None, dataset: str | None = None, data_dir: str | None = None,
                     input_sizes: list[int] | None = None, hw: str | None = None,
                     runtime: str | None = None) -> list[dict[str, Any]]:
    """Whether a hardware profile (``hw``, or the one shipped for ``runtime``; default runtime: the
    search's) and this machine's profile cache cover each space at each input, and what a search
    would time and add to the cache first (kernel keys, a calibration). Times nothing."""
    from .hwprofiles import LatencyTable
    from .hwprofiles.cache import ProfileCache

    table = LatencyTable.load(hw, runtime=runtime)  # neither: the default runtime's shipped profile
    cache = ProfileCache(table, fill=False)
    out = []
    for space, task in _profile_jobs(spaces, dataset, data_dir, input_sizes):
        out.append({"profile": table.name, "profile_path": table.path, "runtime": table.runtime_name,
                    "dataset": task.dataset, "cache": str(cache.path), **cache.coverage(space, task).to_dict()})
    return out


def validate_profile(path: str, *, spaces: list[str] | None = None, dataset: str | None = None,
                     data_dir: str | None = None, input_sizes: list[int] | None = None, n: int = 50, seed: int = 0,
                     network_repeats: int = 200, plot: str | None = None, runtime: str | None = None,
                     log: Any = None) -> list[dict[str, Any]]:
    """Predicted against measured latency of random networks, per space and input size; each report
    carries ``table`` (the profile's name), ``plot`` and ``rows`` (label, figures) besides the figures."""
    from pathlib import Path

    from .hwprofiles import LatencyTable
    from .hwprofiles.profile import METRICS
    from .hwprofiles.validate import report_rows, validate

    table = LatencyTable.load(path, runtime=runtime)
    table.runtime.require()  # measuring needs the runtime installed, predicting does not
    reports = []
    for space, task in _profile_jobs(spaces, dataset, data_dir, input_sizes):
        where = plot or f"{Path(path).stem}-validate-{space.name}-{task.input_shape[-1]}.png"
        r = validate(table, space, task, n=n, seed=seed + 1, repeats=network_repeats, plot=where,
                     anchor_networks=min(16, n), log=log or (lambda s: None))
        r.update({"table": table.name, "runtime_name": table.runtime_name, "space": space.name, "input_shape": list(task.input_shape), "plot": where,
                  "metric_label": METRICS[r["metric"]], "rows": report_rows(r)})
        reports.append(r)
    return reports


def _check_bind(server: str, host: str, port: int, allow_remote: bool, does: str) -> None:
    """A server without authentication binds beyond this machine only when asked to, with a warning."""
    import ipaddress

    from .log import logger

    try:
        local = host.lower() == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name may stand for any interface
        local = False
    if local:
        return
    risk = (f"{server} has no authentication: anyone who can reach {host}:{port} can {does}")
    if not allow_remote:
        raise SparseNASError(f"--host {host} serves beyond this machine, and {risk}. Pass --allow-remote to do it "
                             f"anyway (on a network you trust, or behind a proxy that authenticates), or keep "
                             f"--host 127.0.0.1 and reach it through ssh -L {port}:127.0.0.1:{port} THIS-HOST")
    logger.warning(f"serving on {host}:{port} (--allow-remote): {risk}")


def dashboard(storage: str = DEFAULT_STORAGE, *, host: str = "127.0.0.1", port: int = 8080,
              artifact_dir: str | None = None, announce: Any = None, allow_remote: bool = False) -> None:
    """Serve optuna-dashboard on ``storage`` (with its artifact store when there is one) until Ctrl-C.
    A ``host`` other than loopback needs ``allow_remote``: optuna-dashboard has no authentication."""
    from optuna_dashboard import run_server

    from .tracking import artifact_store_for, open_storage, storage_artifact_dir

    _check_bind("optuna-dashboard", host, port, allow_remote, "read, change and delete every study in the storage")
    st = open_storage(storage, heartbeat=False, must_exist=True)  # never create a storage to look at it
    folder = storage_artifact_dir(storage, artifact_dir)
    store = artifact_store_for(storage, folder)
    if announce is not None:
        announce(folder)
    try:
        run_server(st, host=host, port=port, artifact_store=store)
    except OSError as e:  # port in use, address not on this machine
        raise SparseNASError(f"cannot serve on {host}:{port}: {e.strerror or e}; pass another --port or --host") from None


def storage_proxy(storage: str, *, host: str = "127.0.0.1", port: int = 13000, allow_remote: bool = False,
                  announce: Any = None) -> None:
    """Serve ``storage`` to many workers through Optuna's gRPC storage proxy until Ctrl-C. A ``host``
    other than loopback needs ``allow_remote``: the proxy has no authentication."""
    from .tracking import serve_storage_proxy

    _check_bind("Optuna's gRPC storage proxy", host, port, allow_remote,
                "read, change and delete every study in the storage")
    if announce is not None:
        announce()
    serve_storage_proxy(storage, host=host, port=port)
