"""NNI 3.0's strategies on our spaces: nni:random, nni:evolution (multi-trial), nni:darts,
nni:random-one-shot (one-shot).

Registered here; NNI itself is imported only when one of them runs (``sparsenas.interop.nni``), so
sparsenas works without the ``nni`` extra. Every architecture they evaluate becomes a trial of our
study through the same steps as random/tpe/nsga2 (:func:`evaluate_in_trial`), so the trials carry
the same user attrs and saved weights, and the dashboard, report and export treat them alike.
What NNI did (its strategy, engine time, overhead per model) goes into the study attr ``nni``.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import replace
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from ..arch import Arch
from ..evaluators import TrainingDiverged
from ..search_spaces.base import SearchSpace
from ..task import Task
from . import STRATEGIES
from .base import SearchContext, Strategy

try:  # strategies declare their options where the platform has Option (flags, config files)
    from .options import Option
except ImportError:  # a platform without declared options passes every flag through ctx.options
    Option = None  # type: ignore[assignment,misc]


def _record(tracker: Any, trial: optuna.Trial, what: str, *args: Any) -> None:
    """``tracker.record_<what>(trial, ...)`` where the tracker has it (worker, latency, reason), else
    the same user attr set directly, so these trials carry what the sampler strategies' trials do."""
    method = getattr(tracker, f"record_{what}", None)
    if method is not None:
        method(trial, *args)
    elif what == "latency":
        trial.set_user_attr("latency_ms", float(args[0]))
    elif what == "reason":
        trial.set_user_attr("pruned_reason" if args[0] == "pruned" else "fail_reason", args[1])


def evaluate_in_trial(ctx: SearchContext, arch: Arch, strategy: str,
                      budget_epochs: int | None = None) -> FrozenTrial | None:
    """Train ``arch`` standalone and record it as one trial, exactly as the Optuna-sampler strategies
    do (same attrs, epochs as intermediate values, weights as an artifact). Returns the finished trial
    (None when it failed)."""
    tracker, space, task, evaluator = ctx.tracker, ctx.space, ctx.task, ctx.evaluator
    study = tracker.study
    study.enqueue_trial(dict(arch.choices))  # the next ask() takes these params whatever the sampler
    with warnings.catch_warnings():  # heartbeats only run inside optimize(); ask/tell trials go without
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        trial = study.ask()
    _record(tracker, trial, "worker")
    arch = space.suggest(trial, task)
    canonical = space.canonical(arch).digest()
    tracker.record_arch(trial, arch, strategy=strategy, canonical_digest=canonical)
    ctx.progress.trial_started(trial.number, arch.digest())
    state, values = TrialState.COMPLETE, None
    if (twin := tracker.twin(canonical)) is not None:
        values = tracker.record_duplicate(trial, twin)
    else:
        model = evaluator.build(arch)
        lat = evaluator.latency(arch, model, task)
        _record(tracker, trial, "latency", lat.ms)
        if ctx.max_latency_ms is not None and lat.ms > ctx.max_latency_ms:
            _record(tracker, trial, "reason", "pruned", f"latency {lat.ms:.3f} ms > --max-latency-ms {ctx.max_latency_ms}")
            state = TrialState.PRUNED
        else:
            ev = evaluator if budget_epochs is None else _with_epochs(evaluator, budget_epochs)

            def on_epoch(epoch: int, acc: float) -> None:
                if tracker.record_epoch(trial, epoch, acc):
                    _record(tracker, trial, "reason", "pruned", f"pruner stopped it after epoch {epoch}")
                    raise optuna.TrialPruned()

            try:
                trained = ev.train(model, on_epoch=on_epoch, on_step=ctx.progress.trial_progress)
            except optuna.TrialPruned:
                state = TrialState.PRUNED
            except (TrainingDiverged, torch.OutOfMemoryError, MemoryError) as e:
                _record(tracker, trial, "reason", "failed", f"{type(e).__name__}: {e}")
                state = TrialState.FAIL
            else:
                result = evaluator.result(arch, model, trained, lat)
                tracker.record_result(trial, result)
                tracker.save_weights(trial, model.state_dict())  # while RUNNING: artifacts refuse finished trials
                values = tracker.values(result)
    study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)
    ft = next(t for t in reversed(study.get_trials(deepcopy=False)) if t.number == trial.number)
    ctx.progress.trial_finished(ft)
    return ft if state == TrialState.COMPLETE else None


def _with_epochs(evaluator: Any, epochs: int) -> Any:
    """A shallow copy of ``evaluator`` training for ``epochs`` (the one-shot retrain budget)."""
    import copy

    ev = copy.copy(evaluator)
    ev.budget = replace(evaluator.budget, epochs=epochs, seconds=None)
    return ev


