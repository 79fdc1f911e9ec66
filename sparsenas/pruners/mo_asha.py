"""Multi-objective asynchronous successive halving (MO-ASHA) as an Optuna pruner.

Optuna's pruners refuse multi-objective studies (``Trial.report`` and ``Trial.should_prune`` raise
there). This pruner ranks the trials that reached a rung by non-dominated sorting over the objective
vector (the value reported at the rung, plus objectives that do not change with training, such as
latency or size, read from trial attributes set before training) with a tie-break inside a front
(crowding distance, as NSGA-II, or an epsilon-net, as Syne Tune's MO-ASHA, Schmucker et al. 2021).
A trial is promoted past a rung when it is in the top ``1/reduction_factor`` of the trials that
reached that rung so far: asynchronous, no worker waits for a rung to fill, like Optuna's
``SuccessiveHalvingPruner``. Optional Hyperband-style brackets (``brackets=B``) spread trials
round-robin over B brackets whose first rungs are ``min_resource * reduction_factor**b``.

This module depends on Optuna and NumPy only, so it can be copied into any Optuna project::

    pruner = MOASHAPruner(min_resource=1, reduction_factor=3, max_resource=9, static_attrs=["latency_ms"])
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=pruner)

    def objective(trial):
        net = build(trial)
        trial.set_user_attr("latency_ms", latency(net))      # before training: the pruner reads it
        for epoch in range(1, 10):
            acc = train_one_epoch(net)
            report(trial, acc, epoch)                          # trial.report refuses multi-objective
            if should_prune(trial):
                raise optuna.TrialPruned()
        return acc, trial.user_attrs["latency_ms"]

With a sampler that models PRUNED trials (TPE), wrap it: ``PrunedTrialsSafeSampler(TPESampler())``;
Optuna 5.1's TPE reads a PRUNED trial's last intermediate value with ``study.direction``, which raises
in a multi-objective study (a PRUNED multi-objective trial never had intermediate values before).

Each rung result is stored in the trial's system attrs (``mo_asha:rung<r>`` with the trial number,
bracket, step and objective vector, and ``mo_asha:rung<r>:promoted``), written before the competing
trials are read, so of two trials reaching a rung at the same moment at least one sees the other; a
decision once recorded is returned again by later calls, so no trial is promoted twice at a rung.
Records copied into a retried trial (Optuna's retry callbacks copy system attrs) carry the old
trial's number and are ignored for it.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["MOASHAPruner", "PrunedTrialsSafeSampler", "RULES", "report", "should_prune", "promotion_order"]

RULES = ("crowding", "epsnet")
_PREFIX = "mo_asha:"


# ---------------------------------------------------------------- ranking (all objectives minimised)
def _fronts(points: np.ndarray) -> np.ndarray:
    """Non-dominated sorting: the front index (0 = Pareto front) of every row of ``points``."""
    n = len(points)
    le = (points[:, None, :] <= points[None, :, :]).all(-1)
    lt = (points[:, None, :] < points[None, :, :]).any(-1)
    dominates = le & lt                      # dominates[i, j]: row i dominates row j
    rank = np.full(n, -1)
    left = np.ones(n, bool)
    level = 0
    while left.any():
        current = left & ~dominates[left].any(0)  # not dominated by any remaining row
        rank[current] = level
        left &= ~current
        level += 1
    return rank


def _normalised(points: np.ndarray) -> np.ndarray:
    lo, hi = points.min(0), points.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return (points - lo) / span


def _crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row within ``points`` (one front); boundary rows are inf."""
    n, m = points.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(points[:, j], kind="stable")
        lo, hi = points[order[0], j], points[order[-1], j]
        dist[order[0]] = dist[order[-1]] = np.inf
        if hi > lo:
            dist[order[1:-1]] += (points[order[2:], j] - points[order[:-2], j]) / (hi - lo)
    return dist


