"""Balanced mixture of supernets (Roshtkhari, Toews, Pedersoli, AutoML-Conf 2023).

M single-path supernets (no weights shared between them; within one, all paths share) and an
affinity matrix ``W`` (paths x M), initialised to 1. One step:

1. sample a path ``a`` uniformly;
2. ``p(m|a) = softmax(T * W[a])`` with the temperature T rising linearly from 1 to 100, corrected by
   the balancing factors (below), and sample a model ``m``;
3. one SGD step of model ``m`` on path ``a`` with a training batch;
4. accuracy of model ``m`` on path ``a`` on one validation batch: ``W[a, m] <- 0.9 W[a, m] + 0.1 acc``.

Balancing (once per epoch, as the paper's code): starting from ``q = softmax(T W)``, while the
model marginal ``mean_a q(m|a)`` is further than KL 1e-4 from uniform, divide ``q`` by the marginal
and renormalise the rows (Sinkhorn-like); the product of the marginals divided out is the
correction applied to every step's ``p(m|a)`` until the next epoch. So each model receives about
1/M of the paths and the assignment cannot collapse onto one model.

The supernet factory must return a module with ``forward(x, arch)``; BatchNorm should use batch
statistics (``track_running_stats=False``), as the paths of one supernet see different resolutions.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from .. import distributed
from ..arch import Arch
from ..data import DataSplits
from ..errors import SparseNASError
from ..evaluators import cosine
from ..search_spaces.base import SearchSpace
from ..task import Task
from .base import SupernetTrainer, cycle_batches, epoch_batches, epoch_seed, run_epochs, shard_loss
from .registry import register_supernet

__all__ = ["kl_to_uniform", "balance_correction", "balanced_probs", "BalancedMixture", "MixtureReport",
           "BalancedTrainer", "train_mixture", "pooling_path_supernet"]


@register_supernet("pooling_resnet20", "path")
def pooling_path_supernet(space: SearchSpace, task: Task) -> nn.Module:
    """A single-path supernet over all architectures of pooling_resnet20 (shared weights, BatchNorm on
    batch statistics); ``forward(x, arch)`` runs ``arch``'s path. The balanced mixture's models."""
    from ..search_spaces._pooling_modules import PoolingSupernet

    space.check_task(task)
    return PoolingSupernet(task.input_shape[0], task.num_classes)


def kl_to_uniform(marginal: Tensor) -> float:
    """KL(marginal || uniform) for a probability vector of length M."""
    p = marginal.double().clamp_min(1e-300)
    return float((p * (p * len(p)).log()).sum())


def balance_correction(probs: Tensor, tol: float = 1e-4, max_iter: int = 10_000) -> Tensor:
    """Per-model factors ``c`` (M,) such that ``balanced_probs(probs, c)`` has a model marginal
    within KL ``tol`` of uniform. ``probs`` (paths, M) has rows summing to 1."""
    q = probs.double()
    c = torch.ones(q.shape[1], dtype=torch.float64)
    for _ in range(max_iter):
        marginal = q.mean(0)
        if kl_to_uniform(marginal) <= tol:
            break
        c *= marginal
        q = q / marginal
        q = q / q.sum(1, keepdim=True)
    return c.float()


def balanced_probs(probs: Tensor, correction: Tensor) -> Tensor:
    """Rows of ``probs / correction``, renormalised: (paths, M) or (M,)."""
    q = probs / correction
    return q / q.sum(-1, keepdim=True)


@dataclass
class MixtureReport:
    steps: int
    seconds: float
    assignment: list[int]           # per path: the model it is most likely sent to at the end
    model_steps: list[int]          # SGD steps each model received


class BalancedMixture(nn.Module):
    """M supernets over ``paths`` with their affinity matrix ``W`` (paths, M)."""

    def __init__(self, make_supernet: Callable[[], nn.Module], paths: Sequence[Arch], num_models: int = 4, *,
                 t_start: float = 1.0, t_end: float = 100.0, ema: float = 0.9, tol: float = 1e-4) -> None:
        super().__init__()
        if num_models < 1:
            raise ValueError(f"num_models must be at least 1, got {num_models}")
        self.paths = list(paths)
        self.models = nn.ModuleList(make_supernet() for _ in range(num_models))
        self.register_buffer("W", torch.ones(len(self.paths), num_models))
        self.register_buffer("correction", torch.ones(num_models))
        self.t_start, self.t_end, self.ema, self.tol = t_start, t_end, ema, tol

    def extra_repr(self) -> str:
        return f"paths={len(self.paths)}, models={self.num_models}, T={self.t_start:g}->{self.t_end:g}, ema={self.ema:g}"

    @property
    def num_models(self) -> int:
        return len(self.models)

    def temperature(self, progress: float) -> float:
        return self.t_start + (self.t_end - self.t_start) * min(1.0, max(0.0, progress))

    def raw_probs(self, progress: float) -> Tensor:
        """softmax(T W) per path: (paths, M)."""
        return torch.softmax(self.temperature(progress) * self.W, dim=1)

    def rebalance(self, progress: float) -> float:
        """Recompute the balancing correction at this temperature; returns the corrected marginal's KL."""
        self.correction.copy_(balance_correction(self.raw_probs(progress), self.tol))
        return kl_to_uniform(self.model_probs(progress).mean(0))

    def model_probs(self, progress: float) -> Tensor:
        """Balanced p(m | path): (paths, M)."""
        return balanced_probs(self.raw_probs(progress), self.correction)

    def update(self, path: int, model: int, accuracy: float) -> None:
        self.W[path, model] = self.ema * self.W[path, model] + (1 - self.ema) * accuracy

    @torch.no_grad()
    def score(self, x: Tensor, y: Tensor, batch_size: int = 256, device: str | torch.device = "cpu",
              paths: Sequence[int] | None = None, models: Sequence[int] | None = None) -> Tensor:
        """Accuracy of every (path, model) pair on (x, y): (paths, M) (NaN where not asked)."""
        out = torch.full((len(self.paths), self.num_models), float("nan"))
        for m in (range(self.num_models) if models is None else models):
            net = self.models[m]
            net.eval()
            for a in (range(len(self.paths)) if paths is None else paths):
                correct = 0
                for i in range(0, len(y), batch_size):
                    logits = net(x[i:i + batch_size].to(device), self.paths[a])
                    correct += int((logits.argmax(1).cpu() == y[i:i + batch_size]).sum())
                out[a, m] = correct / max(1, len(y))
        return out


