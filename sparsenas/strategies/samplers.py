"""Multi-trial strategies: an Optuna sampler proposes architectures; each trains standalone.

random, tpe and nsga2 are the same loop (``suggest -> evaluate -> tell``) with another sampler.
"""
from __future__ import annotations

import time
import warnings
from abc import abstractmethod

import optuna
import torch

from ..errors import SparseNASError
from ..evaluators import TrainingDiverged
from . import STRATEGIES
from .base import SearchContext, Strategy


class TrialFailed(Exception):
    """One architecture could not be evaluated; the trial is FAIL and the search goes on."""


class SamplerStrategy(Strategy):
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
        tracker.study.sampler = self.make_sampler(ctx.seed + len(tracker.study.trials) + 7919 * ctx.worker, ctx)
        evaluator, space, task = ctx.evaluator, ctx.space, ctx.task
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
            tracker.record_worker(trial)
            if tracker.surplus(trial, target):  # another worker started the last trial at the same moment
                tracker.mark_surplus(trial, target)
                raise TrialFailed("surplus")
            arch = space.suggest(trial, task)
            canonical = space.canonical(arch).digest()
            tracker.record_arch(trial, arch, strategy=self.name, canonical_digest=canonical)
            ctx.progress.trial_started(trial.number, arch.digest())
            # the same network under another encoding (a block past its stage's depth, p_inter of a
            # dense layer...) is not trained twice: it takes the first one's results and weights
            if (twin := tracker.twin(canonical)) is not None:
                return tracker.record_duplicate(trial, twin)
            model = evaluator.build(arch)
            lat = evaluator.latency(arch, model, task)
            trial.set_user_attr("latency_ms", lat.ms)
            if ctx.max_latency_ms is not None and lat.ms > ctx.max_latency_ms:
                trial.set_user_attr("pruned_reason", f"latency {lat.ms:.3f} ms > --max-latency-ms {ctx.max_latency_ms}")
                raise optuna.TrialPruned()

            def on_epoch(epoch: int, acc: float) -> None:
                if tracker.record_epoch(trial, epoch, acc):
                    trial.set_user_attr("pruned_reason", f"pruner stopped it after epoch {epoch}")
                    raise optuna.TrialPruned()

            try:
                trained = evaluator.train(model, on_epoch=on_epoch, on_step=ctx.progress.trial_progress)
            except (TrainingDiverged, torch.OutOfMemoryError, MemoryError) as e:
                trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}")
                raise TrialFailed(str(e)) from e
            result = evaluator.result(arch, model, trained, lat)
            tracker.record_result(trial, result)
            tracker.save_weights(trial, model.state_dict())  # while RUNNING: artifacts refuse finished trials
            return tracker.values(result)

        failed = 0

        def on_done(study: optuna.Study, ft: optuna.trial.FrozenTrial) -> None:
            nonlocal failed
            if not ft.user_attrs.get("surplus"):
                ctx.progress.trial_finished(ft)
            # FAIL trials do not count towards the target; a worker gives up after as many failures
            # as the target, so a budget no network survives (lr too high...) still ends
            failed += ft.state == optuna.trial.TrialState.FAIL and not ft.user_attrs.get("surplus")
            if failed >= target or not tracker.wait_for_slot(target, deadline):
                study.stop()

        tracker.study.optimize(objective, n_trials=None, timeout=ctx.timeout, catch=(TrialFailed,),
                               callbacks=[on_done])


@STRATEGIES.register("random")
class RandomStrategy(SamplerStrategy):
    name = "random"
    description = "uniform random architectures (Optuna RandomSampler), each trained standalone: the honest baseline"

    def make_sampler(self, seed: int, ctx: SearchContext) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)


@STRATEGIES.register("tpe")
class TPEStrategy(SamplerStrategy):
    name = "tpe"
    description = "Optuna's TPE sampler (multivariate, multi-objective aware), each architecture trained standalone"

    def make_sampler(self, seed: int, ctx: SearchContext) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=max(3, min(10, ctx.trials // 3)))


@STRATEGIES.register("nsga2")
class NSGA2Strategy(SamplerStrategy):
    name = "nsga2"
    description = "Optuna's NSGA-II evolutionary sampler for the accuracy/latency front, trained standalone"

    def make_sampler(self, seed: int, ctx: SearchContext) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, ctx.trials // 4)))
