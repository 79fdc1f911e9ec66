"""NNI 3.0's strategies on our spaces: nni:random, nni:evolution (multi-trial), nni:darts,
nni:random-one-shot (one-shot).

Registered here; NNI itself is imported only when one of them runs (``sparsenas.interop.nni``), so
sparsenas works without the ``nni`` extra. Every architecture they evaluate becomes a trial of our
study through the same steps as random/tpe/nsga2 (:func:`evaluate_in_trial`), so the trials carry
the same user attrs and saved weights, and the dashboard, report and export treat them alike.
What NNI did (its strategy, engine time, overhead per model) goes into the study attr ``nni``.
"""
from __future__ import annotations

import math
import time
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..arch import Arch
from ..errors import SparseNASError
from ..search_spaces.base import SearchSpace
from ..task import Task
from . import STRATEGIES
from .base import SearchContext, Strategy
from .budget import Deadline, budget_seconds, check_share, is_set
from .samplers import TrialFailed, evaluate_trial
from .options import Option

ONE_SHOT_SHARE = 0.5  # of --timeout for NNI's supernet: it derives one architecture (DARTS) or a ranked few
MAX_EPOCHS = 10_000   # Lightning needs a cap; under a time budget max_time ends the training first


def evaluate_in_trial(ctx: SearchContext, arch: Arch, strategy: str,
                      budget_epochs: int | None = None) -> FrozenTrial | None:
    """Train ``arch`` standalone and record it as one trial, exactly as the Optuna-sampler strategies
    do (same attrs, epochs as intermediate values, weights as an artifact). Returns the finished trial
    (None when it failed)."""
    tracker = ctx.tracker
    study = tracker.study
    study.enqueue_trial(dict(arch.choices))  # the next ask() takes these params whatever the sampler
    with warnings.catch_warnings():  # heartbeats only run inside optimize(); ask/tell trials go without
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        trial = study.ask()
    tracker.record_worker(trial)
    state, values = TrialState.COMPLETE, None
    try:
        values = evaluate_trial(ctx, trial, strategy, None if budget_epochs is None
                                else ctx.evaluator.with_budget(epochs=budget_epochs, seconds=None))
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except TrialFailed:
        state = TrialState.FAIL
    study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)
    ft = next(t for t in reversed(study.get_trials(deepcopy=False)) if t.number == trial.number)
    ctx.progress.trial_finished(ft)
    return ft if state == TrialState.COMPLETE else None


