"""The one place that talks to Optuna storage.

Every search is an Optuna study: one trial per evaluated architecture, params = the architecture's
choices, values = (accuracy, latency_ms) or (accuracy,), user attrs = architecture JSON and costs,
intermediate values = validation accuracy per epoch.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from .arch import Arch
from .errors import SparseNASError, StorageError
from .evaluators.result import EvalResult

optuna.logging.set_verbosity(optuna.logging.WARNING)


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    """Heartbeats and metric names are marked experimental; they are the documented way to do both."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


DEFAULT_STORAGE = "sqlite:///nas.db"
MULTI = ("accuracy", "latency_ms")
SINGLE = ("accuracy",)
DIRECTIONS = {"accuracy": "maximize", "latency_ms": "minimize"}


def open_storage(url: str, *, heartbeat: bool = True) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``: any SQLAlchemy URL Optuna supports, or ``journal:///path``.

    RDB storages get heartbeats, so trials of a killed worker are failed and retried by the next
    ``optimize`` that runs on the study (optuna.md §1).
    """
    if not isinstance(url, str) or "://" not in url:
        raise StorageError(f"bad storage URL {url!r}: expected an Optuna storage URL such as sqlite:///nas.db, "
                           "postgresql://user@host/db or journal:///path/to/file.log")
    scheme = url.split("://", 1)[0]
    if scheme == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = url.split("://", 1)[1] or "nas.journal"
        _check_parent(path, url)
        return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    if scheme.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            _check_parent(path, url)
    elif not scheme.startswith(("postgresql", "mysql")):
        raise StorageError(f"bad storage URL {url!r}: unsupported scheme '{scheme}'; use sqlite:///FILE, "
                           "postgresql://..., mysql://... or journal:///FILE")
    try:
        with _quiet_experimental():
            kwargs: dict[str, Any] = {}
            if heartbeat:
                kwargs = {"heartbeat_interval": 10, "grace_period": 30,
                          "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)}
            return optuna.storages.RDBStorage(url, **kwargs)
    except ImportError as e:
        hint = " (install the driver: pip install 'sparsenas[postgres]')" if scheme.startswith("postgres") else ""
        raise StorageError(f"cannot open storage {url!r}: {e}{hint}") from None
    except Exception as e:  # SQLAlchemy raises many types for unreachable/invalid databases
        raise StorageError(f"cannot open storage {url!r}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def _check_parent(path: str, url: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise StorageError(f"cannot open storage {url!r}: folder {parent} does not exist")


@dataclass
class StudySpec:
    """What a study is about; a resumed study must match it."""

    space: str
    space_version: int
    dataset: str
    task: dict
    objectives: tuple[str, ...]

    def attrs(self) -> dict[str, Any]:
        return {"space": self.space, "space_version": self.space_version, "dataset": self.dataset,
                "task": self.task, "objectives": list(self.objectives)}


class Tracker:
    """A study plus the conventions sparsenas stores in it."""

    def __init__(self, storage: str | optuna.storages.BaseStorage, study_name: str, spec: StudySpec, *,
                 sampler: optuna.samplers.BaseSampler | None = None,
                 pruner: optuna.pruners.BasePruner | None = None, extra_attrs: dict | None = None) -> None:
        self.storage = open_storage(storage) if isinstance(storage, str) else storage
        self.spec = spec
        self.objectives = tuple(spec.objectives)
        self.study = optuna.create_study(storage=self.storage, study_name=study_name, sampler=sampler,
                                         pruner=pruner, directions=[DIRECTIONS[o] for o in self.objectives],
                                         load_if_exists=True)
        self._check_or_set(spec.attrs(), extra_attrs or {})
        with _quiet_experimental():
            self.study.set_metric_names(list(self.objectives))

    def _check_or_set(self, attrs: dict[str, Any], extra: dict[str, Any]) -> None:
        old = self.study.user_attrs
        if "space" in old:
            for key in ("space", "space_version", "task", "objectives"):
                if json.dumps(old.get(key)) != json.dumps(attrs[key]):
                    raise SparseNASError(
                        f"study '{self.study.study_name}' already holds a search with {key}={old.get(key)!r}, but this "
                        f"run asks for {key}={attrs[key]!r}; resume it with the same settings or pass another --study")
            return
        if len(self.study.directions) != len(self.objectives):
            raise SparseNASError(f"study '{self.study.study_name}' exists with {len(self.study.directions)} objectives; "
                                 "pass another --study")
        for k, v in {**attrs, **extra}.items():
            self.study.set_user_attr(k, v)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def set_study_attr(self, key: str, value: Any) -> None:
        self.study.set_user_attr(key, value)

    # -- trials run through optimize()/ask()
    def record_epoch(self, trial: optuna.Trial, epoch: int, value: float) -> bool:
        """Log validation accuracy after ``epoch``; True when the pruner says to stop the trial."""
        if not self.multi_objective:
            trial.report(value, epoch)
            return trial.should_prune()
        # Optuna refuses report() in multi-objective studies, but intermediate values are still
        # stored and shown by the dashboard when written through the storage (optuna.md §1).
        self.storage.set_trial_intermediate_value(trial._trial_id, epoch, value)
        return False

    def record_arch(self, trial: optuna.Trial, arch: Arch, **attrs: Any) -> None:
        trial.set_user_attr("arch", arch.to_json())
        trial.set_user_attr("arch_digest", arch.digest())
        for k, v in attrs.items():
            trial.set_user_attr(k, _jsonable(v))

    def record_result(self, trial: optuna.Trial, result: EvalResult) -> None:
        for k, v in result.to_attrs().items():
            trial.set_user_attr(k, _jsonable(v))

    def values(self, result: EvalResult) -> list[float]:
        return [float(getattr(result, o)) for o in self.objectives]

    # -- architectures evaluated outside optimize() (supernet strategies)
    def log_arch(self, arch: Arch, choices: dict[str, list], result: EvalResult, **attrs: Any) -> FrozenTrial:
        dists = {k: CategoricalDistribution(v) for k, v in choices.items()}
        ft = optuna.trial.create_trial(
            params=dict(arch.choices), distributions=dists, values=self.values(result),
            user_attrs={"arch": arch.to_json(), "arch_digest": arch.digest(),
                        **{k: _jsonable(v) for k, v in {**result.to_attrs(), **attrs}.items()}},
            intermediate_values={i + 1: v for i, v in enumerate(result.history)})
        self.study.add_trial(ft)
        return ft

    # -- reading
    def finished(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))

    def front(self) -> list[FrozenTrial]:
        return pareto_front(self.study)


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """Best trials: the Pareto front (multi-objective) or the best trial, sorted by accuracy."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    best = study.best_trials if len(study.directions) > 1 else [study.best_trial]
    return sorted(best, key=lambda t: -t.values[0])


def arch_of(trial: FrozenTrial) -> Arch:
    if "arch" not in trial.user_attrs:
        raise SparseNASError(f"trial {trial.number} has no architecture recorded")
    return Arch.from_json(trial.user_attrs["arch"])


def load_study(storage: str, study_name: str | None) -> optuna.Study:
    st = open_storage(storage, heartbeat=False)
    names = [s.study_name for s in optuna.get_all_study_summaries(st)]
    if study_name is None:
        if len(names) != 1:
            raise SparseNASError(f"storage {storage} holds {len(names)} studies; pass --study, one of: {', '.join(names) or '(none)'}")
        study_name = names[0]
    if study_name not in names:
        raise SparseNASError(f"no study '{study_name}' in {storage}; studies there: {', '.join(names) or '(none)'}")
    return optuna.load_study(study_name=study_name, storage=st)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


def summarize(trials: Iterable[FrozenTrial], keys: Sequence[str]) -> list[dict[str, Any]]:
    return [{"trial": t.number, **{k: t.user_attrs.get(k) for k in keys}} for t in trials]
