"""Writing a search into its study: the one writer every strategy records through (Optuna's
samplers, NNI's strategies and the supernet strategies alike). What it writes is declared in
:mod:`sparsenas.tracking.records`; weights go to :mod:`sparsenas.tracking.weights`."""
from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass
from typing import Any, Iterator

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from ..arch import Arch
from ..errors import SparseNASError
from ..evaluators.result import EvalResult
from ..pruners.mo_asha import MOASHAPruner, report, should_prune
from . import records
from .storage import _quiet_experimental, _retry, open_storage
from .weights import artifact_store, default_artifact_dir, upload_weights

DIRECTIONS = {"accuracy": "maximize", "latency_ms": "minimize", "model_bytes": "minimize"}


@dataclass
class StudySpec:
    """What a study is about; a resumed study must match it."""

    space: str
    space_version: int
    dataset: str
    task: dict
    objectives: tuple[str, ...]
    runtime: str  # whose latencies the study's values are (a new study always names it)

    def attrs(self) -> dict[str, Any]:
        return {"space": self.space, "space_version": self.space_version, "dataset": self.dataset,
                "task": self.task, "objectives": list(self.objectives), "runtime": self.runtime}


class Tracker:
    """A study plus the conventions sparsenas stores in it."""

    def __init__(self, storage: str | optuna.storages.BaseStorage, study_name: str, spec: StudySpec, *,
                 sampler: optuna.samplers.BaseSampler | None = None,
                 pruner: optuna.pruners.BasePruner | None = None, extra_attrs: dict | None = None,
                 artifact_dir: str | None = None, settings: dict[str, Any] | None = None,
                 resume_anyway: bool = False) -> None:
        self.storage = open_storage(storage) if isinstance(storage, str) else storage
        # trained weights go to a file artifact store beside file storages, or to --artifact-dir
        self.artifact_dir = artifact_dir or (default_artifact_dir(storage) if isinstance(storage, str) else None)
        self.spec = spec
        self.objectives = tuple(spec.objectives)
        self.pruner = pruner
        self._mine: set[int] = set()  # ids of the trials this tracker started (record_worker)
        self._artifact_dir_known = False
        # canonical digest -> lowest-numbered COMPLETE trial with it, over the finished trials read so
        # far (finished trials never change: each is indexed once); and the trials a target check read
        # for a trial, which its duplicate look-up reuses instead of reading the study again
        self._twins: dict[str, FrozenTrial] = {}
        self._indexed: set[int] = set()
        self._read_for: tuple[int, list[FrozenTrial]] | None = None
        self._store: optuna.artifacts.FileSystemArtifactStore | None = None
        # with a successive-halving pruner of sparsenas's own, the trial target counts architectures
        # trained to full fidelity (COMPLETE); otherwise PRUNED trials count too
        self.full_fidelity = isinstance(pruner, MOASHAPruner)
        # load_if_exists: workers started together all join the one study; the retry covers sqlite's
        # "database is locked" while another worker is creating it
        self.study = _retry("create", lambda: optuna.create_study(
            storage=self.storage, study_name=study_name, sampler=sampler, pruner=pruner,
            directions=[DIRECTIONS[o] for o in self.objectives], load_if_exists=True))
        self._check_or_set(spec.attrs(), extra_attrs or {})
        if settings and not resume_anyway:
            self._check_settings(settings)
        with _quiet_experimental():
            self.study.set_metric_names(list(self.objectives))

    def _check_or_set(self, attrs: dict[str, Any], extra: dict[str, Any]) -> None:
        old = records.stored_study_attrs(self.study)
        if "space" in old:
            for key in ("space", "space_version", "task", "objectives", "runtime"):
                if key == "runtime" and key not in old:  # a study from before runtimes: torch, not checked
                    continue
                if json.dumps(old.get(key)) != json.dumps(attrs[key]):
                    raise SparseNASError(
                        f"study '{self.study.study_name}' already holds a search with {key}={old.get(key)!r}, but this "
                        f"run asks for {key}={attrs[key]!r}; resume it with the same settings or pass another --study")
            return
        if len(self.study.directions) != len(self.objectives):
            raise SparseNASError(f"study '{self.study.study_name}' exists with {len(self.study.directions)} objectives; "
                                 "pass another --study")
        # "space" goes last: a worker that sees it knows every other attr is written
        records.write_study(self.study, dict(sorted({**attrs, **extra}.items(), key=lambda kv: kv[0] == "space")))

    def _check_settings(self, settings: dict[str, Any]) -> None:
        """A resumed study must be searched the way it started (budget, seed, strategy): trials of two
        budgets in one study are not comparable. The first run's settings are the study's ``config``."""
        old = records.stored_study_attrs(self.study).get("config")
        if not isinstance(old, dict):
            return
        diff = [k for k, v in settings.items() if k in old and json.dumps(old[k], sort_keys=True) != json.dumps(v, sort_keys=True)]
        if diff:
            was = ", ".join(f"{k}={old[k]!r}" for k in diff)
            now = ", ".join(f"{k}={settings[k]!r}" for k in diff)
            raise SparseNASError(f"study '{self.study.study_name}' was searched with {was}, but this run asks for {now}; "
                                 "re-run with the study's settings, pass another --study, or --resume-anyway to add "
                                 "trials of the new settings to it (--trials and --timeout may change freely)")

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def set_study_attr(self, key: str, value: Any) -> None:
        records.write_study(self.study, {key: value})

    def read_study(self) -> records.StudyRecord:
        """The study's record as stored now (typed; see :mod:`sparsenas.tracking.records`)."""
        return records.study_record(self.study)

    @contextlib.contextmanager
    def batch(self, trial: optuna.Trial) -> Iterator[None]:
        """Inside, the parameters a RUNNING ``trial`` is suggested and the attributes (and artifacts)
        recorded on it are kept, then written at the end in one storage transaction; the trial object
        sees them at once. Nothing inside may rely on reading them back from the storage."""
        if isinstance(trial.storage, records.BufferedStorage):  # already inside a batch: one write at its end
            yield
            return
        buffered = records.BufferedStorage.of(trial)
        trial.storage = buffered  # type: ignore[assignment]  # Trial writes through this attribute
        try:
            yield
        finally:
            trial.storage = buffered.storage
            records.write_buffered(buffered, trial._trial_id)

    # -- trials run through optimize()/ask()
    def record_epoch(self, trial: optuna.Trial, epoch: int, value: float) -> bool:
        """Log validation accuracy after ``epoch``; True when the pruner says to stop the trial.

        Optuna refuses ``report()``/``should_prune()`` in multi-objective studies; there the value goes
        through the storage as an intermediate value (the dashboard plots it) and the pruner, when the
        study has one (mo-asha), is asked directly."""
        report(trial, value, epoch)
        if self.multi_objective and self.pruner is None:
            return False
        return should_prune(trial)

    def record_stopped(self, trial: optuna.Trial, epoch: int, value: float, reason: str) -> None:
        """A trial stopped after ``epoch`` (about to be PRUNED): its reason and its last validation
        accuracy (Optuna stores no values for a PRUNED multi-objective trial; read back as
        TrialRecord.accuracy, beside the latency recorded before training)."""
        with self.batch(trial):
            records.write_trial(trial, {"accuracy": float(value), "epochs": int(epoch)})
            self.record_reason(trial, "pruned", reason)

    def record_arch(self, trial: optuna.Trial, arch: Arch, **attrs: Any) -> None:
        records.write_trial(trial, {"arch": arch.to_json(), "arch_digest": arch.digest(), **attrs})

    def record_result(self, trial: optuna.Trial, result: EvalResult) -> None:
        records.write_trial(trial, result.to_attrs(), checked=False)

    def record_latency(self, trial: optuna.Trial, ms: float, model_bytes: int | None = None) -> None:
        """The latency (and exported size) of a trial's network, known before it trains, so a pruner can
        rank trials on them (read back as TrialRecord.latency_ms, TrialRecord.model_bytes)."""
        records.write_trial(trial, {"latency_ms": float(ms)})
        if model_bytes is not None:
            records.write_trial(trial, {"model_bytes": int(model_bytes)})

    def record_reason(self, trial: optuna.Trial, state: str, reason: str) -> None:
        """Why a trial is about to be ``"pruned"`` or has ``"failed"`` (read back as TrialRecord.reason)."""
        if state not in ("pruned", "failed"):
            raise ValueError(f"state must be 'pruned' or 'failed', got {state!r}")
        records.write_trial(trial, {"pruned_reason" if state == "pruned" else "fail_reason": reason})

    def twin(self, canonical_digest: str, number: int | None = None) -> FrozenTrial | None:
        """A COMPLETE trial of this study that built the same network (same ``canonical_digest``), the
        lowest-numbered one. ``number``: the trial asking, whose target check (:meth:`surplus`) read the
        study moments ago; the trials that read found are looked at instead of reading it again."""
        if self._read_for is not None and self._read_for[0] == number:
            trials = self._read_for[1]
        else:
            trials = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        self._read_for = None
        for t in trials:
            if t.state != TrialState.COMPLETE or t._trial_id in self._indexed:
                continue
            self._indexed.add(t._trial_id)
            digest = records.trial_record(t).canonical_digest
            if digest is not None and (digest not in self._twins or t.number < self._twins[digest].number):
                self._twins[digest] = t
        return self._twins.get(canonical_digest)

    def record_duplicate(self, trial: optuna.Trial, twin: FrozenTrial) -> list[float]:
        """Give ``trial`` the results (and saved weights) of ``twin``, the same network under another
        encoding, instead of training it again; returns the twin's values."""
        own = {"arch", "arch_digest", "canonical_digest", "strategy", "worker", "full_fidelity_claim"}  # its own
        records.copy_results(trial, twin, own)
        records.write_trial(trial, {"duplicate_of": twin.number})
        return list(twin.values)

    def values(self, result: EvalResult) -> list[float]:
        return [float(getattr(result, o)) for o in self.objectives]

    def save_weights(self, trial: optuna.Trial, state_dict: dict[str, Any]) -> str | None:
        """Upload ``state_dict`` as an artifact of the RUNNING ``trial`` (Optuna refuses artifacts on
        finished trials); returns the artifact id, or None when there is no artifact
        store (a database storage without ``artifact_dir``)."""
        if self.artifact_dir is None:
            return None
        artifact_id = upload_weights(self._artifact_store(), trial, state_dict)
        records.write_trial(trial, {"weights_artifact": artifact_id})
        self._record_artifact_dir()
        return artifact_id

    def _artifact_store(self) -> optuna.artifacts.FileSystemArtifactStore:
        if self._store is None:
            self._store = artifact_store(self.artifact_dir, create=True)
        return self._store

    def _record_artifact_dir(self) -> None:
        if self._artifact_dir_known:  # a study attr read is a query: once per process
            return
        path = os.path.abspath(self.artifact_dir)
        if self.read_study().artifact_dir != path:
            self.set_study_attr("artifact_dir", path)
        self._artifact_dir_known = True

    # -- architectures evaluated outside optimize() (supernet strategies)
    def log_arch(self, arch: Arch, choices: dict[str, list], result: EvalResult, *,
                 weights: dict[str, Any] | None = None, **attrs: Any) -> FrozenTrial:
        """Record an architecture a one-shot strategy evaluated as a finished trial; the stored trial.
        ``weights``: the state_dict of the network the figures were measured on (one trained
        standalone), saved with the trial when the storage has an artifact store, so ``nas export``
        needs no retraining."""
        save = weights is not None and self.artifact_dir is not None
        stored = {**records.encode({"arch": arch.to_json(), "arch_digest": arch.digest()}),
                  **records.encode(result.to_attrs(), keys=None), **records.encode(attrs)}
        values = self.values(result)
        trial_id = self._add_trial(arch, choices, TrialState.RUNNING if save else TrialState.COMPLETE,
                                   None if save else values, stored,
                                   {i + 1: v for i, v in enumerate(result.history)})
        if save:  # artifacts attach to unfinished trials only: upload, then finish it
            artifact_id = upload_weights(self._artifact_store(), self.storage.get_trial(trial_id), weights, self.storage)
            records.write_trial_by_id(self.storage, trial_id, {"weights_artifact": artifact_id})
            self._record_artifact_dir()
            self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, values)
        return self.storage.get_trial(trial_id)

    def log_failed(self, arch: Arch, choices: dict[str, list], reason: str, **attrs: Any) -> FrozenTrial:
        """Record an architecture a one-shot strategy could not evaluate (diverged, out of memory) as
        a FAIL trial with the reason; the stored trial."""
        stored = records.encode({"arch": arch.to_json(), "arch_digest": arch.digest(), "fail_reason": reason, **attrs})
        return self.storage.get_trial(self._add_trial(arch, choices, TrialState.FAIL, None, stored, {}))

    def _add_trial(self, arch: Arch, choices: dict[str, list], state: TrialState, values: list[float] | None,
                   stored: dict[str, Any], intermediate: dict[int, float]) -> int:
        dists = {k: CategoricalDistribution(v) for k, v in choices.items()}
        ft = records.trial_template(state, dict(arch.choices), dists, values, stored, intermediate)
        # Study.add_trial through the storage, which returns the stored trial's id (its number is
        # the study's; the template's is -1), found by id even when other workers add trials meanwhile
        study_id = self.storage.get_study_id_from_name(self.study.study_name)
        return self.storage.create_new_trial(study_id, template_trial=ft)

    # -- the study's trial target, shared by every worker on it
    # The target counts COMPLETE and PRUNED trials: Optuna's MaxTrialsCallback with
    # states=(COMPLETE, PRUNED). A FAIL trial (a diverged network, a killed worker's trial) does not
    # count, so another trial takes its place.
    def record_worker(self, trial: optuna.Trial) -> None:
        """Which process runs ``trial`` (host:pid), so a dead local worker's trial can be failed later."""
        records.write_trial(trial, {"worker": f"{socket.gethostname()}:{os.getpid()}"})
        self._mine.add(trial._trial_id)

    def fail_stale(self) -> None:
        """Fail RUNNING trials whose worker is gone. Those whose worker process ran on this machine and
        no longer exists are failed at once, on every storage (a search restarted after a kill does not
        wait out the heartbeat grace period); on RDB storages Optuna's heartbeat also fails the silent
        trials of other machines' workers, and both kinds are re-queued (up to 2 retries)."""
        from optuna.storages._heartbeat import is_heartbeat_enabled

        heartbeat = is_heartbeat_enabled(self.storage)
        host = socket.gethostname()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            who, _, pid = str(records.trial_record(t).worker or "").rpartition(":")
            if who != host or not pid.isdigit():
                continue
            # this very process, but not this tracker: an earlier search here that stopped on an error
            # (a full disk) before it could fail its trial
            gone = t._trial_id not in self._mine if int(pid) == os.getpid() else not _alive(int(pid))
            if not gone:
                continue
            try:
                records.write_trial_by_id(self.storage, t._trial_id, {"fail_reason": "its worker process died"})
                failed = self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except Exception:  # another worker failed it first
                continue
            retry = self.storage.get_heartbeat_stale_trial_callback() if heartbeat else None
            if failed and retry is not None:  # the same re-queue a heartbeat-stale trial gets
                retry(self.study, self.storage.get_trial(t._trial_id))
        if heartbeat:
            with _quiet_experimental():
                optuna.storages.fail_stale_trials(self.study)

    def counts(self) -> tuple[int, list[int]]:
        """(trials that count towards the target, numbers of the RUNNING trials)."""
        trials = self._target_trials()
        running = [t.number for t in trials if t.state == TrialState.RUNNING]
        return len(trials) - len(running), running

    def _target_trials(self) -> list[FrozenTrial]:
        """The study's trials that count towards the target (every COMPLETE one among them) and the
        RUNNING ones, read now."""
        counted = (TrialState.COMPLETE,) if self.full_fidelity else (TrialState.COMPLETE, TrialState.PRUNED)
        return self.study.get_trials(deepcopy=False, states=(*counted, TrialState.RUNNING))

    def _committed(self, besides: int | None = None) -> int:
        """Trials that count towards the target, plus RUNNING ones that claimed a place
        (:meth:`claim_completion`), trial number ``besides`` left out."""
        return self._count_committed(self._target_trials(), besides)

    @staticmethod
    def _count_committed(trials: list[FrozenTrial], besides: int | None = None) -> int:
        n = 0
        for t in trials:
            if t.number == besides:
                continue
            if t.state != TrialState.RUNNING or records.trial_record(t).full_fidelity_claim:
                n += 1
        return n

    def surplus(self, trial: optuna.Trial, target: int) -> bool:
        """True when ``trial`` is beyond ``target``: the finished trials and the RUNNING ones started
        before it (lower numbers; the storage numbers trials atomically) already make the target. Two
        workers that start the last trial at the same moment agree on which one is surplus. With a
        pruner counting full fidelity, RUNNING trials may still be pruned: only those that claimed a
        place count."""
        trials = self._target_trials()
        self._read_for = (trial.number, trials)  # for this trial's duplicate look-up (twin)
        if self.full_fidelity:
            return self._count_committed(trials) >= target
        before = sum(1 for t in trials if t.state == TrialState.RUNNING and t.number < trial.number)
        return sum(1 for t in trials if t.state != TrialState.RUNNING) + before >= target

    def target_reached(self, target: int) -> bool:
        """Full-fidelity counting: the study holds ``target`` COMPLETE trials or claims, so a RUNNING
        trial that has not claimed a place can stop."""
        return self.full_fidelity and self._committed() >= target

    def claim_completion(self, trial: optuna.Trial, target: int) -> bool:
        """Full-fidelity counting: ``trial`` finished training; claim a place among the ``target``
        architectures. Each claim is written before the others are read, and a trial keeps its place
        only when every other claim and COMPLETE trial leaves one: of any claims kept, the one read
        last saw all the others, so the study never ends with more than ``target``. (Preferring the
        lower trial number is not safe: a higher one may have checked and kept its place before the
        lower one wrote its claim.) Two claims written at the same moment may both give way; the
        search then trains one more. False: no place left (the trial is surplus)."""
        if not self.full_fidelity:
            return True
        records.write_trial(trial, {"full_fidelity_claim": True})
        if self._committed(besides=trial.number) >= target:
            records.write_trial(trial, {"full_fidelity_claim": False})
            return False
        return True

    def mark_surplus(self, trial: optuna.Trial, target: int) -> None:
        records.write_trial(trial, {"fail_reason": f"surplus: the study reached its target of {target} trials "
                                                   "while this worker was starting it", "surplus": True})

    def wait_for_slot(self, target: int, deadline: float | None = None, poll: float = 1.0) -> bool:
        """Block while other workers' RUNNING trials would make the target; True when a trial may start,
        False when the target is reached (or ``deadline``, a time.time(), passed)."""
        import time

        stale_checked = False
        while True:
            done, running = self.counts()
            if done >= target:
                self.fail_stale()  # leave no dead worker's trial RUNNING in a finished study
                return False
            if self.full_fidelity:
                # asynchronous: a RUNNING trial may yet be pruned, so only claimed places (trials
                # already trained, being told) are waited for
                if self._committed() < target:
                    return True
            elif done + len(running) < target:
                return True
            # a dead worker's RUNNING trial may be what fills the target (looked for only then: with
            # heartbeats, Optuna's optimize() fails stale trials itself before each trial)
            if not stale_checked:
                self.fail_stale()
                stale_checked = True
                continue
            if deadline is not None and time.time() >= deadline:
                return False
            time.sleep(poll)
            stale_checked = False

    # -- reading
    def finished(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))

    def front(self) -> list[FrozenTrial]:
        return records.pareto_front(self.study)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True

