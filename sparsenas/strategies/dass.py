"""dass: Differentiable Architecture Search for Sparse networks (Mousavi et al., ACM TECS 2023).

DARTS' bilevel search on a mixed-op supernet whose convolutions carry learned-score (HYDRA) masks:
network weights (or scores) step on the train split, the architecture weights ``alpha`` on the
validation split — and alpha's validation loss is computed on the network *masked at the target
sparsity*, so alpha learns which operations stay accurate once pruned (DASS's change to DARTS).
The search runs three phases over its steps, alpha updated in all of them:

1. dense warm-up: weights train with every mask off; for alpha's step the masks are the top-k of
   scores re-derived from the current weights (the network as magnitude pruning would leave it);
2. pruning: scores are re-initialised from the weights (HYDRA's scaled init) and only the scores
   train, through the straight-through top-k mask at the target sparsity;
3. fine-tuning: the masks stay as the scores left them, the weights train under them.

Alpha's step is first-order by default, DARTS' second-order (unrolled, finite-difference Hessian)
with ``order="second"``; an optional differentiable expected-latency term
``latency_weight * sum softmax(alpha) * latency(op)`` (ms, from :func:`op_latency_for`) is added
to alpha's loss. Then the discrete architecture is derived (top-2 edges per node for cells, argmax
per block for sparse_mbv2; more candidates from latency-aware derivations), each is retrained from
scratch with gradual pruning to its masks' target, evaluated with the study's evaluator (the same
latency as random search) and logged to the study as a trial, with the alpha history.

Under ``--timeout`` (no ``--search-epochs``) the supernet runs in two rounds: an early one of
``early_share`` of the budget whose first ``early_top`` derivations are retrained at once (a result
within a fifth of the budget), then the main one, warm-restarted from it with a fresh schedule,
whose derivations are retrained until the deadline.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from torch import Tensor

from .. import distributed
from ..errors import SparseNASError
from ..ops import LayerSpec
from ..search_spaces.base import SearchSpace
from ..supernets.dass_trainer import DassTrainer, sparse_layer_sparsity
from ..supernets.mixed import MixedSupernet, OpLatency, build_mixed_supernet, measured_op_latency
from ..supernets.registry import get_supernet
from ..task import Task
from ..timing import num_threads
from ..tracking import trial_record
from . import STRATEGIES
from .base import SearchContext, Strategy
from .budget import Deadline, budget_seconds, check_share, epochs_within, is_set, probe_epochs, stored_plan
from .options import Option, options_of, resolve_options, setting
from .supernet import CHECKPOINT_FILE, retrain_and_log, say, train_supernet

BUDGET_CANDIDATES = 64  # derived architectures a --timeout run without --retrain-top may retrain
PLAN_ATTR = "dass_budget_plan"
EARLY_CHECKPOINT = "supernet-early.pt"


@dataclass
class DassConfig:
    """DASS settings; defaults sized for a loaded 2-core CPU and the digits data set."""

    target_sparsity: float = setting(0.9, "fraction of zero weights the sparse ops are pruned to")
    latency_weight: float = setting(0.0, "weight of the expected-latency term in alpha's loss (0: none)")
    search_epochs: int = setting(4, "passes over the train split for the supernet, split into the phases (default "
                                 "{default}; with --timeout, sized to --budget-share of it)", decided_at_run_time=True)
    retrain_epochs: int = setting(12, "standalone training epochs of each derived architecture")
    retrain_top: int = setting(2, "derived architectures to retrain and log (default {default}; with --timeout, as "
                               f"many as the budget fits, up to {BUDGET_CANDIDATES})", decided_at_run_time=True)
    budget_share: float = setting(0.3, "with --timeout and no --search-epochs: the share of the budget the supernet "
                                  "training is sized to (the rest retrains derived architectures)")
    early_share: float = setting(0.1, "with --timeout and no --search-epochs: the share of the budget an early "
                                 "supernet round takes out of --budget-share; its derivations are retrained first, so "
                                 "the search has results early (0: one round)")
    early_top: int = setting(4, "derived architectures the early round retrains")
    order: str = setting("first", "alpha step: first order, or DARTS' second (unrolled) order",
                         choices=("first", "second"))
    phases: tuple[float, float, float] = setting((0.4, 0.3, 0.3), "shares of the search steps: warm-up, pruning, "
                                                 "fine-tuning", item=float)
    batch_size: int = setting(64, "supernet batch size (config file only; --batch-size is the trials')")
    weight_lr: float = setting(0.05, "SGD learning rate of the supernet weights (cosine)")
    score_lr: float = setting(0.1, "SGD learning rate of the mask scores in the pruning phase")
    # Adam; DARTS' 3e-4 barely moves alpha in a few hundred steps
    arch_lr: float = setting(3e-3, "Adam learning rate of the architecture weights alpha")
    arch_weight_decay: float = setting(1e-3, "weight decay of alpha")
    grad_clip: float = setting(5.0, "gradient-norm clip of the weight step")
    threads: int = setting(1, "torch threads for the search (config file only)")  # see DASSStrategy.run
    supernet: dict[str, Any] = field(default_factory=dict)  # channels, cells, search_cells, downscale, depth...

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "DassConfig":
        """Build from ``ctx.options``; unknown keys and bad values raise one clear SparseNASError."""
        options = resolve_options("dass", DASS_OPTIONS, options)
        kw = {k: v for k, v in options.items() if k in cls.__dataclass_fields__}
        cfg = cls(**kw, supernet={k: options[k] for k in SUPERNET_OPTIONS if k in options})
        cfg.check()
        return cfg

    def check(self) -> None:
        def bad(what: str) -> SparseNASError:
            return SparseNASError(f"strategy 'dass': {what}")

        if not 0.0 < float(self.target_sparsity) < 1.0:
            raise bad(f"--target-sparsity must be a fraction of zero weights in (0, 1), got {self.target_sparsity}")
        if not (float(self.latency_weight) >= 0.0 and math.isfinite(float(self.latency_weight))):
            raise bad(f"--latency-weight must be a number >= 0 (0: no latency term), got {self.latency_weight}")
        for name in ("search_epochs", "retrain_epochs", "retrain_top", "early_top", "batch_size", "threads"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise bad(f"{name.replace('_', '-')} must be a whole number >= 1, got {v!r}")
        check_share("dass", self.budget_share)
        if not 0.0 <= float(self.early_share) < float(self.budget_share):
            raise bad(f"early-share must be a fraction of --timeout in [0, budget-share={self.budget_share:g}) "
                      f"(0: no early round), got {self.early_share}")
        if self.order not in ("first", "second"):
            raise bad(f"order must be 'first' or 'second', got {self.order!r}")
        if len(self.phases) != 3 or any(p < 0 for p in self.phases) or sum(self.phases) <= 0:
            raise bad(f"phases must be three non-negative shares (warm-up, prune, fine-tune), got {self.phases}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phases"] = list(self.phases)
        return d


def op_latency_for(ctx: SearchContext) -> OpLatency:
    """The one place that decides where the latency term's per-kernel ms come from.

    When the search predicts latency from a hardware profile, the profile's fastest kernel (so the
    term and the trials' latency agree, in the same runtime); kernels the profile lacks (the
    supernet's own shapes can differ from any child's) are timed once in the profile's runtime and
    kept in the per-user profile cache, as a trial's are. Searches that measure, or that may not
    fill the cache, time kernels on this machine in torch, cached per layer spec. Thread CPU ms."""
    latency_of = ctx.evaluator.latency_of
    table = getattr(latency_of, "table", None)
    if table is None:
        return measured_op_latency
    return ProfiledOpLatency(table, latency_of.cache, ctx.space, ctx.task)


class ProfiledOpLatency:
    """A kernel's ms from a hardware profile (its fastest implementation), the kernels it lacks
    added through the profile cache. ``cover`` times a supernet's missing kernels in one go
    (:meth:`MixedSupernet.candidate_latency` calls it first), so the log says so once."""

    def __init__(self, table: Any, cache: Any, space: SearchSpace, task: Task) -> None:
        self.table, self.cache, self.space, self.task = table, cache, space, task

    def cover(self, specs: list[LayerSpec]) -> None:
        self.cache.add_layers(self.space, self.task, specs)

    def __call__(self, spec: LayerSpec) -> float:
        timings = self.table.timings(spec)
        if timings is None:  # the cache may not be filled (read-only): torch eager, as a measuring search
            return measured_op_latency(spec)
        return min(timings.values())


# the supernet's shape, per space (DassConfig.supernet), beside DassConfig's own options
SUPERNET = (
    Option("channels", int, None, "sparse_darts: initial channels C (8, 12, 16; default 8)"),
    Option("cells", int, None, "sparse_darts: cells of the derived network (3, 5, 8; default 5)"),
    Option("search_cells", int, None, "sparse_darts: cells of the supernet (2-20; default 3)"),
    Option("downscale", bool, None, "sparse_darts: the supernet sees the input average-pooled (default: inputs of 16 px and more)"),
    Option("depth", int, None, "sparse_mbv2: blocks per stage of the supernet (default 1)"),
    Option("width", float, None, "sparse_mbv2: width multiplier of the supernet (default 0.5)"),
    Option("expand", int, None, "sparse_mbv2: expansion ratio of the supernet (default 3)"),
    Option("conns", list, None, "sparse_mbv2: sparse 1x1 connectivities among magnitude, g2g, magnitude_oc4 "
           "(default magnitude,g2g)", item=str),
)
SUPERNET_OPTIONS = tuple(o.name for o in SUPERNET)
DASS_OPTIONS = options_of(DassConfig, *SUPERNET)


# ---------------------------------------------------------------- the strategy
@STRATEGIES.register("dass")
class DASSStrategy(Strategy):
    name = "dass"
    runs_distributed = True
    description = ("DASS: DARTS-style bilevel search over mixed ops with alpha trained on the network masked at "
                   "the target sparsity (warm-up, score pruning, fine-tune); derived nets retrained and logged")
    options = DASS_OPTIONS

    def check(self, space: SearchSpace, task: Task, options: dict[str, Any]) -> None:
        cfg = DassConfig.from_options(options)
        get_supernet(space.name, "mixed", f"strategy 'dass' needs a mixed-op supernet, and space '{space.name}' "
                                          "has none")
        # building it (well under a second) checks the sparsity and sizes against the space
        build_mixed_supernet(space, task, target_sparsity=cfg.target_sparsity, **cfg.supernet)

    def run(self, ctx: SearchContext) -> None:
        cfg = DassConfig.from_options(ctx.options)
        # The supernet runs thousands of tiny ops per step: measured here on the loaded 2-core machine,
        # a fwd+bwd took 0.85 s of CPU with 1 thread and 24 s with 2 (threads spin waiting for a core).
        with num_threads(cfg.threads):
            self._run(ctx, cfg)

    def _run(self, ctx: SearchContext, cfg: DassConfig) -> None:
        tracker = ctx.tracker
        done = distributed.broadcast(distributed.is_main() and bool(tracker.read_study().dass_finished))
        if done:
            ctx.progress.log(f"study '{tracker.study.study_name}' already holds a DASS result; nothing to do "
                             "(pass another --study to search again)")
            return
        deadline = Deadline(time.perf_counter(), ctx.timeout)
        op_latency = op_latency_for(ctx)
        cfg, early_epochs = self._fit_budget(ctx, cfg, op_latency)
        rounds = [_Round("main", cfg, CHECKPOINT_FILE, self._candidates(ctx, cfg))]
        if early_epochs:
            rounds.insert(0, _Round("early", replace(cfg, search_epochs=early_epochs), EARLY_CHECKPOINT, cfg.early_top))
        # a resumed run (killed while retraining) skips what it already logged
        done_archs = {r.arch_digest for r in map(trial_record, tracker.finished())
                      if r.strategy == self.name} if distributed.is_main() else set()
        run = _RunLog()
        net: MixedSupernet | None = None
        for rnd in rounds:
            ctx.progress.trial_started(len(tracker.study.trials), f"DASS supernet search ({rnd.name} round)")
            trainer = DassTrainer(rnd.cfg, ctx.data, space=ctx.space, task=ctx.task, seed=ctx.seed, device=ctx.device,
                                  net=net, op_latency=op_latency, on_step=ctx.progress.trial_progress,
                                  log=ctx.progress.log)
            history = train_supernet(ctx, trainer, rnd.checkpoint)
            net = trainer.net
            run.add(rnd, history, trainer)
            if distributed.is_main():  # the other ranks only train; rank 0 derives, retrains and logs
                self._retrain(ctx, cfg, rnd, trainer, run, deadline, op_latency, done_archs)
            distributed.barrier()  # the next round's first collective waits for rank 0's retraining
        if distributed.is_main():
            tracker.set_study_attr("dass_finished", True)

    def _retrain(self, ctx: SearchContext, cfg: DassConfig, rnd: "_Round", trainer: DassTrainer, run: "_RunLog",
                 deadline: Deadline, op_latency: OpLatency, done_archs: set[str]) -> None:
        """Derive up to ``rnd.candidates`` architectures from the round's supernet and retrain, evaluate and
        log those not logged before, while the deadline allows."""
        tracker = ctx.tracker
        net = trainer.derive().cpu()
        alpha_history = run.alpha_history()
        tracker.set_study_attr("dass_alpha_history", alpha_history)
        tracker.set_study_attr("dass_candidates", dict(net.candidate_names))
        tracker.set_study_attr("dass_search", run.summary(cfg))
        if run.table is None:
            run.table = trainer.table
            if run.table is None and rnd.candidates > 1:
                run.table = net.candidate_latency(op_latency)  # latency-aware derivations spread the front
        candidates = [(label, arch) for label, arch in net.derive_candidates(rnd.candidates, run.table)
                      if arch.digest() not in done_archs]
        evaluator = ctx.evaluator.with_budget(epochs=cfg.retrain_epochs, seconds=None)
        masked_acc = run.history[-1]["val_accuracy_masked"]
        for rank, (label, arch) in enumerate(candidates):
            if not deadline.fits():
                ctx.progress.log(f"dass: another retraining would end after --timeout; {len(candidates) - rank} "
                                 f"architecture(s) derived in the {rnd.name} round not retrained")
                break
            _, trained = retrain_and_log(
                ctx, evaluator, arch, strategy=self.name, what=f"retrain {arch.digest()} ({rnd.name} round, {label})",
                deadline=deadline, extra=lambda model, _: {"sparse_layer_sparsity": round(sparse_layer_sparsity(model), 4)},
                derivation=label, derivation_rank=rank, stage=rnd.name, target_sparsity=cfg.target_sparsity,
                latency_weight=cfg.latency_weight, order=cfg.order, search_seconds=round(run.seconds, 1),
                supernet_val_accuracy_masked=masked_acc, alpha=net.alpha_snapshot(), alpha_history=alpha_history)
            if trained is not None:
                done_archs.add(arch.digest())

    @staticmethod
    def _candidates(ctx: SearchContext, cfg: DassConfig) -> int:
        """Derived architectures to retrain: --retrain-top, or under --timeout as many as fit."""
        if ctx.options.get("retrain_top") is not None or ctx.timeout is None:
            return cfg.retrain_top
        return BUDGET_CANDIDATES

    def _fit_budget(self, ctx: SearchContext, cfg: DassConfig, op_latency: OpLatency) -> tuple[DassConfig, int]:
        """Under --timeout without --search-epochs: the supernet epochs that fill ``budget_share`` of
        it, from a probe of a few steps, and how many of them an early round takes (0: none); stored on
        the study, so a resumed run keeps them. Otherwise the configured epochs and no early round."""
        seconds = budget_seconds(ctx, cfg.budget_share)
        if seconds is None or is_set(ctx, "search_epochs"):
            return cfg, 0

        def plan() -> dict[str, Any]:
            probe_cfg = replace(cfg, search_epochs=1)
            [cost] = probe_epochs(lambda: DassTrainer(probe_cfg, ctx.data, space=ctx.space, task=ctx.task, seed=ctx.seed,
                                                      device=ctx.device, op_latency=op_latency), [0], seed=ctx.seed)
            total = epochs_within(seconds, cost)
            early = epochs_within(budget_seconds(ctx, cfg.early_share), cost) if cfg.early_share > 0 else 0
            early = early if early < total else 0  # a round as long as the whole share would only delay the main one
            return {"search_epochs": total - early, "early_epochs": early, "epoch_s": round(cost.epoch_s, 3),
                    "budget_s": round(seconds, 1), "budget_share": cfg.budget_share, "early_share": cfg.early_share}

        p = stored_plan(ctx, PLAN_ATTR, plan)
        early = int(p.get("early_epochs", 0))
        say(ctx, f"dass: {p['search_epochs'] + early} supernet epoch(s) of ~{p['epoch_s']:.1f} s fill {p['budget_share']:g} "
                 f"of --timeout ({p['budget_s']:.0f} s)"
                 + (f"; an early round of {early} is derived and retrained first" if early else "")
                 + "; the rest retrains derived architectures")
        return replace(cfg, search_epochs=int(p["search_epochs"])), early


@dataclass
class _Round:
    """One supernet training round: the early one (a short schedule whose derivations are retrained
    first, so a budgeted search has results early) or the main one (warm-restarted from the early
    round's supernet when there was one)."""

    name: str
    cfg: DassConfig
    checkpoint: str
    candidates: int


@dataclass
class _RunLog:
    """What the rounds so far trained: their epochs' history, seconds and steps, and the latency table."""

    history: list[dict[str, Any]] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    table: list[tuple[str, int, Tensor]] | None = None

    def add(self, rnd: _Round, history: list[dict[str, Any]], trainer: DassTrainer) -> None:
        self.history += [{**h, "round": rnd.name} for h in history]
        self.seconds += trainer.seconds
        self.steps += trainer.step
        self.rounds.append({"round": rnd.name, "epochs": rnd.cfg.search_epochs, "seconds": round(trainer.seconds, 1)})

    def alpha_history(self) -> list[dict[str, Any]]:
        return [{**{k: v for k, v in h.items() if k != "alpha"}, **h["alpha"]} for h in self.history]

    def summary(self, cfg: DassConfig) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 1), "steps": self.steps, "config": cfg.to_dict(), "rounds": self.rounds,
                "val_accuracy_masked": [h["val_accuracy_masked"] for h in self.history]}