def promotion_order(points: np.ndarray, rule: str = "crowding", favour: int | None = None) -> list[int]:
    """Rows of ``points`` (objectives to minimise) best first: by front, then inside a front by
    ``rule``: ``crowding`` (larger crowding distance first) or ``epsnet`` (greedily the row farthest,
    in min-max normalised objective space, from the rows already taken; the first row taken is the
    best on the first objective). Ties go to row ``favour`` (the trial being decided, as Optuna's
    successive halving promotes a trial tying the last promoted value), then to the lower row."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    points = np.asarray(points, float)
    rank = _fronts(points)
    first = (lambda i: 0 if i == favour else 1)
    if rule == "crowding":
        crowd = np.zeros(len(points))
        for level in np.unique(rank):
            rows = np.flatnonzero(rank == level)
            crowd[rows] = _crowding(_normalised(points)[rows])
        return sorted(range(len(points)), key=lambda i: (rank[i], -crowd[i], first(i), i))
    norm = _normalised(points)
    taken: list[int] = []
    for level in np.unique(rank):
        rows = [int(i) for i in np.flatnonzero(rank == level)]
        while rows:
            if taken:
                gap = {i: float(np.min(np.linalg.norm(norm[taken] - norm[i], axis=1))) for i in rows}
                pick = min(rows, key=lambda i: (-gap[i], first(i), i))
            else:
                pick = min(rows, key=lambda i: (points[i, 0], first(i), i))
            taken.append(pick)
            rows.remove(pick)
    return taken


# ---------------------------------------------------------------- the pruner
class MOASHAPruner(optuna.pruners.BasePruner):
    """Multi-objective asynchronous successive halving; see the module docstring.

    Args:
        min_resource: the first rung's step (epoch); rungs are at ``min_resource * reduction_factor**k``.
        reduction_factor: eta; a trial is promoted when in the top ``1/eta`` of its rung (at least one).
        max_resource: the step a finished trial reaches (e.g. the epochs of full training); rungs at or
            beyond it are not checked, so a trial that trained to the end is never pruned there.
            ``None``: no cap.
        static_attrs: trial attribute names (user attrs, else system attrs) holding the objectives that
            do not change with training, in the order of the study's objectives after the reported one.
        reported_objective: the index, among the study's objectives, of the value reported per step.
        rule: tie-break inside a non-dominated front: ``"crowding"`` or ``"epsnet"``.
        brackets: Hyperband-style brackets; trial ``n`` goes to bracket ``n % brackets`` whose first
            rung is ``min_resource * reduction_factor**bracket``; trials compete within their bracket.
    """

    def __init__(self, min_resource: int = 1, reduction_factor: int = 3, *, max_resource: int | None = None,
                 static_attrs: Sequence[str] = (), reported_objective: int = 0, rule: str = "crowding",
                 brackets: int = 1) -> None:
        if not isinstance(min_resource, int) or min_resource < 1:
            raise ValueError(f"min_resource must be an integer >= 1, got {min_resource!r}")
        if not isinstance(reduction_factor, int) or reduction_factor < 2:
            raise ValueError(f"reduction_factor must be an integer >= 2, got {reduction_factor!r}")
        if max_resource is not None and (not isinstance(max_resource, int) or max_resource < 1):
            raise ValueError(f"max_resource must be an integer >= 1 or None, got {max_resource!r}")
        if rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        if not isinstance(brackets, int) or brackets < 1:
            raise ValueError(f"brackets must be an integer >= 1, got {brackets!r}")
        if max_resource is not None and brackets > 1 and min_resource * reduction_factor ** (brackets - 1) >= max_resource:
            raise ValueError(f"brackets={brackets}: the last bracket's first rung "
                             f"({min_resource * reduction_factor ** (brackets - 1)}) is not below max_resource={max_resource}")
        self.min_resource, self.reduction_factor, self.max_resource = min_resource, reduction_factor, max_resource
        self.static_attrs, self.reported_objective = tuple(static_attrs), reported_objective
        self.rule, self.brackets = rule, brackets

    # -- where a trial stands
    def rungs(self, bracket: int = 0) -> list[int]:
        """The steps at which trials of ``bracket`` are checked (all below ``max_resource``)."""
        if self.max_resource is None:
            raise ValueError("rungs() lists a finite ladder: set max_resource")
        out, k = [], bracket
        while self.min_resource * self.reduction_factor ** k < self.max_resource:
            out.append(self.min_resource * self.reduction_factor ** k)
            k += 1
        return out

    def bracket_of(self, trial: FrozenTrial) -> int:
        return trial.number % self.brackets

    def _rung_step(self, bracket: int, rung: int) -> int:
        return self.min_resource * self.reduction_factor ** (bracket + rung)

    @staticmethod
    def _key(bracket: int, rung: int) -> str:
        return f"{_PREFIX}b{bracket}:rung{rung}"

    @staticmethod
    def _own(trial: FrozenTrial, key: str) -> dict | None:
        rec = trial.system_attrs.get(key)
        return rec if isinstance(rec, dict) and rec.get("trial") == trial.number else None

    def _objectives(self, study: optuna.Study, trial: FrozenTrial, value: float) -> list[float]:
        n = len(study.directions)
        if n != 1 + len(self.static_attrs):
            raise ValueError(f"the study has {n} objectives, but MOASHAPruner reads 1 reported value and "
                             f"{len(self.static_attrs)} static_attrs {list(self.static_attrs)}; pass one attr name per "
                             "objective that is not reported per step")
        statics = []
        for name in self.static_attrs:
            v = trial.user_attrs.get(name, trial.system_attrs.get(name))
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ValueError(f"trial {trial.number} has no numeric attribute {name!r}; set it (trial.set_user_attr) "
                                 "before reporting, since MOASHAPruner ranks trials on it")
            statics.append(float(v))
        vec = statics[:self.reported_objective] + [float(value)] + statics[self.reported_objective:]
        return vec

    # -- BasePruner
    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        bracket = self.bracket_of(trial)
        value = trial.intermediate_values[step]
        storage = study._storage  # the pruner API hands a FrozenTrial; rung results go through the storage
        rung = 0
        while True:
            key = self._key(bracket, rung)
            decided = self._own(trial, key + ":promoted")
            if decided is not None:
                if not decided["value"]:
                    return True
                rung += 1
                continue
            at = self._rung_step(bracket, rung)
            if self.max_resource is not None and at >= self.max_resource:
                return False
            if step < at:
                return False
            if math.isnan(value):
                return True
            vec = self._objectives(study, trial, value)
            storage.set_trial_system_attr(trial._trial_id, key, {"trial": trial.number, "step": step, "values": vec})
            promoted = self._promotable(study, trial, key, vec)
            storage.set_trial_system_attr(trial._trial_id, key + ":promoted", {"trial": trial.number, "value": promoted})
            if not promoted:
                return True
            rung += 1

    def _promotable(self, study: optuna.Study, trial: FrozenTrial, key: str, vec: list[float]) -> bool:
        rows = []
        for t in study.get_trials(deepcopy=False):
            rec = t.system_attrs.get(key)
            if t.number == trial.number:
                continue
            if isinstance(rec, dict) and rec.get("trial") == t.number:
                rows.append(rec["values"])
        me = len(rows)
        rows.append(vec)
        sign = np.array([-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in study.directions])
        order = promotion_order(np.asarray(rows, float) * sign, self.rule, favour=me)
        keep = max(1, len(rows) // self.reduction_factor)
        return order.index(me) < keep


# ---------------------------------------------------------------- reporting in multi-objective studies
def report(trial: optuna.Trial, value: float, step: int) -> None:
    """``trial.report(value, step)`` that also works in multi-objective studies: the value is written
    through the storage as an intermediate value (the dashboard plots it), which Optuna allows there."""
    if len(trial.study.directions) == 1:
        trial.report(value, step)
        return
    trial.study._storage.set_trial_intermediate_value(trial._trial_id, int(step), float(value))


def should_prune(trial: optuna.Trial) -> bool:
    """``trial.should_prune()`` that also works in multi-objective studies: asks the study's pruner
    with the trial as stored (its intermediate values and attributes)."""
    if len(trial.study.directions) == 1:
        return trial.should_prune()
    study: Any = trial.study
    return study.pruner.prune(study, study._storage.get_trial(trial._trial_id))


# ---------------------------------------------------------------- samplers beside the pruner
class _StudyView(optuna.Study):
    """The same study (it shares the study's ``__dict__``), whose PRUNED trials show no intermediate
    values in a multi-objective study."""

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[FrozenTrial]:
        trials = super()._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        if len(self.directions) == 1:
            return trials
        out = []
        for t in trials:
            if t.state == TrialState.PRUNED and t.intermediate_values:
                t = copy.copy(t)
                t.intermediate_values = {}
            out.append(t)
        return out


def _view(study: optuna.Study) -> optuna.Study:
    view = object.__new__(_StudyView)
    view.__dict__ = study.__dict__
    return view


class PrunedTrialsSafeSampler(optuna.samplers.BaseSampler):
    """Runs ``sampler`` on a view of the study in which, multi-objective, PRUNED trials carry no
    intermediate values: to the sampler they are trials stopped without a result (TPE then ranks
    them below every finished trial, as it does pruned trials without reports)."""

    def __init__(self, sampler: optuna.samplers.BaseSampler) -> None:
        self.sampler = sampler

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self.sampler.infer_relative_search_space(_view(study), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self.sampler.sample_relative(_view(study), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any) -> Any:
        return self.sampler.sample_independent(_view(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(_view(study), trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self.sampler.after_trial(_view(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()
