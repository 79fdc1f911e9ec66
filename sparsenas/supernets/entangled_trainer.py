"""The weight-entangled supernet's training (TangleNAS' gradient search, then sandwich training),
beside the supernets it trains (:mod:`sparsenas.supernets.entangled`, ``entangled_mlp``). Its
settings are the entangled strategy's options (:class:`sparsenas.strategies.entangled.EntangledOptions`)
and the search's context; the strategy (:mod:`sparsenas.strategies.entangled`) holds the search
loop around it: budget, inherited search, retraining.
"""
from __future__ import annotations

import contextlib
import math
import random
import time
from typing import TYPE_CHECKING, Any, Iterator

import torch

from .. import distributed
from ..arch import Arch
from ..errors import SparseNASError
from ..evaluators import cosine, sgd
from .base import SupernetTrainer, cycle_batches, epoch_batches, epoch_seed, shard_loss
from .entangled import entangled_supernet

if TYPE_CHECKING:  # what the trainer reads; it never imports the strategy
    from ..strategies.base import SearchContext
    from ..strategies.entangled import EntangledOptions


def _finite(loss: torch.Tensor, what: str) -> None:
    if not torch.isfinite(loss):
        raise SparseNASError(f"entangled: the supernet's loss became {loss.item()} during {what}; lower --lr "
                             "(or the options arch_lr, grad_clip) and run again")