class NNIMultiTrial(Strategy):
    kind: str  # run_multi_trial kind
    options = (
        Option("latency_target_ms", float, None, "NNI's strategies maximise one number: with a target they get "
               "MnasNet's reward accuracy * (latency / target) ** latency_exponent instead of accuracy alone"),
        Option("latency_exponent", float, -0.07, "exponent w of the MnasNet reward (MnasNet's soft constraint: -0.07)"),
    )

    def check(self, space: SearchSpace, task: Task, options: dict[str, Any]) -> None:
        from ..interop.nni import require_nni

        require_nni()
        target = options.get("latency_target_ms")
        if target is not None and not (float(target) > 0 and math.isfinite(float(target))):
            raise SparseNASError(f"strategy '{self.name}': --latency-target-ms must be a positive number of "
                                 f"milliseconds, got {target}")

    @staticmethod
    def reward(ctx: SearchContext, values: list[float]) -> float:
        """What NNI maximises for a finished trial: accuracy, or MnasNet's latency-aware reward."""
        target = ctx.options.get("latency_target_ms")
        if target is None:
            return float(values[0])
        latency = float(values[list(ctx.tracker.objectives).index("latency_ms")])
        return float(values[0]) * (latency / float(target)) ** float(ctx.options.get("latency_exponent", -0.07))

    def run(self, ctx: SearchContext) -> None:
        from ..interop.nni import run_multi_trial, value_choice_space

        objectives = list(ctx.tracker.objectives)
        if ctx.options.get("latency_target_ms") is not None and "latency_ms" not in objectives:
            raise SparseNASError(f"strategy '{self.name}': --latency-target-ms needs the latency objective; this "
                                 f"study's objectives are {', '.join(objectives)}")
        remaining = ctx.trials - len(ctx.tracker.finished())
        if remaining <= 0:
            return
        ctx.tracker.study.sampler = optuna.samplers.RandomSampler(seed=ctx.seed)  # only replays enqueued params

        def evaluate(arch: Arch) -> float | None:
            ft = evaluate_in_trial(ctx, arch, self.name)
            return None if ft is None else self.reward(ctx, ft.values)

        model_space = value_choice_space(ctx.space, ctx.task, ctx.evaluator.build)
        info = run_multi_trial(self.kind, model_space, evaluate, max_models=remaining, max_seconds=ctx.timeout,
                               seed=ctx.seed + len(ctx.tracker.study.trials))
        target = ctx.options.get("latency_target_ms")
        reward = "accuracy" if target is None else \
            f"accuracy * (latency_ms / {target:g}) ** {ctx.options.get('latency_exponent', -0.07):g}"
        ctx.tracker.set_study_attr("nni", {"strategy": self.name, "reward": reward, **info})


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
    options = (
        Option("search_epochs", int, None, "epochs of NNI's supernet training (default --epochs; with --timeout, "
               "as many as fit in --budget-share of it)"),
        Option("budget_share", float, ONE_SHOT_SHARE, "with --timeout and no --search-epochs: the share of the budget "
               "NNI's supernet trains for (Lightning's max_time); the rest retrains the derived architectures"),
        Option("retrain_epochs", int, None, "standalone training epochs of the derived architectures (default --epochs)"),
        Option("retrain_top", int, None, "derived architectures to retrain and log (default 1; DARTS derives one)"),
        Option("target_sparsity", float, None, "sparse_darts: sparsity of the supernet's sparse ops (default 0.9)"),
        Option("channels", int, None, "sparse_darts: initial channels C (8, 12, 16; default 8)"),
        Option("cells", int, None, "sparse_darts: cells of the supernet and derived network (3, 5, 8; default 5)"),
    )

    def check(self, space: SearchSpace, task: Task, options: dict[str, Any]) -> None:
        from ..interop.nni import check_one_shot, require_nni

        require_nni()
        self._share(options)
        check_one_shot(space, task, options)

    def _share(self, options: dict[str, Any]) -> float:
        share = options.get("budget_share")
        return check_share(self.name, ONE_SHOT_SHARE if share is None else share)

    def run(self, ctx: SearchContext) -> None:
        from ..interop.nni import check_one_shot, run_one_shot

        if ctx.tracker.finished():
            ctx.progress.log(f"{self.name}: the study already holds its result; nothing to do")
            return
        fixed = check_one_shot(ctx.space, ctx.task, ctx.options)
        budget = ctx.evaluator.budget
        share = self._share(ctx.options)
        seconds = None if is_set(ctx, "search_epochs") else budget_seconds(ctx, share)
        # sized by time, the epoch count only caps it (Lightning's max_time ends the training)
        epochs = int(ctx.options.get("search_epochs") or (MAX_EPOCHS if seconds else budget.epochs))
        retrain_top = int(ctx.options.get("retrain_top") or 1)
        deadline = Deadline(time.perf_counter(), ctx.timeout)
        ctx.progress.log(f"{self.name}: training NNI's supernet for "
                         + (f"{seconds:.0f} s ({share:g} of --timeout)" if seconds else f"{epochs} epoch(s)"))
        out = run_one_shot(self.kind, ctx.space, ctx.data, fixed, epochs=epochs, batch_size=budget.batch_size,
                           lr=budget.lr, seed=ctx.seed, candidates=max(retrain_top, ctx.trials), seconds=seconds)
        ctx.tracker.study.sampler = optuna.samplers.RandomSampler(seed=ctx.seed)
        retrain = int(ctx.options.get("retrain_epochs") or budget.epochs)
        derived = []
        for rank, (label, arch, supernet_acc) in enumerate(out["archs"][:retrain_top]):
            if rank and deadline.passed():
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