class NNIMultiTrial(Strategy):
    kind: str  # run_multi_trial kind

    def check(self, space: SearchSpace, task: Task, options: dict[str, Any]) -> None:
        from ..interop.nni import require_nni

        require_nni()

    def run(self, ctx: SearchContext) -> None:
        from ..interop.nni import run_multi_trial, value_choice_space

        remaining = ctx.trials - len(ctx.tracker.finished())
        if remaining <= 0:
            return
        ctx.tracker.study.sampler = optuna.samplers.RandomSampler(seed=ctx.seed)  # only replays enqueued params

        def evaluate(arch: Arch) -> float | None:
            ft = evaluate_in_trial(ctx, arch, self.name)
            return None if ft is None else float(ft.values[0])

        model_space = value_choice_space(ctx.space, ctx.task, ctx.evaluator.build)
        info = run_multi_trial(self.kind, model_space, evaluate, max_models=remaining, max_seconds=ctx.timeout,
                               seed=ctx.seed + len(ctx.tracker.study.trials))
        ctx.tracker.set_study_attr("nni", {"strategy": self.name, **info})


@STRATEGIES.register("nni:random")
class NNIRandom(NNIMultiTrial):
    name = "nni:random"
    kind = "random"
    description = "NNI 3.0's Random strategy on this space (needs the nni extra), each architecture trained standalone"


@STRATEGIES.register("nni:evolution")
class NNIEvolution(NNIMultiTrial):
    name = "nni:evolution"
    kind = "evolution"
    description = ("NNI 3.0's RegularizedEvolution (aging evolution, validation accuracy) on this space (needs the "
                   "nni extra), each architecture trained standalone")


class NNIOneShot(Strategy):
    kind: str  # run_one_shot kind
    if Option is not None:
        options = (
            Option("search_epochs", int, None, "epochs of NNI's supernet training (default --epochs)"),
            Option("retrain_epochs", int, None, "standalone training epochs of the derived architectures (default --epochs)"),
            Option("retrain_top", int, None, "derived architectures to retrain and log (default 1; DARTS derives one)"),
            Option("target_sparsity", float, None, "sparse_darts: sparsity of the supernet's sparse ops (default 0.9)"),
            Option("channels", int, None, "sparse_darts: initial channels C (8, 12, 16; default 8)"),
            Option("cells", int, None, "sparse_darts: cells of the supernet and derived network (3, 5, 8; default 5)"),
        )

    def check(self, space: SearchSpace, task: Task, options: dict[str, Any]) -> None:
        from ..interop.nni import check_one_shot, require_nni

        require_nni()
        check_one_shot(space, task, options)

    def run(self, ctx: SearchContext) -> None:
        from ..interop.nni import check_one_shot, run_one_shot

        if ctx.tracker.finished():
            ctx.progress.log(f"{self.name}: the study already holds its result; nothing to do")
            return
        fixed = check_one_shot(ctx.space, ctx.task, ctx.options)
        budget = ctx.evaluator.budget
        epochs = int(ctx.options.get("search_epochs") or budget.epochs)
        retrain_top = int(ctx.options.get("retrain_top") or 1)
        start = time.perf_counter()
        ctx.progress.log(f"{self.name}: training NNI's supernet for {epochs} epoch(s)")
        out = run_one_shot(self.kind, ctx.space, ctx.data, fixed, epochs=epochs, batch_size=budget.batch_size,
                           lr=budget.lr, seed=ctx.seed, candidates=max(retrain_top, ctx.trials))
        ctx.tracker.study.sampler = optuna.samplers.RandomSampler(seed=ctx.seed)
        retrain = int(ctx.options.get("retrain_epochs") or budget.epochs)
        derived = []
        for rank, (label, arch, supernet_acc) in enumerate(out["archs"][:retrain_top]):
            if rank and ctx.timeout is not None and time.perf_counter() - start > ctx.timeout:
                break
            evaluate_in_trial(ctx, arch, self.name, budget_epochs=retrain)
            derived.append({"label": label, "arch_digest": arch.digest(), "supernet_val_accuracy": supernet_acc})
        ctx.tracker.set_study_attr("nni", {"strategy": self.name, "engine": "sequential (in-process, Lightning)",
                                           "fixed": fixed, "derived": derived,
                                           **{k: v for k, v in out.items() if k != "archs"}})


@STRATEGIES.register("nni:darts")
class NNIDarts(NNIOneShot):
    name = "nni:darts"
    kind = "darts"
    description = ("NNI 3.0's one-shot DARTS on the space's LayerChoice form (sparse_darts; needs the nni extra); "
                   "the argmax architecture is retrained standalone")


@STRATEGIES.register("nni:random-one-shot")
class NNIRandomOneShot(NNIOneShot):
    name = "nni:random-one-shot"
    kind = "random-one-shot"
    description = ("NNI 3.0's RandomOneShot (SPOS) supernet on the space's LayerChoice form (sparse_darts; needs the "
                   "nni extra); random paths ranked with inherited weights, the best retrained standalone")