class BalancedTrainer(SupernetTrainer):
    """Training of a :class:`BalancedMixture` (the paper's schedule: SGD, cosine lr ``lr -> lr_end``)
    as a :class:`~sparsenas.supernets.base.SupernetTrainer`. Under torchrun every model is wrapped in
    DistributedDataParallel; the validation accuracy that updates ``W`` is summed over the ranks, so
    every rank samples the same (path, model) pairs."""

    kind = "balanced"

    def __init__(self, make_mixture: Callable[[], BalancedMixture], data: DataSplits, *, epochs: int,
                 batch_size: int = 64, lr: float = 0.1, lr_end: float = 1e-3, momentum: float = 0.9,
                 weight_decay: float = 0.0, seed: int = 0, device: str | torch.device = "cpu",
                 on_step: Callable[[float], None] | None = None, extra_settings: dict[str, Any] | None = None) -> None:
        self.extra_settings = dict(extra_settings or {})
        self.make_mixture, self.data, self.epochs, self.batch_size = make_mixture, data, epochs, batch_size
        self.lr, self.lr_end, self.momentum, self.weight_decay = lr, lr_end, momentum, weight_decay
        self.seed, self.device, self.on_step = seed, device, on_step
        self.step, self.seconds = 0, 0.0

    def settings(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "lr_end": self.lr_end,
                "momentum": self.momentum, "weight_decay": self.weight_decay, "task": self.data.task.to_dict(),
                "train_rows": len(self.data.train), **self.extra_settings}

    def build(self) -> None:
        self.mixture = mixture = self.make_mixture()
        mixture.to(self.device).train()
        self.settings_paths = [a.digest() for a in mixture.paths]
        self.opts = [torch.optim.SGD(net.parameters(), lr=self.lr, momentum=self.momentum,
                                     weight_decay=self.weight_decay) for net in mixture.models]
        self.nets = [distributed.wrap(net) for net in mixture.models]
        self.model_steps = [0] * mixture.num_models
        self.total = max(1, self.epochs * math.ceil(len(self.data.train) / self.batch_size))

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        mixture, device, t0 = self.mixture, self.device, time.perf_counter()
        rng = random.Random(epoch_seed(self.seed, epoch, 4))
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, 5))
        progress_t = epoch / max(1, self.epochs - 1)
        kl = mixture.rebalance(progress_t)
        val = cycle_batches(self.data.val, self.batch_size, self.seed, epoch, 1, device)
        for x, y, n in epoch_batches(self.data.train, self.batch_size, self.seed, epoch, 0, device):
            cur_lr = self.lr_end + (self.lr - self.lr_end) * cosine(self.step / self.total)
            a = rng.randrange(len(mixture.paths))
            m = int(torch.multinomial(mixture.model_probs(progress_t)[a], 1, generator=gen))
            net, opt = mixture.models[m], self.opts[m]
            for g in opt.param_groups:
                g["lr"] = cur_lr
            net.train()
            loss = shard_loss(self.nets[m](x, mixture.paths[a]), y, n)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.model_steps[m] += 1
            xv, yv, _ = next(val)
            with torch.no_grad():  # batch statistics in either mode: eval() changes nothing but dropout
                hits = torch.tensor([float((net(xv, mixture.paths[a]).argmax(1) == yv).sum()), float(len(yv))],
                                    dtype=torch.float64)
            distributed.average_([hits])  # the ratio of the means is the accuracy over the whole batch
            mixture.update(a, m, float(hits[0] / hits[1]))
            self.step += 1
            if self.on_step is not None:
                self.on_step(self.step / self.total)
        self.seconds += time.perf_counter() - t0
        return {"kl_to_uniform": round(kl, 6), "model_steps": list(self.model_steps)}

    def state_dict(self) -> dict[str, Any]:
        return {"mixture": self.mixture.state_dict(), "opts": [o.state_dict() for o in self.opts],
                "paths": self.settings_paths, "step": self.step, "model_steps": list(self.model_steps),
                "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["paths"]) != self.settings_paths:
            raise SparseNASError("the supernet checkpoint's mixture covers other architectures than this run; delete "
                                 "it or pass another --checkpoint-dir")
        self.mixture.load_state_dict(state["mixture"])
        for o, st in zip(self.opts, state["opts"]):
            o.load_state_dict(st)
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        self.model_steps = [int(v) for v in state["model_steps"]]

    def derive(self) -> MixtureReport:
        final = self.mixture.model_probs(1.0)
        return MixtureReport(self.step, self.seconds, final.argmax(1).tolist(), list(self.model_steps))


def train_mixture(mixture: BalancedMixture, data: DataSplits, *, epochs: int, batch_size: int = 64, lr: float = 0.1,
                  lr_end: float = 1e-3, momentum: float = 0.9, weight_decay: float = 0.0, seed: int = 0,
                  device: str | torch.device = "cpu",
                  on_step: Callable[[float], None] | None = None) -> MixtureReport:
    """Train the mixture in place, without a checkpoint (see :class:`BalancedTrainer`)."""
    trainer = BalancedTrainer(lambda: mixture, data, epochs=epochs, batch_size=batch_size, lr=lr, lr_end=lr_end,
                              momentum=momentum, weight_decay=weight_decay, seed=seed, device=device, on_step=on_step)
    run_epochs(trainer, seed)
    return trainer.derive()
