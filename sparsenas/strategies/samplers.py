"""Multi-trial strategies: an Optuna sampler proposes architectures; each trains standalone.

random, tpe and nsga2 are the same loop (``suggest -> evaluate -> tell``) with another sampler;
``--sampler NAME`` runs that loop with any sampler of :data:`SAMPLERS` (tpe, nsga2, nsga3, random,
gp, cmaes, qmc, a plug-in in entry-point group ``sparsenas.samplers``, or ``module:Class``), its
keyword arguments from a config file's ``[sampler]`` table. :data:`PRUNERS` holds the pruners
(``--pruner``): Optuna's for single-objective studies, and ``mo-asha`` (multi-objective asynchronous
successive halving, :mod:`sparsenas.pruners.mo_asha`) for any study. With mo-asha the trial target
counts architectures trained to full fidelity (COMPLETE); pruned trials come on top.
"""
from __future__ import annotations

import contextlib
import inspect
import time
import warnings
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import optuna
import torch

from ..errors import SparseNASError
from ..evaluators import TrainingDiverged
from ..registry import GROUPS, Registry
from ..tracking import trial_record
from . import STRATEGIES
from .base import SearchContext, Strategy
from ..pruners.mo_asha import MOASHAPruner, PrunedTrialsSafeSampler
from .options import Option


# ---------------------------------------------------------------- samplers and pruners by name
@dataclass(frozen=True)
class SamplerKind:
    """How to build one kind of sampler: ``make(seed, trials, **args)``; ``multi_objective`` False for
    samplers Optuna refuses on multi-objective studies (a clear error before the study is made)."""

    make: Callable[..., optuna.samplers.BaseSampler]
    description: str
    multi_objective: bool = True


def _adopt_sampler(obj: Any, key: str, where: str) -> SamplerKind:
    if isinstance(obj, SamplerKind):
        return obj
    if inspect.isclass(obj) and issubclass(obj, optuna.samplers.BaseSampler):
        takes_seed = "seed" in inspect.signature(obj).parameters

        def make(seed: int, trials: int, **args: Any) -> optuna.samplers.BaseSampler:
            return obj(**({"seed": seed} if takes_seed else {}), **args)

        return SamplerKind(make, (obj.__doc__ or key).strip().splitlines()[0])
    raise SparseNASError(f"sampler {where} is {'class ' + obj.__name__ if inspect.isclass(obj) else 'a ' + type(obj).__name__}"
                         ", not a subclass of optuna.samplers.BaseSampler")


SAMPLERS: Registry[SamplerKind] = Registry("sampler", group=GROUPS["sampler"], adopt=_adopt_sampler)


