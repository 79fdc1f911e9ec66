"""entangled: gradient search on the weight-entangled supernet (TangleNAS), then NSGA-II over its
inherited weights (Once-for-All style), then standalone retraining of the best.

Phases, all logged to the study:
1. **gradient search** (``search_epochs``): the supernet in gradient mode; first-order DARTS
   alternates an architecture step (Adam on the alphas, validation batch) and a weight step (SGD,
   training batch); ``--mixing dirichlet`` samples the mixing
   weights DrNAS-style. The per-decision argmax is the *derived* architecture (study attrs
   ``entangled_derived_arch`` and ``entangled_alphas``). Gradient mode fixes the downsampling
   placement (see :mod:`sparsenas.supernets.entangled`).
2. **sandwich training** (``sandwich_epochs``): single-path steps on the largest + smallest +
   ``sandwich_random`` random children (any placement), so that every child's slice is usable
   with inherited weights.
3. **NSGA-II over inherited weights**: an in-memory Optuna study proposes architectures (the
   derived, largest and smallest first); each is extracted (BatchNorm recalibrated on
   ``calib_batches`` training batches), fine-tuned for ``finetune_steps`` SGD steps (default 10;
   0 = raw inherited weights, which after minutes of supernet training are near chance for most
   children), its validation accuracy measured (``inherited_accuracy``; the raw one is
   ``inherited_accuracy_raw``) and its latency taken from the evaluator: seconds per architecture. Every one is a trial of the real study
   (``phase=inherited``). It evaluates ``max(--trials, tau_archs + 2)`` distinct architectures,
   over the supernet's ``choices`` (g2g_mlp's supernet searches ``dst="off"`` only: dynamic sparse
   training is a training procedure, meaningless for inherited weights).
4. **retraining**: the ``retrain_top`` best architectures of the inherited Pareto front plus
   architectures spread evenly over the inherited-accuracy ranking, up to ``tau_archs`` in all,
   are trained from scratch for ``retrain_epochs`` and logged again (``phase=retrained``, with
   ``standalone_accuracy`` and ``inherited_accuracy``). Kendall's tau between the two accuracies
   is printed and stored on the study (``kendall_tau``, ``kendall_tau_pvalue``, ``kendall_tau_n``).

With ``--timeout`` and neither epoch count given, phases 1-2 are sized to ``budget_share`` of it
(default 0.4, from a probe of a few steps of each phase, in the ratio of the default epoch counts);
phase 3 stops at half of what is left and phase 4 starts a retraining only while the last one's
duration still fits: the derived (argmax) architecture first, then as above, then the rest of the
inherited front, then the other inherited estimates, the least dominated first. The search
runs at ``threads`` (default 1) torch threads. Every option above is a ``nas search`` flag (declared in
``EntangledStrategy.options``), a key of a config file's ``[options]`` table, or ``options={...}``.
"""
from __future__ import annotations

import itertools
import math
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

import optuna
import torch
import torch.nn.functional as F

from .. import distributed
from ..arch import Arch
from ..errors import SparseNASError
from ..evaluators import TrainResult, accuracy
from ..ops import recalibrate_bn
from ..search_spaces.base import SearchSpace
from ..supernets.entangled import MIXINGS
from ..supernets.entangled_trainer import EntangledTrainer
from ..supernets.registry import find_supernet
from ..task import Task
from ..timing import num_threads
from . import STRATEGIES
from .base import SearchContext, Strategy
from .budget import Deadline, budget_seconds, check_share, is_set, probe_epochs, stored_plan
from .options import options_of, resolve_options, setting
from .supernet import retrain_and_log, train_supernet

PLAN_ATTR = "entangled_budget_plan"


