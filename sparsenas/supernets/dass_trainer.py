"""DASS' supernet training (Mousavi et al., ACM TECS 2023): the three-phase bilevel search on a
mixed-op supernet (:mod:`sparsenas.supernets.mixed`) as a :class:`SupernetTrainer`, beside the
supernet it trains. Its settings are the dass strategy's options
(:class:`sparsenas.strategies.dass.DassConfig`); the strategy (:mod:`sparsenas.strategies.dass`)
holds the search loop around it: budget, derivation, retraining.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor, nn

from .. import distributed
from ..data import DataSplits
from ..evaluators import TrainingDiverged, accuracy, cosine
from ..ops import sparse_modules
from ..search_spaces.base import SearchSpace
from ..task import Task
from .base import (SupernetTrainer, cycle_batches, epoch_batches, load_optimizer, optimizer_state, run_epochs,
                   shard_loss)
from .mixed import MixedSupernet, OpLatency, build_mixed_supernet, measured_op_latency

if TYPE_CHECKING:  # the strategy's options; a trainer reads them, never imports the strategy
    from ..strategies.dass import DassConfig


# ---------------------------------------------------------------- the search
@dataclass
class SearchLog:
    history: list[dict[str, Any]]            # one entry per epoch: phase, softmax(alpha), masked val accuracy
    latency_table: list[tuple[str, int, Tensor]] | None
    seconds: float
    steps: int


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
            for g in self.w_opt.param_groups:
                g["lr"] = cfg.weight_lr * cosine(step / total)
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
            entry["val_accuracy_masked"] = round(accuracy(net, self.data.val, device, batch_size=128), 4)
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
