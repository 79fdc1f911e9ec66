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
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import DataSplits
from ..errors import SparseNASError
from ..evaluators import TrainingDiverged
from ..ops import LayerSpec, sparse_modules
from ..timing import num_threads
from ..tracking import trial_record
from ..search_spaces.base import SearchSpace
from ..supernets.mixed import MIXED, MixedSupernet, OpLatency, build_mixed_supernet, measured_op_latency
from ..task import Task
from .. import distributed
from . import STRATEGIES
from .base import SearchContext, Strategy
from ..supernets.base import (SupernetTrainer, cycle_batches, epoch_batches, load_optimizer, optimizer_state, run_epochs,
                              shard_loss)
from .budget import Deadline, budget_seconds, check_share, epochs_within, is_set, probe_epochs, stored_plan
from .supernet import CHECKPOINT_FILE, retrain_and_log, say, train_supernet
from .options import Option

PHASES = ("warmup", "prune", "finetune")
BUDGET_CANDIDATES = 64  # derived architectures a --timeout run without --retrain-top may retrain
PLAN_ATTR = "dass_budget_plan"
EARLY_CHECKPOINT = "supernet-early.pt"
SUPERNET_OPTIONS = ("channels", "cells", "search_cells", "downscale", "depth", "width", "expand", "conns")


