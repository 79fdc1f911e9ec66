"""The trial record: every attribute sparsenas stores on an Optuna trial or study, declared once.

A record kind is a frozen dataclass; each of its fields is one attribute, with the key it is
stored under, its type (the annotation) and its meaning (the field's metadata, made by
:func:`attr`). Readers get typed records (:func:`trial_record`, :func:`study_record`) and never
spell a key; writers (:mod:`sparsenas.tracking.writer`) write through :func:`write_trial` and
:func:`write_study`, which refuse keys the schema does not declare. This is the only module that
touches Optuna's ``user_attrs``; ``tests/test_architecture.py`` fails on any other use, and
``docs/architecture.md`` carries the schema table generated from these classes
(:func:`schema_table`).

Old studies still read: a field lists the keys earlier versions wrote it under (``old``), read
when its own key is absent (``stage`` was ``phase`` in entangled and ``supernet_round`` in dass).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..arch import Arch
from ..errors import SparseNASError


def attr(key: str | None, meaning: str, *, old: tuple[str, ...] = (), by: str = "every strategy",
         default: Any = None) -> Any:
    """A record field stored under ``key`` (None: Optuna's own, not a user attr), read also from the
    ``old`` keys of earlier versions; ``by`` says who writes it."""
    return field(default=default, metadata={"key": key, "meaning": meaning, "old": old, "by": by})


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _bool(v: Any) -> bool | None:
    return None if v is None else bool(v)


_READ = {"float | None": _float, "int | None": _int, "bool | None": _bool}


# ---------------------------------------------------------------- the schema
@dataclass(frozen=True)
class TrialRecord:
    """One trial: an architecture a strategy evaluated, with its figures."""

    number: int = attr(None, "Optuna's trial number in the study", by="Optuna")
    state: str = attr(None, "COMPLETE, PRUNED, FAIL or RUNNING", by="Optuna")
    values: tuple = attr(None, "the objectives' values, in the study's objective order", by="Optuna", default=())
    # the architecture
    arch_json: str | None = attr("arch", "the architecture as JSON (space, version, choices)")
    arch_digest: str | None = attr("arch_digest", "stable hash of the architecture")
    canonical_digest: str | None = attr("canonical_digest", "hash of the network built (two encodings of one "
                                        "network share it)", by="multi-trial strategies")
    strategy: str | None = attr("strategy", "the strategy that evaluated it")
    stage: str | None = attr("stage", "where a supernet strategy's figures come from: estimate or inherited "
                             "(supernet weights), retrained (standalone), early or main (dass: the supernet "
                             "round whose derivation was retrained)", old=("phase", "supernet_round"),
                             by="dass, entangled, balanced")
    # figures
    accuracy: float | None = attr("accuracy", "validation accuracy (the first objective)")
    test_accuracy: float | None = attr("test_accuracy", "test accuracy; never used to select")
    latency_ms: float | None = attr("latency_ms", "the network's latency in the study's runtime (ms, batch 1), "
                                    "an objective or not")
    model_bytes: int | None = attr("model_bytes", "exported weights in the runtime's smallest encoding")
    model_bytes_dense: int | None = attr("model_bytes_dense", "the same weights stored dense")
    params: int | None = attr("params", "parameters")
    nnz: int | None = attr("nnz", "non-zero parameters")
    flops: float | None = attr("flops", "dense multiply-accumulates of conv/linear layers, batch 1")
    effective_flops: float | None = attr("effective_flops", "the same with pruned weights skipped")
    history: tuple = attr(None, "validation accuracy per epoch (intermediate values)", by="Optuna", default=())
    train_seconds: float | None = attr("train_seconds", "seconds of training (or of evaluation, for estimates)")
    epochs: int | None = attr("epochs", "epochs trained")
    # latency: where it comes from
    latency_source: str | None = attr("latency_source", "table:<profile> (predicted) or measured:<runtime>")
    runtime: str | None = attr("runtime", "the inference runtime the latency is that of")
    runtime_version: str | None = attr("runtime_version", "that runtime's version")
    predicted_latency_ms: float | None = attr("predicted_latency_ms", "the profile's prediction (ms), also beside "
                                              "a measurement")
    predicted_metric: str | None = attr("predicted_metric", "the timing statistic the profile predicts (cpu_p10_ms...)")
    predicted_latency_error: str | None = attr("predicted_latency_error", "why a measured trial has no prediction")
    hw_profile: str | None = attr("hw_profile", "name of the hardware profile", old=("profile",))
    hw_profile_path: str | None = attr("hw_profile_path", "file of the hardware profile")
    hw_speed: float | None = attr("hw_speed", "this machine's speed against the profile's (anchor re-timing)")
    kernel_sum_ms: float | None = attr("kernel_sum_ms", "the profile's kernels summed, before calibration")
    kernels: dict | None = attr("kernels", "layer -> the kernel implementation exported for it")
    measured_latency_ms: float | None = attr("measured_latency_ms", "measured median wall time (ms)")
    measured_latency_cpu_ms: float | None = attr("measured_latency_cpu_ms", "measured median thread CPU time (ms)")
    measured_latency_cpu_p10_ms: float | None = attr("measured_latency_cpu_p10_ms", "measured 10th percentile, CPU")
    measured_latency_wall_p10_ms: float | None = attr("measured_latency_wall_p10_ms", "measured 10th percentile, wall")
    measured_latency_iqr_ms: float | None = attr("measured_latency_iqr_ms", "interquartile range of the wall times")
    # bookkeeping
    weights_artifact: str | None = attr("weights_artifact", "Optuna artifact id of the trained state_dict (every "
                                        "network trained standalone, and entangled's fine-tuned inherited ones)")
    pruned_reason: str | None = attr("pruned_reason", "why the trial was pruned")
    fail_reason: str | None = attr("fail_reason", "why the trial failed")
    duplicate_of: int | None = attr("duplicate_of", "the trial whose results it took (the same network)",
                                    by="multi-trial strategies")
    worker: str | None = attr("worker", "host:pid of the process that ran it", by="multi-trial strategies")
    surplus: bool | None = attr("surplus", "started after the study's target was reached; not a result",
                                by="multi-trial strategies")
    full_fidelity_claim: bool | None = attr("full_fidelity_claim", "a RUNNING trial trained to the end holds a place "
                                            "in the study's target (--pruner mo-asha)", by="multi-trial strategies")
    # supernet strategies
    derivation: str | None = attr("derivation", "how the architecture was derived from alpha", by="dass")
    derivation_rank: int | None = attr("derivation_rank", "its rank among the round's derivations", by="dass")
    target_sparsity: float | None = attr("target_sparsity", "the sparse ops' target sparsity", by="dass")
    latency_weight: float | None = attr("latency_weight", "weight of alpha's expected-latency term", by="dass")
    order: str | None = attr("order", "first or second order alpha step", by="dass")
    sparse_layer_sparsity: float | None = attr("sparse_layer_sparsity", "zero share over the sparse layers", by="dass")
    search_seconds: float | None = attr("search_seconds", "seconds of supernet search so far", by="dass")
    supernet_val_accuracy_masked: float | None = attr("supernet_val_accuracy_masked", "the masked supernet's "
                                                      "validation accuracy", by="dass")
    alpha: dict | None = attr("alpha", "softmax(alpha) per decision at the derivation", by="dass")
    alpha_history: list | None = attr("alpha_history", "softmax(alpha) per decision per epoch", by="dass")
    inherited_accuracy: float | None = attr("inherited_accuracy", "validation accuracy with inherited, fine-tuned "
                                            "weights", by="entangled")
    inherited_accuracy_raw: float | None = attr("inherited_accuracy_raw", "the same before fine-tuning", by="entangled")
    finetune_steps: int | None = attr("finetune_steps", "SGD steps on the extracted child", by="entangled")
    derived: bool | None = attr("derived", "the gradient search's argmax architecture", by="entangled")
    eval_seconds: float | None = attr("eval_seconds", "seconds to extract, fine-tune and evaluate it", by="entangled")
    standalone_accuracy: float | None = attr("standalone_accuracy", "validation accuracy retrained from scratch",
                                             by="entangled")
    inherited_trial: int | None = attr("inherited_trial", "the trial of its inherited estimate", by="entangled")
    pareto: bool | None = attr("pareto", "on the inherited Pareto front", by="entangled")
    supernet: int | None = attr("supernet", "the mixture's model that scored it best", by="balanced")
    supernets: int | None = attr("supernets", "models in the mixture", by="balanced")
    estimates: list | None = attr("estimates", "its accuracy under each model of the mixture", by="balanced")
    assigned: int | None = attr("assigned", "the model the mixture assigns it to at the end", by="balanced")
    _attrs: dict = field(default_factory=dict, repr=False, compare=False)  # raw attrs, for measured()

    @property
    def arch(self) -> Arch | None:
        return Arch.from_json(self.arch_json) if self.arch_json else None

    @property
    def reason(self) -> str | None:
        """Why a trial was pruned or failed."""
        return self.pruned_reason or self.fail_reason

    def measured(self, metric: str | None = None) -> float | None:
        """The measured latency in ``metric`` (wall_ms, cpu_ms...; default the predicted one)."""
        return _float(self._attrs.get(f"measured_latency_{metric or self.predicted_metric or 'wall_ms'}",
                                      self.measured_latency_ms))


@dataclass(frozen=True)
class StudyRecord:
    """One study: what it searched and how, and what its strategy concluded."""

    name: str = attr(None, "the study's name", by="Optuna")
    space: str | None = attr("space", "the search space's name (written last: a worker that sees it knows "
                             "the others are there)", by="tracking")
    space_version: int | None = attr("space_version", "the space's version", by="tracking")
    dataset: str | None = attr("dataset", "the dataset's name", by="tracking")
    task: dict | None = attr("task", "input shape, classes and dataset (sparsenas.task.Task)", by="tracking")
    objectives: tuple = attr("objectives", "the objectives, in the values' order", by="tracking", default=())
    runtime: str | None = attr("runtime", "the runtime whose latencies the study holds", by="tracking")
    strategy: str | None = attr("strategy", "the strategy", by="api")
    config: dict = attr("config", "the search's settings; a resumed run must match them", by="api")
    artifact_dir: str | None = attr("artifact_dir", "the folder the trials' weights were saved in", by="tracking")
    alpha_history: list | None = attr("alpha_history", "softmax(alpha) per decision per epoch", by="plug-ins")
    dass_budget_plan: dict | None = attr("dass_budget_plan", "supernet epochs sized to --timeout", by="dass")
    dass_finished: bool | None = attr("dass_finished", "the search ended; a re-run does nothing", by="dass")
    dass_alpha_history: list | None = attr("dass_alpha_history", "softmax(alpha) per decision per epoch", by="dass")
    dass_candidates: dict | None = attr("dass_candidates", "decision -> its candidate operations", by="dass")
    dass_search: dict | None = attr("dass_search", "seconds, steps, settings and rounds of the supernet", by="dass")
    entangled_budget_plan: dict | None = attr("entangled_budget_plan", "phase epochs sized to --timeout",
                                              by="entangled")
    entangled_derived_arch: str | None = attr("entangled_derived_arch", "the argmax-alpha architecture (JSON)",
                                              by="entangled")
    entangled_alphas: dict | None = attr("entangled_alphas", "softmax(alpha) per decision", by="entangled")
    entangled_timings: dict | None = attr("entangled_timings", "seconds per phase", by="entangled")
    kendall_tau: float | None = attr("kendall_tau", "rank agreement of inherited and standalone accuracy",
                                     by="entangled")
    kendall_tau_pvalue: float | None = attr("kendall_tau_pvalue", "its p-value", by="entangled")
    kendall_tau_n: int | None = attr("kendall_tau_n", "architectures it is measured on; set: search finished",
                                     by="entangled")
    balanced_estimates_logged: bool | None = attr("balanced_estimates_logged", "every estimate is a trial",
                                                  by="balanced")
    balanced_model_steps: list | None = attr("balanced_model_steps", "SGD steps each model received", by="balanced")
    input: dict | None = attr("input", "the data's input contract (sparsenas.data.contract), when recorded",
                              by="api")
    nni: dict | None = attr("nni", "what NNI did: strategy, engine, time, derived architectures", by="nni:*")

    @property
    def timed_in(self) -> str:
        """The runtime of the study's latencies: the recorded one, else that of studies from before
        runtimes were recorded."""
        from ..runtimes import PRE_RUNTIME

        return self.runtime or PRE_RUNTIME


def schema(kind: type) -> list[dict[str, Any]]:
    """The attributes of record ``kind``: field, key, type, who writes it, meaning (and old keys)."""
    return [{"field": f.name, "key": f.metadata["key"], "type": str(f.type), "by": f.metadata["by"],
             "meaning": f.metadata["meaning"], "old": tuple(f.metadata["old"])}
            for f in dataclasses.fields(kind) if "key" in f.metadata]


def _keys(kind: type) -> frozenset[str]:
    return frozenset(row["key"] for row in schema(kind) if row["key"])


TRIAL_KEYS, STUDY_KEYS = _keys(TrialRecord), _keys(StudyRecord)


def _fields(kind: type, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The user-attr fields of ``kind`` read from ``attrs``: the first of its keys present, typed."""
    out = {}
    for f in dataclasses.fields(kind):
        key = f.metadata.get("key")
        if not key:
            continue
        value = next((attrs[k] for k in (key, *f.metadata["old"]) if attrs.get(k) is not None), None)
        read = _READ.get(str(f.type))
        out[f.name] = read(value) if read else value
    return out


# ---------------------------------------------------------------- reading
def trial_record(t: FrozenTrial) -> TrialRecord:
    a = t.user_attrs
    values = tuple(float(v) for v in (t.values or ()))
    f = _fields(TrialRecord, a)
    f["accuracy"] = values[0] if values else f["accuracy"]
    if f["latency_ms"] is None and len(values) > 1:
        f["latency_ms"] = values[1]
    if f["predicted_latency_ms"] is None and str(f["latency_source"] or "").startswith("table"):
        f["predicted_latency_ms"] = _float(a.get("latency_ms"))
    f["latency_source"] = str(f["latency_source"]) if f["latency_source"] else None
    history = tuple(v for _, v in sorted(t.intermediate_values.items()))
    return TrialRecord(number=t.number, state=t.state.name, values=values, history=history, _attrs=a, **f)


def study_record(study: optuna.Study) -> StudyRecord:
    sa = study.user_attrs
    f = _fields(StudyRecord, sa)
    f["config"] = f["config"] or {}
    f["objectives"] = tuple(f["objectives"] or [f"value{i}" for i in range(len(study.directions))])
    f["runtime"] = f["runtime"] or f["config"].get("runtime")
    return StudyRecord(name=study.study_name, **f)


def summary_artifact_dir(summary: optuna.study.StudySummary) -> str | None:
    """The artifact folder a study recorded, from its summary (no study loaded)."""
    return summary.user_attrs.get("artifact_dir")


def stored_study_attrs(study: optuna.Study) -> dict[str, Any]:
    """The study's attrs as stored, for the writer's checks that a resumed run matches them."""
    return dict(study.user_attrs)


def arch_of(trial: FrozenTrial) -> Arch:
    arch = trial_record(trial).arch
    if arch is None:
        raise SparseNASError(f"trial {trial.number} has no architecture recorded")
    return arch


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """Best trials: the Pareto front (multi-objective) or the best trial, sorted by accuracy."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    best = study.best_trials if len(study.directions) > 1 else [study.best_trial]
    return sorted(best, key=lambda t: -t.values[0])


# ---------------------------------------------------------------- writing
def jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    return v


def encode(attrs: Mapping[str, Any], *, keys: frozenset[str] | None = TRIAL_KEYS) -> dict[str, Any]:
    """``attrs`` as stored: JSON-able; with ``keys``, every key must be one of them (None: an
    evaluator's result, which a plug-in latency evaluator may extend, is taken as it is)."""
    unknown = sorted(set(attrs) - keys) if keys is not None else []
    if unknown:
        raise ValueError(f"attribute(s) {', '.join(unknown)} are not in the trial-record schema; declare them in "
                         "sparsenas/tracking/records.py")
    return {k: jsonable(v) for k, v in attrs.items()}


def write_trial(trial: optuna.Trial, attrs: Mapping[str, Any], *, checked: bool = True) -> None:
    """Store ``attrs`` on a RUNNING trial (see :func:`encode` for ``checked``)."""
    for k, v in encode(attrs, keys=TRIAL_KEYS if checked else None).items():
        trial.set_user_attr(k, v)


def write_trial_by_id(storage: optuna.storages.BaseStorage, trial_id: int, attrs: Mapping[str, Any]) -> None:
    for k, v in encode(attrs).items():
        storage.set_trial_user_attr(trial_id, k, v)


def copy_results(trial: optuna.Trial, twin: FrozenTrial, own: set[str]) -> None:
    """Give ``trial`` every attr of ``twin`` but the ``own`` keys (a duplicate takes its twin's results)."""
    for k, v in twin.user_attrs.items():
        if k not in own:
            trial.set_user_attr(k, v)


def trial_template(state: TrialState, params: dict[str, Any], distributions: dict[str, Any],
                   values: list[float] | None, stored: dict[str, Any], intermediate: dict[int, float]) -> FrozenTrial:
    """A trial to add to a study through its storage, carrying ``stored`` (already :func:`encode`-d)."""
    return optuna.trial.create_trial(state=state, params=params, distributions=distributions, values=values,
                                     user_attrs=stored, intermediate_values=intermediate)


def write_study(study: optuna.Study, attrs: Mapping[str, Any], *, checked: bool = True) -> None:
    """Store ``attrs`` on the study, in their order (``checked``: declared keys only)."""
    unknown = sorted(set(attrs) - STUDY_KEYS) if checked else []
    if unknown:
        raise ValueError(f"study attribute(s) {', '.join(unknown)} are not in the study-record schema; declare "
                         "them in sparsenas/tracking/records.py")
    for k, v in attrs.items():
        study.set_user_attr(k, v)


# ---------------------------------------------------------------- writing a RUNNING trial in one transaction
def _write_rdb(backend: optuna.storages.RDBStorage, trial_id: int, buffered: "BufferedStorage") -> None:
    """One session, one commit, one look-up of the trial: Optuna's own ``*_without_commit`` helpers
    look the trial up again for every row, which cost more than the commits they save. User attrs
    are looked for (to update rather than insert) only when the trial may hold one of their keys."""
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(backend.scoped_session) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        backend.check_trial_is_updatable(trial_id, trial.state)
        session.add_all([models.TrialParamModel(trial_id=trial_id, param_name=name, param_value=value,
                                                distribution_json=distribution_to_json(dist))
                         for name, value, dist in buffered.params])
        for model, attrs, known in ((models.TrialUserAttributeModel, buffered.user_attrs, buffered.user_keys),
                                    (models.TrialSystemAttributeModel, buffered.system_attrs, None)):
            if not attrs:
                continue
            existing = {} if known is not None and known.isdisjoint(attrs) else {
                a.key: a for a in session.query(model).filter(model.trial_id == trial_id, model.key.in_(list(attrs)))}
            for key, value in attrs.items():
                if key in existing:
                    existing[key].value_json = json.dumps(value)
                else:
                    session.add(model(trial_id=trial_id, key=key, value_json=json.dumps(value)))


class BufferedStorage:
    """Stands in for a RUNNING trial's storage (``Trial.storage``) while the trial is filled in: its
    parameters and attributes are kept here and written by :func:`write_buffered` in one transaction.
    Everything else goes to the real storage."""

    def __init__(self, storage: optuna.storages.BaseStorage, user_keys: set[str] | None = None) -> None:
        self.storage = storage
        # the user-attr keys the trial may hold already (None: unknown): what its Trial object has read
        # and written, the only writer of a RUNNING trial's user attrs but a dead worker's reaper
        self.user_keys = user_keys
        self.params: list[tuple[str, float, Any]] = []
        self.user_attrs: dict[str, Any] = {}
        self.system_attrs: dict[str, Any] = {}

    @classmethod
    def of(cls, trial: optuna.Trial) -> "BufferedStorage":
        """One for ``trial``, knowing the user-attr keys its Trial object read and wrote so far."""
        cached = getattr(trial, "_cached_frozen_trial", None)  # Optuna's Trial keeps them there
        return cls(trial.storage, None if cached is None else set(cached.user_attrs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)

    def set_trial_param(self, trial_id: int, name: str, value: float, distribution: Any) -> None:
        self.params.append((name, value, distribution))

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.user_attrs[key] = value

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.system_attrs[key] = value


def write_buffered(buffered: BufferedStorage, trial_id: int) -> None:
    """Write what ``buffered`` kept for a RUNNING trial: in one transaction on an RDB storage (Optuna
    commits each parameter and attribute on its own: the 69 choices of a sparse_mbv2 trial were 69
    commits. Optuna also checks each parameter's distribution against the study's earlier trials;
    the study's space and version are checked when it is opened, which covers that), one call each
    elsewhere (a journal appends them to one file; in-memory and gRPC storages have no batch call)."""
    storage = buffered.storage
    backend = getattr(storage, "_backend", storage)  # Optuna wraps RDB storages in a read cache
    if not (buffered.params or buffered.user_attrs or buffered.system_attrs):
        return
    if isinstance(backend, optuna.storages.RDBStorage):
        _write_rdb(backend, trial_id, buffered)
        return
    for name, value, dist in buffered.params:
        storage.set_trial_param(trial_id, name, value, dist)
    for key, value in buffered.user_attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
    for key, value in buffered.system_attrs.items():
        storage.set_trial_system_attr(trial_id, key, value)


# ---------------------------------------------------------------- the schema as a document
def schema_table() -> str:
    """The schema as Markdown tables (docs/architecture.md holds this text; a test keeps it current)."""
    lines = []
    for kind, title in ((TrialRecord, "Trial attributes (`TrialRecord`, `trial_record(t)`)"),
                        (StudyRecord, "Study attributes (`StudyRecord`, `study_record(study)`)")):
        lines += [f"#### {title}", "", "| field | stored as | type | written by | meaning |", "|---|---|---|---|---|"]
        for row in schema(kind):
            key = f"`{row['key']}`" if row["key"] else "(Optuna)"
            if row["old"]:
                key += " (old studies: " + ", ".join(f"`{k}`" for k in row["old"]) + ")"
            typ = row['type'].replace('|', '\\|')  # a bar in a cell would end it
            lines.append(f"| `{row['field']}` | {key} | `{typ}` | {row['by']} | {row['meaning']} |")
        lines.append("")
    return "\n".join(lines)