def _startup(trials: int) -> int:
    return max(3, min(10, trials // 3))


def _population(trials: int) -> int:
    return max(4, min(50, trials // 4))


for _name, _kind in {
    "random": SamplerKind(lambda seed, trials, **a: optuna.samplers.RandomSampler(seed=seed, **a),
                          "uniform random choices"),
    "tpe": SamplerKind(lambda seed, trials, **a: optuna.samplers.TPESampler(
        **{"seed": seed, "multivariate": True, "n_startup_trials": _startup(trials), **a}),
        "Tree-structured Parzen Estimator (multivariate, multi-objective aware)"),
    "nsga2": SamplerKind(lambda seed, trials, **a: optuna.samplers.NSGAIISampler(
        **{"seed": seed, "population_size": _population(trials), **a}), "NSGA-II evolutionary search"),
    "nsga3": SamplerKind(lambda seed, trials, **a: optuna.samplers.NSGAIIISampler(
        **{"seed": seed, "population_size": _population(trials), **a}),
        "NSGA-III evolutionary search (reference points; for several objectives)"),
    "gp": SamplerKind(lambda seed, trials, **a: optuna.samplers.GPSampler(
        **{"seed": seed, "n_startup_trials": _startup(trials), **a}), "Gaussian-process Bayesian optimisation"),
    # CMA-ES and QMC sample continuous parameters; Optuna hands categorical choices (all of an
    # architecture's) to their independent sampler, random by default, so on these spaces they
    # behave as random search. CMA-ES refuses multi-objective studies.
    "cmaes": SamplerKind(lambda seed, trials, **a: optuna.samplers.CmaEsSampler(
        **{"seed": seed, "warn_independent_sampling": False, **a}),
        "CMA-ES (single objective; categorical choices drawn at random)", multi_objective=False),
    "qmc": SamplerKind(lambda seed, trials, **a: optuna.samplers.QMCSampler(
        **{"seed": seed, "warn_independent_sampling": False, **a}),
        "quasi-Monte Carlo (Sobol); categorical choices drawn at random"),
}.items():
    SAMPLERS.register(_name)(_kind)


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    with warnings.catch_warnings():  # QMC, NSGA-III... are "experimental" in name; the choice is the user's
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def make_sampler(name: str, args: dict[str, Any], seed: int, trials: int,
                 objectives: tuple[str, ...] | None = None) -> optuna.samplers.BaseSampler:
    """The sampler ``name`` with keyword ``args``; a bad name, argument or objective count is a
    SparseNASError."""
    kind = SAMPLERS.get(name)
    if objectives is not None and len(objectives) > 1 and not kind.multi_objective:
        raise SparseNASError(f"sampler '{name}' cannot optimise several objectives (accuracy and latency); add "
                             "--objective accuracy, or pick a multi-objective sampler (tpe, nsga2, nsga3, gp, random, qmc)")
    try:
        with _quiet_experimental():
            return kind.make(seed, trials, **args)
    except (TypeError, ValueError) as e:
        raise SparseNASError(f"sampler '{name}' does not accept the arguments {args!r} from the [sampler] table: "
                             f"{e}") from None


def sampler_check(strategy: Strategy, name: str | None, args: dict[str, Any], objectives: tuple[str, ...],
                  seed: int, trials: int) -> None:
    """Before the study is made: ``--sampler`` only with a sampler strategy, and a sampler that builds."""
    if name is None:
        if args:
            raise SparseNASError("the config has sampler arguments ([sampler] table) but no sampler name; "
                                 "add name = \"tpe\" (or another sampler) to the table")
        return
    if not isinstance(strategy, SamplerStrategy):
        raise SparseNASError(f"--sampler applies to the sampler strategies (random, tpe, nsga2); strategy "
                             f"'{strategy.name}' samples architectures its own way")
    make_sampler(name, args, seed, trials, objectives)


@dataclass(frozen=True)
class PrunerKind:
    """How to build one kind of pruner: ``make(epochs, objectives, **args)``; ``multi_objective`` for
    pruners that rank several objectives (Optuna's own prune single-objective studies only)."""

    make: Callable[..., optuna.pruners.BasePruner]
    multi_objective: bool = False


def _adopt_pruner(obj: Any, key: str, where: str) -> PrunerKind:
    if isinstance(obj, PrunerKind):
        return obj
    if inspect.isclass(obj) and issubclass(obj, optuna.pruners.BasePruner):
        return PrunerKind(lambda epochs, objectives, **args: obj(**args), issubclass(obj, MOASHAPruner))
    raise SparseNASError(f"pruner {where} is {'class ' + obj.__name__ if inspect.isclass(obj) else 'a ' + type(obj).__name__}"
                         ", not a subclass of optuna.pruners.BasePruner")


def _mo_asha(epochs: int, objectives: tuple[str, ...], *, reduction_factor: int = 3, min_epochs: int = 1,
             rule: str = "crowding", brackets: int = 1) -> MOASHAPruner:
    """Rungs at min_epochs * reduction_factor**k below --epochs; the objectives after accuracy (latency,
    size) are the trial attrs recorded before training (Tracker.record_latency)."""
    return MOASHAPruner(min_resource=min_epochs, reduction_factor=reduction_factor, max_resource=epochs,
                        static_attrs=objectives[1:], rule=rule, brackets=brackets)


PRUNERS: Registry[PrunerKind] = Registry("pruner", group=GROUPS["pruner"], adopt=_adopt_pruner)
PRUNERS.register("median")(PrunerKind(lambda epochs, objectives, **a: optuna.pruners.MedianPruner(
    **{"n_startup_trials": 3, "n_warmup_steps": 2, **a})))
PRUNERS.register("hyperband")(PrunerKind(lambda epochs, objectives, **a: optuna.pruners.HyperbandPruner(
    **{"min_resource": 1, "max_resource": max(epochs, 2), **a})))
PRUNERS.register("successive-halving")(PrunerKind(
    lambda epochs, objectives, **a: optuna.pruners.SuccessiveHalvingPruner(**a)))
PRUNERS.register("nop")(PrunerKind(lambda epochs, objectives, **a: optuna.pruners.NopPruner(**a)))
PRUNERS.register("mo-asha")(PrunerKind(_mo_asha, multi_objective=True))


def make_pruner(name: str | None, args: dict[str, Any], objectives: tuple[str, ...],
                epochs: int, strategy: Strategy | None = None) -> optuna.pruners.BasePruner | None:
    """The pruner of a study: median by default for single-objective studies, none by default for
    multi-objective ones, where only a multi-objective pruner (mo-asha) may be named."""
    if name is None and len(objectives) > 1:
        if args:
            raise SparseNASError("the config has pruner arguments ([pruner] table) but no pruner name; add "
                                 "name = \"mo-asha\" to the table")
        return None
    kind = PRUNERS.get(name or "median")
    if len(objectives) > 1 and not kind.multi_objective:
        raise SparseNASError(f"--pruner {name}: Optuna prunes single-objective studies only; use --pruner "
                             "mo-asha (multi-objective successive halving), add --objective accuracy, or leave "
                             "--pruner out")
    if name is not None and strategy is not None and not isinstance(strategy, SamplerStrategy):
        raise SparseNASError(f"--pruner applies to the sampler strategies (random, tpe, nsga2 and --sampler); "
                             f"strategy '{strategy.name}' does not train one network per trial")
    try:
        return kind.make(epochs, tuple(objectives), **args)
    except (TypeError, ValueError) as e:
        raise SparseNASError(f"pruner '{name}' does not accept the arguments {args!r} from the [pruner] table: "
                             f"{e}") from None


class TrialFailed(Exception):
    """One architecture could not be evaluated; the trial is FAIL and the search goes on."""


def evaluate_trial(ctx: SearchContext, trial: optuna.Trial, strategy: str, evaluator: Any = None) -> list[float]:
    """Suggest, train and record one architecture in a RUNNING trial: what every strategy that trains
    standalone networks does per trial (the Optuna samplers here, NNI's multi-trial strategies), so
    their trials carry the same attrs. Raises ``optuna.TrialPruned`` (latency bound, pruner) or
    :class:`TrialFailed` (diverged, out of memory), the reason recorded first."""
    tracker, space, task = ctx.tracker, ctx.space, ctx.task
    evaluator = evaluator or ctx.evaluator
    # the choices and the architecture are written in one storage transaction, what is known before
    # training in a second
    with tracker.batch(trial):
        arch = space.suggest(trial, task)
        canonical = space.canonical(arch).digest()
        tracker.record_arch(trial, arch, strategy=strategy, canonical_digest=canonical)
        # the same network under another encoding (a block past its stage's depth, p_inter of a dense
        # layer...) is not trained twice: it takes the first one's results and weights. (Looked up
        # before this trial's choices are written: reading the study re-reads its RUNNING trials; the
        # trials the target check just read are looked at instead, when it ran for this trial.)
        twin = tracker.twin(canonical, trial.number)
        if twin is not None:
            values = tracker.record_duplicate(trial, twin)
    ctx.progress.trial_started(trial.number, arch.digest())
    if twin is None:
        with tracker.batch(trial):
            model = evaluator.build(arch)
            lat = evaluator.latency(arch, model, task)
            tracker.record_latency(trial, lat.ms, lat.attrs.get("model_bytes"))
            too_slow = ctx.max_latency_ms is not None and lat.ms > ctx.max_latency_ms
            if too_slow:
                tracker.record_reason(trial, "pruned", f"latency {lat.ms:.3f} ms > --max-latency-ms {ctx.max_latency_ms}")
    if twin is not None:
        _claim(ctx, trial)
        return values
    if too_slow:
        raise optuna.TrialPruned()

    def on_epoch(epoch: int, acc: float) -> None:
        if tracker.record_epoch(trial, epoch, acc):
            tracker.record_stopped(trial, epoch, acc, f"pruner stopped it after epoch {epoch}")
            raise optuna.TrialPruned()
        if tracker.target_reached(ctx.trials):  # full-fidelity target: others finished it meanwhile
            tracker.record_stopped(trial, epoch, acc, f"the study reached its target of {ctx.trials} architectures "
                                                      f"trained to the end while this one trained (epoch {epoch})")
            raise optuna.TrialPruned()

    try:
        trained = evaluator.train(model, on_epoch=on_epoch, on_step=ctx.progress.trial_progress)
    except (TrainingDiverged, torch.OutOfMemoryError, MemoryError) as e:
        tracker.record_reason(trial, "failed", f"{type(e).__name__}: {e}")
        raise TrialFailed(str(e)) from e
    result = evaluator.result(arch, model, trained, lat)
    with tracker.batch(trial):
        tracker.record_result(trial, result)
        tracker.save_weights(trial, model.state_dict())  # while RUNNING: artifacts refuse finished trials
    _claim(ctx, trial)
    return tracker.values(result)


def reseed_for_trial(sampler: optuna.samplers.BaseSampler, seed: int, number: int) -> None:
    """Seed the random states of ``sampler`` (and of the samplers it holds) from (seed, trial number).

    Workers started together on one study (``--workers K``, or one `nas search` per machine) hold
    samplers built from the same seed; the trial number is theirs alone (the storage hands them out
    atomically), so their trials draw different architectures, and trial N of a search with a given
    seed draws the same random choices whichever worker runs it. It reaches what samplers draw
    while a trial runs (random search, the start-up trials of TPE and NSGA-II); a QMC sequence
    keeps its own scrambling seed."""
    import numpy as np

    seen: set[int] = set()
    states: list[np.random.RandomState] = []

    def collect(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        for value in vars(obj).values():
            if isinstance(value, optuna.samplers.BaseSampler):
                collect(value)
            elif isinstance(value, np.random.RandomState):
                states.append(value)
            elif isinstance(getattr(value, "rng", None), np.random.RandomState):  # Optuna's LazyRandomState
                states.append(value.rng)

    collect(sampler)
    for state, child in zip(states, np.random.SeedSequence([seed, number]).spawn(len(states))):
        state.seed(child.generate_state(1)[0])


def _claim(ctx: SearchContext, trial: optuna.Trial) -> None:
    """A place among the target's architectures for a trial about to be COMPLETE, or TrialPruned when
    another worker's trial took the last one (full-fidelity counting)."""
    if not ctx.tracker.claim_completion(trial, ctx.trials):
        ctx.tracker.record_reason(trial, "pruned", f"surplus: the study reached its target of {ctx.trials} "
                                                   "architectures trained to the end as this one finished; its "
                                                   "results are kept")
        raise optuna.TrialPruned()


class SamplerStrategy(Strategy):
    options = (Option("fixed", dict, None, "pin some choices and sample the rest, e.g. --fixed s2b1_sparsity=0.8,s1_depth=1 "
                                           "(in a config file: { s2b1_sparsity = 0.8, s1_depth = 1 })"),)

    @abstractmethod
    def make_sampler(self, seed: int, ctx: SearchContext) -> optuna.samplers.BaseSampler:
        """The Optuna sampler that proposes architectures."""

    def run(self, ctx: SearchContext) -> None:
        tracker = ctx.tracker
        # ctx.trials is the study's total, whatever the number of workers on it (Tracker.surplus)
        target = ctx.trials
        deadline = None if ctx.timeout is None else time.time() + ctx.timeout
        if not tracker.wait_for_slot(target, deadline):
            return
        # offset the seed by the trials already there, so a resumed search does not replay them, and
        # by the worker's index, so workers started together do not propose the same architectures
        seed = ctx.seed + len(tracker.study.trials) + 7919 * ctx.worker
        tracker.study.sampler = (make_sampler(ctx.sampler, ctx.sampler_args, seed, ctx.trials) if ctx.sampler
                                 else self.make_sampler(seed, ctx))
        if tracker.multi_objective and tracker.pruner is not None:
            # PRUNED multi-objective trials with intermediate values crash Optuna 5.1's TPE
            tracker.study.sampler = PrunedTrialsSafeSampler(tracker.study.sampler)
        space, task = ctx.space, ctx.task
        if fixed := ctx.options.get("fixed"):  # pin some choices (e.g. the sparsity), sample the rest
            allowed = space.choices(task)
            for k, v in fixed.items():
                if k not in allowed or v not in allowed[k]:
                    raise SparseNASError(f"cannot fix choice {k}={v!r} in space '{space.name}'; "
                                         f"allowed: {allowed.get(k, list(allowed))}")
            with warnings.catch_warnings():  # experimental in name only; it is Optuna's way to pin params
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                tracker.study.sampler = optuna.samplers.PartialFixedSampler(dict(fixed), tracker.study.sampler)

        def objective(trial: optuna.Trial) -> list[float]:
            reseed_for_trial(tracker.study.sampler, ctx.seed, trial.number)
            tracker.record_worker(trial)  # at once: on a journal storage, how a killed worker's trial is found
            if tracker.surplus(trial, target):  # another worker started the last trial at the same moment
                tracker.mark_surplus(trial, target)
                raise TrialFailed("surplus")
            return evaluate_trial(ctx, trial, self.name)

        failed = 0

        def on_done(study: optuna.Study, ft: optuna.trial.FrozenTrial) -> None:
            nonlocal failed
            surplus = bool(trial_record(ft).surplus)
            if not surplus:
                ctx.progress.trial_finished(ft, counts=not tracker.full_fidelity or ft.state == optuna.trial.TrialState.COMPLETE)
            # FAIL trials do not count towards the target; a worker gives up after as many failures
            # as the target, so a budget no network survives (lr too high...) still ends
            failed += ft.state == optuna.trial.TrialState.FAIL and not surplus
            if failed >= target or not tracker.wait_for_slot(target, deadline):
                study.stop()

        tracker.study.optimize(objective, n_trials=None, timeout=ctx.timeout, catch=(TrialFailed,),
                               callbacks=[on_done])


@STRATEGIES.register("random")
class RandomStrategy(SamplerStrategy):
    name = "random"
    description = "uniform random architectures (Optuna RandomSampler), each trained standalone: the honest baseline"

    def make_sampler(self, seed: int, ctx: SearchContext) -> optuna.samplers.BaseSampler:
        return make_sampler("random", {}, seed, ctx.trials)


@STRATEGIES.register("tpe")
class TPEStrategy(SamplerStrategy):
    name = "tpe"
    description = "Optuna's TPE sampler (multivariate, multi-objective aware), each architecture trained standalone"

    def make_sampler(self, seed: int, ctx: SearchContext) -> optuna.samplers.BaseSampler:
        return make_sampler("tpe", {}, seed, ctx.trials)


@STRATEGIES.register("nsga2")
class NSGA2Strategy(SamplerStrategy):
    name = "nsga2"
    description = "Optuna's NSGA-II evolutionary sampler for the accuracy/latency front, trained standalone"

    def make_sampler(self, seed: int, ctx: SearchContext) -> optuna.samplers.BaseSampler:
        return make_sampler("nsga2", {}, seed, ctx.trials)
