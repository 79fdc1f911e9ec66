"""Balanced mixture of supernets (Roshtkhari, Toews, Pedersoli, AutoML-Conf 2023; papers.md §3).

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
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..arch import Arch
from ..data import DataSplits

__all__ = ["kl_to_uniform", "balance_correction", "balanced_probs", "BalancedMixture", "MixtureReport",
           "train_mixture"]


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


def train_mixture(mixture: BalancedMixture, data: DataSplits, *, epochs: int, batch_size: int = 64, lr: float = 0.1,
                  lr_end: float = 1e-3, momentum: float = 0.9, weight_decay: float = 0.0, seed: int = 0,
                  device: str | torch.device = "cpu",
                  on_step: Callable[[float], None] | None = None) -> MixtureReport:
    """Train the mixture in place (the paper's schedule: SGD, cosine lr ``lr -> lr_end``)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    mixture.to(device).train()
    opts = [torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
            for net in mixture.models]
    train_loader = data.loader("train", batch_size, shuffle=True, seed=seed)
    val_loader = data.loader("val", batch_size, shuffle=True, seed=seed + 1)
    val_iter = iter(val_loader)
    total = max(1, epochs * len(train_loader))
    step, start = 0, time.perf_counter()
    model_steps = [0] * mixture.num_models
    for epoch in range(epochs):
        mixture.rebalance(epoch / max(1, epochs - 1))
        for x, y in train_loader:
            progress = step / total
            cur_lr = lr_end + 0.5 * (lr - lr_end) * (1 + math.cos(math.pi * progress))
            a = rng.randrange(len(mixture.paths))
            p = mixture.model_probs(epoch / max(1, epochs - 1))[a]
            m = int(torch.multinomial(p, 1, generator=gen))
            net, opt = mixture.models[m], opts[m]
            for g in opt.param_groups:
                g["lr"] = cur_lr
            net.train()
            loss = F.cross_entropy(net(x.to(device), mixture.paths[a]), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model_steps[m] += 1
            try:
                xv, yv = next(val_iter)
            except StopIteration:
                val_iter = iter(val_loader)
                xv, yv = next(val_iter)
            with torch.no_grad():  # batch statistics in either mode: eval() changes nothing but dropout
                acc = float((net(xv.to(device), mixture.paths[a]).argmax(1).cpu() == yv).float().mean())
            mixture.update(a, m, acc)
            step += 1
            if on_step is not None:
                on_step(step / total)
    final = mixture.model_probs(1.0)
    return MixtureReport(step, time.perf_counter() - start, final.argmax(1).tolist(), model_steps)