class EntangledTrainer(SupernetTrainer):
    """Phases 1-2 (gradient search, then sandwich training) as one :class:`SupernetTrainer`: epochs
    ``0 .. search_epochs-1`` are gradient epochs, the rest sandwich epochs. Masks are refreshed at
    the start of every epoch and every ``mask_every`` steps within it, so a resumed epoch draws
    them from the same weights."""

    kind = "entangled"

    def __init__(self, ctx: SearchContext, opts: EntangledOptions) -> None:
        self.ctx, self.opts = ctx, opts
        self.epochs = opts.search_epochs + opts.sandwich_epochs
        self.derived: Arch | None = None
        self.seconds = {"gradient_search_s": 0.0, "sandwich_s": 0.0}
        self._shown: str | None = None  # the phase the progress display names

    def settings(self) -> dict[str, Any]:
        budget = self.ctx.evaluator.budget
        keys = ("search_epochs", "sandwich_epochs", "sandwich_random", "mask_every", "arch_lr", "grad_clip", "mixing")
        return {"options": {k: getattr(self.opts, k) for k in keys}, "space": self.ctx.space.name,
                "task": self.ctx.task.to_dict(), "train_rows": len(self.ctx.data.train),
                "batch_size": budget.batch_size, "lr": budget.lr, "weight_decay": budget.weight_decay}

    def build(self) -> None:
        ctx, budget = self.ctx, self.ctx.evaluator.budget
        self.supernet = entangled_supernet(ctx.space, ctx.task, mixing=self.opts.mixing).to(ctx.device)
        self.supernet.set_mixed().train()
        self.alphas = self.supernet.arch_parameters()
        self.w_opt = sgd(self.supernet.weight_parameters(), budget.lr, budget.weight_decay)
        self.a_opt = torch.optim.Adam(self.alphas, lr=self.opts.arch_lr, betas=(0.5, 0.999), weight_decay=1e-3)
        # the sandwich phase starts a fresh optimizer (no momentum carried over from the gradient phase)
        self.s_opt = sgd(self.supernet.weight_parameters(), budget.lr, budget.weight_decay)
        self.ddp = distributed.wrap(self.supernet)  # weight steps; the alphas' gradients are averaged by hand
        self.steps_per_epoch = math.ceil(len(ctx.data.train) / budget.batch_size)

    def _batches(self, epoch: int, phase_epoch: int, phase_epochs: int, opt: torch.optim.Optimizer,
                 stream: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """The epoch's training batches, with what both phases do around a step: masks refreshed every
        ``mask_every`` steps (from the epoch's start), the weight lr on its cosine, progress shown."""
        ctx = self.ctx
        base_lr = ctx.evaluator.budget.lr
        total = max(1, phase_epochs * self.steps_per_epoch)
        batches = epoch_batches(ctx.data.train, ctx.evaluator.budget.batch_size, ctx.seed, epoch, stream, ctx.device)
        for i, (x, y, n) in enumerate(batches):
            step = phase_epoch * self.steps_per_epoch + i
            if i % self.opts.mask_every == 0:
                self.supernet.refresh_masks()
            for g in opt.param_groups:
                g["lr"] = base_lr * cosine(step / total)
            yield x, y, n
            ctx.progress.trial_progress((step + 1) / total)

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        opts = self.opts
        phase = "gradient" if epoch < opts.search_epochs else "sandwich"
        if phase != self._shown:  # a new phase, or the first epoch of a resumed run
            self._shown = phase
            self.ctx.progress.trial_started(0, f"supernet gradient search, {opts.search_epochs} epochs"
                                            if phase == "gradient" else
                                            f"sandwich training of the supernet, {opts.sandwich_epochs} epochs")
        if phase == "gradient":
            self._gradient_epoch(epoch)
            self.seconds["gradient_search_s"] += time.perf_counter() - t0
            if epoch == opts.search_epochs - 1:
                self.derived = self.supernet.derive()
            return {"phase": "gradient", "alphas": self.supernet.alpha_summary()}
        self._sandwich_epoch(epoch)
        self.seconds["sandwich_s"] += time.perf_counter() - t0
        return {"phase": "sandwich"}

    def _gradient_epoch(self, epoch: int) -> None:
        ctx, supernet, alphas = self.ctx, self.supernet, self.alphas
        supernet.set_mixed().train()
        val = cycle_batches(ctx.data.val, ctx.evaluator.budget.batch_size, ctx.seed, epoch, 1, ctx.device)
        for x, y, n in self._batches(epoch, epoch, self.opts.search_epochs, self.w_opt, 0):
            xv, yv, nv = next(val)
            # architecture step (first-order DARTS): gradients of the validation loss w.r.t. alpha only
            loss_v = shard_loss(supernet(xv), yv, nv)
            _finite(loss_v, "the architecture step")
            grads = torch.autograd.grad(loss_v, alphas)
            for a, g in zip(alphas, grads):
                a.grad = g
            distributed.average_grads(alphas)
            self.a_opt.step()
            # weight step on the training batch
            loss = shard_loss(self.ddp(x), y, n)
            _finite(loss, "the weight step")
            self.w_opt.zero_grad(set_to_none=True)
            loss.backward()
            self._clip()
            self.w_opt.step()

    def _sandwich_epoch(self, epoch: int) -> None:
        ctx, supernet, opts = self.ctx, self.supernet, self.opts
        phase_epoch = epoch - opts.search_epochs
        rng = random.Random(epoch_seed(ctx.seed, epoch, 3))
        # weight-free decisions that gradient mode fixes (sparse_mbv2's downsampling placement) are
        # drawn per step for the extremes; spaces without one pass None
        placements = supernet.choices.get("downsample") or [None]
        supernet.train()
        for x, y, n in self._batches(epoch, phase_epoch, opts.sandwich_epochs, self.s_opt, 2):
            children = [supernet.extreme(True, rng.choice(placements)), supernet.extreme(False, rng.choice(placements))]
            children += [supernet.sample(rng) for _ in range(opts.sandwich_random)]
            self.s_opt.zero_grad(set_to_none=True)
            for i, arch in enumerate(children):
                supernet.set_arch(arch)
                # DDP averages the accumulated gradients once, in the last child's backward
                last = i == len(children) - 1
                with contextlib.nullcontext() if last or self.ddp is supernet else self.ddp.no_sync():
                    loss = shard_loss(self.ddp(x), y, n)
                    _finite(loss, "sandwich training")
                    loss.backward()
            self._clip()
            self.s_opt.step()
        supernet.set_mixed()

    def _clip(self) -> None:
        # g2g_mlp on mnist1d, seed 2, 59 sandwich epochs: summed over the 4 children the gradient norm is
        # 7-95 per step, then one step of 436 and momentum drove the weights to inf within 20 steps
        torch.nn.utils.clip_grad_norm_(self.supernet.weight_parameters(), self.opts.grad_clip)

    def state_dict(self) -> dict[str, Any]:
        return {"supernet": self.supernet.state_dict(), "w_opt": self.w_opt.state_dict(),
                "a_opt": self.a_opt.state_dict(), "s_opt": self.s_opt.state_dict(),
                "derived": None if self.derived is None else self.derived.to_json(), "seconds": dict(self.seconds)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.s_opt.load_state_dict(state["s_opt"])
        self.derived = None if state["derived"] is None else Arch.from_json(state["derived"])
        self.seconds = {k: float(v) for k, v in state["seconds"].items()}

    def derive(self) -> Arch:
        """The argmax of alpha at the end of the gradient search."""
        self.supernet.set_mixed()
        return self.derived if self.derived is not None else self.supernet.derive()