@dataclass(frozen=True)
class EntangledOptions:
    search_epochs: int = setting(2, "epochs of gradient search on the supernet (default {default}; g2g_mlp 10)",
                                 decided_at_run_time=True)
    sandwich_epochs: int = setting(2, "epochs of sandwich training (largest + smallest + random children; default "
                                   "{default}; g2g_mlp 30)", decided_at_run_time=True)
    sandwich_random: int = setting(2, "random children per sandwich step")
    retrain_epochs: int = setting(3, "standalone training epochs of the retrained architectures (default {default}; "
                                  "g2g_mlp 20)", decided_at_run_time=True)
    retrain_top: int = setting(3, "best architectures of the inherited front to retrain")
    tau_archs: int = setting(10, "architectures retrained in all, for Kendall's tau of the ranking")
    calib_batches: int = setting(4, "training batches to recalibrate BatchNorm of an extracted child")
    finetune_steps: int = setting(10, "SGD steps on an extracted child before validating it (0: raw)")
    # the trainer refreshes masks every 50 steps by default; the supernet search more often
    mask_every: int = setting(20, "steps between magnitude-mask refreshes")
    arch_lr: float = setting(6e-3, "Adam learning rate of the architecture weights")
    # cuts rare spikes, not the usual steps (see EntangledTrainer._clip)
    grad_clip: float = setting(50.0, "norm the supernet's weight gradient is clipped to (per step)")
    mixing: str = setting("softmax", "how candidate weights are mixed: softmax(alpha), or Dirichlet samples (DrNAS)",
                          choices=MIXINGS)
    budget_share: float = setting(0.4, "with --timeout and no epoch counts: the share of the budget phases 1-2 are "
                                  "sized to (the rest: inherited search, then retraining)")
    threads: int = setting(1, "torch threads for the search (config file only)")  # see EntangledStrategy.run

    @classmethod
    def from_ctx(cls, ctx: SearchContext) -> "EntangledOptions":
        return cls.from_options(ctx.options, ctx.space.name)

    @classmethod
    def from_options(cls, options: dict[str, Any], space: str) -> "EntangledOptions":
        """The options for a search of ``space``; unknown keys and bad values raise one clear SparseNASError."""
        opts = resolve_options("entangled", options_of(cls), options)
        # the space's supernet may set its own defaults (an MLP epoch takes a second, an MBV2 one minutes)
        space_defaults = getattr(find_supernet(space, "entangled"), "default_options", {})
        o = cls(**{**space_defaults, **opts})
        for name in ("search_epochs", "calib_batches", "mask_every", "threads"):
            if int(getattr(o, name)) < 1:
                raise SparseNASError(f"entangled: {name.replace('_', '-')} must be at least 1, got {getattr(o, name)}")
        for name in ("finetune_steps", "sandwich_epochs", "sandwich_random", "retrain_epochs", "retrain_top", "tau_archs"):
            if int(getattr(o, name)) < 0:
                raise SparseNASError(f"entangled: {name.replace('_', '-')} must be 0 or more, got {getattr(o, name)}")
        if o.mixing not in MIXINGS:
            raise SparseNASError(f"entangled: unknown mixing '{o.mixing}'; allowed: {', '.join(MIXINGS)}")
        check_share("entangled", o.budget_share)
        for name in ("arch_lr", "grad_clip"):
            v = getattr(o, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
                raise SparseNASError(f"entangled: {name.replace('_', '-')} must be a positive number, got {v!r}")
        return o


@STRATEGIES.register("entangled")
class EntangledStrategy(Strategy):
    name = "entangled"
    runs_distributed = True
    description = ("weight-entangled supernet (TangleNAS): gradient search mixing candidate weights in one op, "
                   "then NSGA-II over inherited weights (about a second per arch), top archs retrained")
    options = options_of(EntangledOptions)

    def check(self, space: SearchSpace, task: Task, options: dict[str, Any]) -> None:
        EntangledOptions.from_options(options, space.name)  # bad options are refused before the study exists

    def run(self, ctx: SearchContext) -> None:
        opts = EntangledOptions.from_ctx(ctx)
        # One torch thread by default: on the shared 2-core machine, training the largest child at
        # 2 threads took 3.3 s of CPU per step against 0.47 s at 1 thread (OpenMP threads spinning
        # under load; timing.py and the tests pin 1 thread for the same reason). Option ``threads``.
        with num_threads(opts.threads):
            self._run(ctx, opts)

    def _run(self, ctx: SearchContext, opts: EntangledOptions) -> None:
        tracker = ctx.tracker
        done = distributed.broadcast(distributed.is_main() and tracker.read_study().kendall_tau_n is not None)
        if done:  # a finished entangled search: nothing to redo
            self._say(ctx, f"study '{tracker.study.study_name}' already holds a finished entangled search; "
                           "pass another --study to search again")
            return
        deadline = Deadline(time.perf_counter(), ctx.timeout)
        opts = self._fit_budget(ctx, opts)
        trainer = EntangledTrainer(ctx, opts)
        train_supernet(ctx, trainer)
        if not distributed.is_main():  # the other ranks only train; rank 0 searches, retrains and logs
            return
        supernet, derived = trainer.supernet, trainer.derive()
        timings: dict[str, float] = dict(trainer.seconds)
        tracker.set_study_attr("entangled_derived_arch", derived.to_json())
        tracker.set_study_attr("entangled_alphas", supernet.alpha_summary())
        self._say(ctx, f"entangled: derived architecture (argmax alpha) {derived.digest()}")

        t = time.perf_counter()
        # the inherited search gets half of what the supernet left, the retraining the rest
        share = deadline.spent()
        records, front = self._inherited_search(ctx, supernet, opts, derived, deadline.share(share + (1 - share) / 2))
        timings["inherited_search_s"] = time.perf_counter() - t
        timings["seconds_per_arch"] = timings["inherited_search_s"] / max(1, len(records))

        t = time.perf_counter()
        pairs = self._retrain(ctx, opts, records, front, deadline, derived)
        timings["retrain_s"] = time.perf_counter() - t
        tracker.set_study_attr("entangled_timings", {k: round(v, 2) for k, v in timings.items()})
        self._rank_quality(ctx, pairs)

    def _fit_budget(self, ctx: SearchContext, opts: EntangledOptions) -> EntangledOptions:
        """Under --timeout with neither epoch count given: the gradient and sandwich epochs that fill
        ``budget_share`` of it, in the ratio of the defaults, from a probe of a few steps of each
        (stored on the study, so a resumed run keeps them)."""
        seconds = budget_seconds(ctx, opts.budget_share)
        if seconds is None or is_set(ctx, "search_epochs", "sandwich_epochs"):
            return opts

        def plan() -> dict[str, Any]:
            probe = replace(opts, search_epochs=1, sandwich_epochs=1)
            grad, sand = probe_epochs(lambda: EntangledTrainer(ctx, probe), [0, 1], seed=ctx.seed)
            ratio = opts.search_epochs / max(1, opts.search_epochs + opts.sandwich_epochs)
            scale = seconds / (ratio * grad.epoch_s + (1 - ratio) * sand.epoch_s)
            n_grad = max(1, round(scale * ratio))
            n_sand = max(0, int((seconds - n_grad * grad.epoch_s) // max(sand.epoch_s, 1e-6))) if opts.sandwich_epochs else 0
            return {"search_epochs": n_grad, "sandwich_epochs": n_sand, "gradient_epoch_s": round(grad.epoch_s, 3),
                    "sandwich_epoch_s": round(sand.epoch_s, 3), "budget_s": round(seconds, 1),
                    "budget_share": opts.budget_share}

        p = stored_plan(ctx, PLAN_ATTR, plan)
        self._say(ctx, f"entangled: {p['search_epochs']} gradient epoch(s) of ~{p['gradient_epoch_s']:.1f} s and "
                       f"{p['sandwich_epochs']} sandwich epoch(s) of ~{p['sandwich_epoch_s']:.1f} s fill "
                       f"{p['budget_share']:g} of --timeout ({p['budget_s']:.0f} s)")
        return replace(opts, search_epochs=int(p["search_epochs"]), sandwich_epochs=int(p["sandwich_epochs"]))

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _say(ctx: SearchContext, message: str) -> None:
        if ctx.progress.enabled:
            ctx.progress.log(message)
        else:
            print(message, file=sys.stderr)

    def _inherited_search(self, ctx: SearchContext, supernet, opts: EntangledOptions, derived: Arch,
                          deadline: float | None) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """NSGA-II (in memory) over inherited weights; every evaluated arch becomes a trial of the study."""
        space, task, tracker = ctx.space, ctx.task, ctx.tracker
        choices = space.choices(task)  # the study's distributions; the supernet may search a subset
        searched = supernet.choices
        calib_loader = ctx.data.loader("train", ctx.evaluator.budget.batch_size, shuffle=True, seed=ctx.seed + 2)
        calib = [x for x, _ in itertools.islice(calib_loader, opts.calib_batches)]
        supernet.eval()
        n_eval = max(ctx.trials, opts.tau_archs + 2)  # distinct architectures to evaluate
        sampler = optuna.samplers.NSGAIISampler(seed=ctx.seed, population_size=max(4, min(20, n_eval // 3)))
        inner = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        for arch in (derived, supernet.extreme(True), supernet.extreme(False)):
            inner.enqueue_trial(dict(arch.choices), skip_if_exists=True)
        records: dict[str, dict[str, Any]] = {}

        def objective(trial: optuna.Trial) -> tuple[float, float]:
            arch = Arch(space.name, space.version, {k: trial.suggest_categorical(k, v) for k, v in searched.items()})
            key = space.canonical(arch).digest()
            if key in records:  # NSGA-II may propose one network twice (or under two names): evaluate it once
                return records[key]["accuracy"], records[key]["latency_ms"]
            ctx.progress.trial_started(len(tracker.study.trials), f"inherited {key}")
            t0 = time.perf_counter()
            child = supernet.extract(arch, calib)
            raw = accuracy(child, ctx.data.val, torch.device("cpu"))
            if opts.finetune_steps:
                self._finetune(ctx, child, opts, calib)
            val = accuracy(child, ctx.data.val, torch.device("cpu"))
            test = accuracy(child, ctx.data.test, torch.device("cpu"))
            lat = ctx.evaluator.latency(arch, child)
            secs = time.perf_counter() - t0
            result = ctx.evaluator.result(arch, child, TrainResult(val, test, [], 0, secs), lat)
            records[key] = {"arch": arch, "accuracy": val, "latency_ms": lat.ms}
            if ctx.max_latency_ms is not None and lat.ms > ctx.max_latency_ms:
                records[key]["over_latency"] = True
                return val, lat.ms
            # the fine-tuned child's weights go with it: an export reproduces the figures logged here
            ft = tracker.log_arch(arch, choices, result, weights=child.state_dict(), strategy=self.name,
                                  stage="inherited", inherited_accuracy=val, inherited_accuracy_raw=raw,
                                  finetune_steps=opts.finetune_steps,
                                  derived=arch == derived, eval_seconds=round(secs, 3))
            records[key]["trial"] = ft.number
            ctx.progress.trial_finished(ft)
            return val, lat.ms

        def enough(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
            if len(records) >= n_eval:  # NSGA-II repeats architectures; count distinct ones
                study.stop()

        timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
        inner.optimize(objective, n_trials=5 * n_eval, timeout=timeout, callbacks=[enough])
        front = []
        for t in inner.best_trials:
            key = space.canonical(Arch(space.name, space.version, t.params)).digest()
            if key in records and key not in front and not records[key].get("over_latency"):
                front.append(key)
        return records, front

    @staticmethod
    def _finetune(ctx: SearchContext, child: torch.nn.Module, opts: EntangledOptions, calib: list) -> None:
        """A few SGD steps on the extracted child (masks fixed), then BatchNorm recalibrated again: on
        a supernet trained for minutes, raw inherited accuracy is near chance for most children."""
        budget = ctx.evaluator.budget
        opt = torch.optim.SGD(child.parameters(), lr=0.4 * budget.lr, momentum=0.9, nesterov=True)
        loader = itertools.cycle(ctx.data.loader("train", budget.batch_size, shuffle=True, seed=ctx.seed + 4))
        child.train()
        for x, y in itertools.islice(loader, opts.finetune_steps):
            loss = F.cross_entropy(child(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        recalibrate_bn(child, calib)
        child.eval()

    def _retrain(self, ctx: SearchContext, opts: EntangledOptions, records: dict[str, dict[str, Any]],
                 front: list[str], deadline: Deadline, derived: Arch) -> list[tuple[float, float]]:
        """Retrain the derived architecture, the best and a spread of the rest from scratch (while
        the budget fits another); returns (inherited, standalone) pairs."""
        ok = {k: r for k, r in records.items() if "trial" in r}
        top = sorted(front, key=lambda k: -ok[k]["accuracy"])[:opts.retrain_top]
        argmax = ctx.space.canonical(derived).digest()
        if argmax in ok:  # the gradient search's own answer comes first, on the front or not
            top = [argmax] + [k for k in top if k != argmax]
        ranked = [k for k in sorted(ok, key=lambda k: ok[k]["accuracy"]) if k not in top]
        extra = max(0, opts.tau_archs - len(top))
        if extra >= len(ranked):
            top += ranked
        elif extra:  # evenly spaced over the inherited ranking, both ends included (spacing >= 1: distinct)
            top += [ranked[round(i * (len(ranked) - 1) / max(1, extra - 1))] for i in range(extra)]
        sample = set(top)  # Kendall's tau is measured on these; the front's rest would bias it to the top
        if deadline.timeout is not None:
            # budget left after those: verify the rest of the inherited front, then the other inherited
            # estimates, the least dominated first (each retrained network can join the standalone front)
            top += [k for k in sorted(front, key=lambda k: -ok[k]["accuracy"]) if k not in top]
            top += [k for k in _least_dominated_first(ok) if k not in top]
        evaluator = ctx.evaluator.with_budget(epochs=opts.retrain_epochs)
        pairs = []
        if opts.retrain_epochs == 0:
            return pairs
        for key in top:
            if not deadline.fits():
                self._say(ctx, "entangled: another retraining would end after --timeout; no more retraining")
                break
            rec = ok[key]
            _, trained = retrain_and_log(
                ctx, evaluator, rec["arch"], strategy=self.name, what=f"retrain {key}", deadline=deadline,
                latency_after=True, stage="retrained",
                extra=lambda _, trained: {"standalone_accuracy": trained.val_accuracy},
                inherited_accuracy=rec["accuracy"], inherited_trial=rec["trial"], pareto=key in front)
            if trained is not None and key in sample:
                pairs.append((rec["accuracy"], trained.val_accuracy))
        return pairs

    def _rank_quality(self, ctx: SearchContext, pairs: list[tuple[float, float]]) -> None:
        from scipy.stats import kendalltau

        n = len(pairs)
        tau = p = None
        if n >= 2:
            res = kendalltau([a for a, _ in pairs], [b for _, b in pairs])
            tau = None if math.isnan(res.statistic) else float(res.statistic)
            p = None if math.isnan(res.pvalue) else float(res.pvalue)
        ctx.tracker.set_study_attr("kendall_tau", tau)
        ctx.tracker.set_study_attr("kendall_tau_pvalue", p)
        ctx.tracker.set_study_attr("kendall_tau_n", n)
        shown = "n/a" if tau is None else f"{tau:.3f} (p={p:.3g})" if p is not None else f"{tau:.3f}"
        self._say(ctx, f"entangled: Kendall tau between inherited and standalone accuracy over {n} "
                       f"architectures: {shown}")


def _least_dominated_first(records: dict[str, dict[str, Any]]) -> list[str]:
    """Keys of ``records`` ordered by how many others beat them on both accuracy (higher) and latency
    (lower), a cheap Pareto rank for the few dozen estimates a search makes; ties by accuracy."""
    def beaten(k: str) -> int:
        a, ms = records[k]["accuracy"], records[k]["latency_ms"]
        return sum(r["accuracy"] >= a and r["latency_ms"] <= ms and (r["accuracy"] > a or r["latency_ms"] < ms)
                   for r in records.values())

    return sorted(records, key=lambda k: (beaten(k), -records[k]["accuracy"]))