@dataclass
class DassConfig:
    """DASS settings; defaults sized for a loaded 2-core CPU and the digits data set."""

    target_sparsity: float = 0.9
    latency_weight: float = 0.0
    search_epochs: int = 4          # passes over the train split, split into the three phases
    retrain_epochs: int = 12        # standalone training of each derived architecture
    retrain_top: int = 2            # derived architectures to retrain and log
    budget_share: float = 0.3       # under --timeout, the share the supernet is sized to (see DASSStrategy)
    early_share: float = 0.1        # ... of which an early round takes this share of --timeout (0: none)
    early_top: int = 4              # derived architectures the early round retrains
    order: str = "first"            # alpha step: "first" or "second" (unrolled) order
    phases: tuple[float, float, float] = (0.4, 0.3, 0.3)  # shares of the search steps
    batch_size: int = 64
    weight_lr: float = 0.05         # SGD, cosine over the search
    score_lr: float = 0.1           # SGD for the scores in the pruning phase (HYDRA/DASS)
    arch_lr: float = 3e-3           # Adam; DARTS' 3e-4 barely moves alpha in a few hundred steps
    arch_weight_decay: float = 1e-3
    grad_clip: float = 5.0
    threads: int = 1                # torch threads for the whole run (see DASSStrategy.run)
    supernet: dict[str, Any] = field(default_factory=dict)  # channels, cells, search_cells, downscale, depth...

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "DassConfig":
        """Build from ``ctx.options``; unknown keys and bad values raise one clear SparseNASError."""
        known = {f for f in cls.__dataclass_fields__ if f != "supernet"} | set(SUPERNET_OPTIONS)
        unknown = sorted(set(options) - known)
        if unknown:
            raise SparseNASError(f"strategy 'dass' does not take option(s) {', '.join(unknown)}; it takes: "
                                 f"{', '.join(sorted(known))}")
        kw = {k: v for k, v in options.items() if k in cls.__dataclass_fields__ and v is not None}
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

    When the search predicts latency from a hardware profile, the profile's fastest kernel median
    (so the term and the trials' latency agree); a kernel the profile lacks (the supernet's own
    shapes can differ from any child's) and searches that measure are timed on this machine,
    cached per layer spec. Both are thread CPU ms."""
    table = getattr(ctx.evaluator.latency_of, "table", None)
    if table is None:
        return measured_op_latency

    def op_latency(spec: LayerSpec) -> float:
        timings = table.timings(spec)
        return min(timings.values()) if timings else measured_op_latency(spec)

    return op_latency


# ---------------------------------------------------------------- the search
@dataclass
class SearchLog:
    history: list[dict[str, Any]]            # one entry per epoch: phase, softmax(alpha), masked val accuracy
    latency_table: list[tuple[str, int, Tensor]] | None
    seconds: float
    steps: int


@torch.no_grad()
def _masked_accuracy(net: MixedSupernet, data: DataSplits, device: torch.device, batch: int = 128) -> float:
    net.eval()
    x, y = data.val.tensors
    correct = sum(int((net(x[i:i + batch].to(device)).argmax(1).cpu() == y[i:i + batch]).sum())
                  for i in range(0, len(y), batch))
    net.train()
    return correct / max(1, len(y))


def _phase_of(step: int, total: int, shares: tuple[float, float, float]) -> str:
    s = sum(shares)
    b1 = round(total * shares[0] / s)
    b2 = b1 + round(total * shares[1] / s)
    return "warmup" if step < b1 else "prune" if step < b2 else "finetune"


class _Trainable:
    """Switches which parameters need gradients; autograd then skips the rest."""

    def __init__(self, net: MixedSupernet) -> None:
        self.groups = {"weights": net.weight_parameters(), "scores": net.score_parameters(),
                       "alpha": net.arch_parameters()}

    def only(self, *names: str) -> None:
        for name, params in self.groups.items():
            for p in params:
                p.requires_grad_(name in names)


def _alpha_loss(net: MixedSupernet, x: Tensor, y: Tensor, rows: int, cfg: DassConfig,
                table: list[tuple[str, int, Tensor]] | None) -> Tensor:
    loss = shard_loss(net(x), y, rows)
    if table is not None and cfg.latency_weight > 0:
        # the latency term is the same on every rank: its share keeps the averaged gradient exact
        loss = loss + cfg.latency_weight * net.expected_latency(table) / distributed.world_size()
    return loss


def _second_order_step(net: MixedSupernet, params: list[nn.Parameter], lr: float, xt: Tensor, yt: Tensor, nt: int,
                       xv: Tensor, yv: Tensor, nv: int, train_masked: bool, cfg: DassConfig,
                       table: list[tuple[str, int, Tensor]] | None) -> None:
    """DARTS' unrolled alpha gradient: grad_a L_val(w - lr grad_w L_train(w, a), a) with the Hessian-vector
    product approximated by central finite differences; L_val on the masked network. Under torchrun the
    virtual step and the finite-difference direction use the gradients averaged over the ranks."""
    alphas = net.arch_parameters()
    backup = [p.detach().clone() for p in params]
    net.set_masked(train_masked)
    g = list(torch.autograd.grad(shard_loss(net(xt), yt, nt), params, allow_unused=True))
    g = [torch.zeros_like(p) if gi is None else gi for p, gi in zip(params, g)]
    distributed.average_(g)
    with torch.no_grad():
        for p, gi in zip(params, g):
            p.sub_(lr * gi)
    net.set_masked(True)
    grads = torch.autograd.grad(_alpha_loss(net, xv, yv, nv, cfg, table), alphas + params, allow_unused=True)
    d_alpha = grads[:len(alphas)]
    d_w = [torch.zeros_like(p) if d is None else d for p, d in zip(params, grads[len(alphas):])]
    distributed.average_(d_w)
    norm = torch.sqrt(sum((d * d).sum() for d in d_w)).clamp_min(1e-12)
    eps = 0.01 / norm
    hessian = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for p, b, d in zip(params, backup, d_w):
                p.copy_(b + sign * eps * d)
        net.set_masked(train_masked)
        hessian.append(torch.autograd.grad(shard_loss(net(xt), yt, nt), alphas, allow_unused=True))
    with torch.no_grad():
        for p, b in zip(params, backup):
            p.copy_(b)
    for a, da, hp, hn in zip(alphas, d_alpha, *hessian):
        grad = torch.zeros_like(a) if da is None else da.clone()
        if hp is not None and hn is not None:
            grad -= lr * (hp - hn) / (2 * eps)
        a.grad = grad


class DassTrainer(SupernetTrainer):
    """DASS' three-phase bilevel search as a :class:`SupernetTrainer`: one epoch = one pass over
    the train split, each step an alpha step (validation batch, masked network) and a weight or
    score step (training batch)."""

    kind = "dass"

    def __init__(self, cfg: DassConfig, data: DataSplits, *, space: SearchSpace | None = None, task: Task | None = None,
                 net: MixedSupernet | None = None, seed: int = 0, device: str | torch.device = "cpu",
                 op_latency: OpLatency | None = None, on_step: Callable[[float], None] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.cfg, self.data, self.space, self.task, self.net = cfg, data, space, task, net
        self.seed, self.device, self.op_latency = seed, torch.device(device), op_latency
        self.on_step, self.log = on_step, log
        self.epochs = cfg.search_epochs
        self.step, self.phase, self.seconds = 0, "warmup", 0.0
        self.table: list[tuple[str, int, Tensor]] | None = None

    def settings(self) -> dict[str, Any]:
        # what shapes the supernet's training; retraining and thread settings may change on a resume
        config = {k: v for k, v in self.cfg.to_dict().items()
                  if k not in ("retrain_epochs", "retrain_top", "early_top", "threads", "budget_share")}
        return {"config": config, "space": getattr(self.space, "name", None),
                "task": self.data.task.to_dict(), "train_rows": len(self.data.train)}

    def build(self) -> None:
        cfg = self.cfg
        if self.net is None:
            self.net = build_mixed_supernet(self.space, self.task, target_sparsity=cfg.target_sparsity, **cfg.supernet)
        net = self.net.to(self.device).train()
        if cfg.latency_weight > 0:  # measured on rank 0: every rank must see the same latency term
            self.table = distributed.broadcast(net.candidate_latency(self.op_latency or measured_op_latency)
                                               if distributed.is_main() else None)
        self.groups = _Trainable(net)
        self.w_opt = torch.optim.SGD(self.groups.groups["weights"], lr=cfg.weight_lr, momentum=0.9, weight_decay=3e-4)
        self.s_opt = (torch.optim.SGD(self.groups.groups["scores"], lr=cfg.score_lr, momentum=0.9)
                      if self.groups.groups["scores"] else None)
        self.a_opt = torch.optim.Adam(self.groups.groups["alpha"], lr=cfg.arch_lr, betas=(0.5, 0.999),
                                      weight_decay=cfg.arch_weight_decay)
        self.groups.only("weights", "scores", "alpha")
        self.ddp = distributed.wrap(net)  # weight and score steps; alpha's gradients are averaged by hand
        self.steps_per_epoch = math.ceil(len(self.data.train) / cfg.batch_size)

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, net, groups, device = self.cfg, self.net, self.groups, self.device
        t0 = time.perf_counter()
        total = max(1, cfg.search_epochs * self.steps_per_epoch)
        val_batches = cycle_batches(self.data.val, cfg.batch_size, self.seed, epoch, 1, device)
        for x, y, n in epoch_batches(self.data.train, cfg.batch_size, self.seed, epoch, 0, device):
            step, table = self.step, self.table
            new_phase = _phase_of(step, total, cfg.phases)
            if new_phase == "prune" and self.phase != "prune":
                net.reset_scores()  # HYDRA scaled init: the pruning phase starts from the magnitude mask
            phase = self.phase = new_phase
            lr_factor = 0.5 * (1 + math.cos(math.pi * step / total))
            for g in self.w_opt.param_groups:
                g["lr"] = cfg.weight_lr * lr_factor
            xv, yv, nv = next(val_batches)
            trained, opt = ((groups.groups["scores"], self.s_opt) if phase == "prune"
                            else (groups.groups["weights"], self.w_opt))
            if phase == "warmup":
                net.reset_scores()  # alpha sees the network as magnitude pruning would leave it now
            # -- alpha on the validation split, network masked at the target sparsity
            self.a_opt.zero_grad(set_to_none=True)
            if cfg.order == "second" and trained:
                groups.only("alpha", "scores" if phase == "prune" else "weights")
                _second_order_step(net, trained, opt.param_groups[0]["lr"], x, y, n, xv, yv, nv, phase != "warmup",
                                   cfg, table)
            else:
                groups.only("alpha")
                net.set_masked(True)
                _alpha_loss(net, xv, yv, nv, cfg, table).backward()
            distributed.average_grads(groups.groups["alpha"])
            self.a_opt.step()
            # -- weights (warm-up, fine-tune) or scores (prune) on the train split
            groups.only("scores" if phase == "prune" else "weights")
            net.set_masked(phase != "warmup")
            if opt is not None:
                opt.zero_grad(set_to_none=True)
                loss = shard_loss(self.ddp(x), y, n)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"DASS supernet loss became {loss.item()} at step {step} ({phase})")
                loss.backward()
                nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
                opt.step()
            self.step += 1
            if self.on_step is not None:
                self.on_step(self.step / total)
        groups.only("weights", "scores", "alpha")
        net.set_masked(True)
        entry: dict[str, Any] = {"phase": self.phase, "alpha": net.alpha_snapshot()}
        if distributed.is_main():  # the only rank that logs it
            entry["val_accuracy_masked"] = round(_masked_accuracy(net, self.data, device), 4)
            if self.table is not None:
                with torch.no_grad():
                    entry["expected_latency_ms"] = round(float(net.expected_latency(self.table)), 4)
            if self.log is not None:
                self.log(f"dass epoch {epoch + 1}/{cfg.search_epochs} ({self.phase}): supernet val accuracy at "
                         f"{cfg.target_sparsity:g} sparsity {entry['val_accuracy_masked']:.3f}")
        self.seconds += time.perf_counter() - t0
        return entry

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "w_opt": optimizer_state(self.w_opt), "s_opt": optimizer_state(self.s_opt),
                "a_opt": optimizer_state(self.a_opt), "step": self.step, "phase": self.phase,
                "seconds": self.seconds, "table": self.table}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        load_optimizer(self.w_opt, state["w_opt"])
        load_optimizer(self.s_opt, state["s_opt"])
        load_optimizer(self.a_opt, state["a_opt"])
        self.step, self.phase, self.seconds = int(state["step"]), str(state["phase"]), float(state["seconds"])
        self.table = state["table"]

    def derive(self) -> MixedSupernet:
        """The trained supernet, masked at the target sparsity (its derivations need the latency table)."""
        self.groups.only("weights", "scores", "alpha")
        self.net.set_masked(True)
        return self.net


def dass_search(net: MixedSupernet, data: DataSplits, cfg: DassConfig, *, seed: int = 0,
                device: str | torch.device = "cpu", op_latency: OpLatency | None = None,
                on_step: Callable[[float], None] | None = None,
                log: Callable[[str], None] | None = None) -> SearchLog:
    """Run DASS' three-phase bilevel search on ``net`` in place (no checkpoint); returns the alpha history."""
    trainer = DassTrainer(cfg, data, net=net, seed=seed, device=device, op_latency=op_latency, on_step=on_step, log=log)
    history = run_epochs(trainer, seed)
    trainer.derive()
    return SearchLog(history, trainer.table, trainer.seconds, trainer.step)


def sparse_layer_sparsity(model: nn.Module) -> float:
    """Share of zero weights over the model's sparse (masked) layers."""
    layers = sparse_modules(model)
    total = sum(m.weight.numel() for m in layers)
    return 1.0 - sum(m.nnz() for m in layers) / total if total else 0.0


# ---------------------------------------------------------------- the strategy
@STRATEGIES.register("dass")
class DASSStrategy(Strategy):
    name = "dass"
    runs_distributed = True
    description = ("DASS: DARTS-style bilevel search over mixed ops with alpha trained on the network masked at "
                   "the target sparsity (warm-up, score pruning, fine-tune); derived nets retrained and logged")
    options = (
        Option("target_sparsity", float, DassConfig.target_sparsity, "fraction of zero weights the sparse ops are pruned to"),
        Option("latency_weight", float, DassConfig.latency_weight, "weight of the expected-latency term in alpha's loss (0: none)"),
        Option("search_epochs", int, None, f"passes over the train split for the supernet, split into the phases "
               f"(default {DassConfig.search_epochs}; with --timeout, sized to --budget-share of it)"),
        Option("retrain_epochs", int, DassConfig.retrain_epochs, "standalone training epochs of each derived architecture"),
        Option("retrain_top", int, None, f"derived architectures to retrain and log (default {DassConfig.retrain_top}; "
               f"with --timeout, as many as the budget fits, up to {BUDGET_CANDIDATES})"),
        Option("budget_share", float, DassConfig.budget_share, "with --timeout and no --search-epochs: the share of "
               "the budget the supernet training is sized to (the rest retrains derived architectures)"),
        Option("early_share", float, DassConfig.early_share, "with --timeout and no --search-epochs: the share of the "
               "budget an early supernet round takes out of --budget-share; its derivations are retrained first, "
               "so the search has results early (0: one round)"),
        Option("early_top", int, DassConfig.early_top, "derived architectures the early round retrains"),
        Option("order", str, DassConfig.order, "alpha step: first order, or DARTS' second (unrolled) order",
               choices=("first", "second")),
        Option("phases", list, DassConfig.phases, "shares of the search steps: warm-up, pruning, fine-tuning", item=float),
        Option("batch_size", int, DassConfig.batch_size, "supernet batch size (config file only; --batch-size is the trials')"),
        Option("weight_lr", float, DassConfig.weight_lr, "SGD learning rate of the supernet weights (cosine)"),
        Option("score_lr", float, DassConfig.score_lr, "SGD learning rate of the mask scores in the pruning phase"),
        Option("arch_lr", float, DassConfig.arch_lr, "Adam learning rate of the architecture weights alpha"),
        Option("arch_weight_decay", float, DassConfig.arch_weight_decay, "weight decay of alpha"),
        Option("grad_clip", float, DassConfig.grad_clip, "gradient-norm clip of the weight step"),
        Option("threads", int, DassConfig.threads, "torch threads for the search (config file only)"),
        Option("channels", int, None, "sparse_darts: initial channels C (8, 12, 16; default 8)"),
        Option("cells", int, None, "sparse_darts: cells of the derived network (3, 5, 8; default 5)"),
        Option("search_cells", int, None, "sparse_darts: cells of the supernet (2-20; default 3)"),
        Option("downscale", bool, None, "sparse_darts: the supernet sees the input average-pooled (default: inputs of 16 px and more)"),
        Option("depth", int, None, "sparse_mbv2: blocks per stage of the supernet (default 1)"),
        Option("width", float, None, "sparse_mbv2: width multiplier of the supernet (default 0.5)"),
        Option("expand", int, None, "sparse_mbv2: expansion ratio of the supernet (default 3)"),
        Option("conns", list, None, "sparse_mbv2: sparse 1x1 connectivities (default magnitude,g2g)", item=str),
    )

    def check(self, space: SearchSpace, task: Task, options: dict[str, Any]) -> None:
        cfg = DassConfig.from_options(options)
        if space.name not in MIXED:
            raise SparseNASError(f"strategy 'dass' needs a mixed-op supernet, and space '{space.name}' has none; "
                                 f"spaces with one: {', '.join(MIXED.names())}")
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
