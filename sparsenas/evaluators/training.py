"""Accuracy evaluator: train a network under a budget of epochs or seconds, then validate and test.

Learning rate and pruning follow one progress value p in [0, 1] (steps done / steps planned, or
seconds spent / seconds allowed, whichever is further), so an epoch budget and a time budget
share one code path.

Also the training kit every trainer uses (the supernets' too): the :func:`cosine` schedule, the
:func:`sgd` optimizer with its weight-decay groups, :func:`accuracy`, and :class:`TrainingDiverged`.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from ..data import DataSplits
from ..ops import CubicSparsitySchedule, GradualPruner, recalibrate_bn, sparse_modules


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf: the architecture (or its learning rate) is unusable."""


@dataclass(frozen=True)
class TrainBudget:
    epochs: int = 6
    seconds: float | None = None   # when set, training stops after this many seconds (epochs is then a cap)
    batch_size: int = 32
    lr: float = 0.05
    weight_decay: float = 4e-5
    warmup: float = 0.1            # share of progress spent warming the learning rate up
    prune_end: float = 0.6         # share of progress after which every mask has reached its target

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class TrainResult:
    val_accuracy: float
    test_accuracy: float
    history: list[float] = field(default_factory=list)
    epochs: int = 0
    seconds: float = 0.0


def cosine(progress: float) -> float:
    """The cosine schedule's factor at ``progress`` (0 -> 1, capped at 1): from 1 down to 0."""
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def sgd(params: Iterable[nn.Parameter | tuple[str, nn.Parameter]], lr: float, weight_decay: float) -> torch.optim.SGD:
    """Nesterov SGD (momentum 0.9) with weight decay on weight matrices and kernels only: not on
    biases, normalisation, or learned mask scores (parameters named ``*score``)."""
    named = [p if isinstance(p, tuple) else ("", p) for p in params]
    decay = [p for n, p in named if p.ndim > 1 and not n.endswith("score")]
    rest = [p for n, p in named if p.ndim <= 1 or n.endswith("score")]
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                           lr=lr, momentum=0.9, nesterov=True)


@torch.no_grad()
def accuracy(model: nn.Module, dataset, device: torch.device, batch_size: int = 256) -> float:
    was_training = model.training
    model.eval()
    x, y = dataset.tensors
    correct = 0
    for i in range(0, len(y), batch_size):
        logits = model(x[i:i + batch_size].to(device))
        correct += int((logits.argmax(1).cpu() == y[i:i + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(y))


def _calibration_batches(loader, device: torch.device, batches: int = 8):
    return (x.to(device) for x, _ in itertools.islice(loader, batches))


def _lr_factor(p: float, warmup: float) -> float:
    if p < warmup:
        return 0.1 + 0.9 * p / warmup
    return cosine((p - warmup) / (1 - warmup))


def train(model: nn.Module, data: DataSplits, budget: TrainBudget, *, seed: int = 0,
          device: str | torch.device = "cpu",
          on_epoch: Callable[[int, float], None] | None = None,
          on_step: Callable[[float], None] | None = None) -> TrainResult:
    """Train in place; ``on_epoch(epoch, val_accuracy)`` may raise (e.g. optuna.TrialPruned) to stop."""
    torch.manual_seed(seed)
    device = torch.device(device)
    model.to(device).train()
    opt = sgd(model.named_parameters(), budget.lr, budget.weight_decay)
    loader = data.loader("train", budget.batch_size, shuffle=True, seed=seed)
    total_steps = max(1, budget.epochs * len(loader))
    # masks are recomputed 20 times over the ramp: every step would cost ~40% more time per step
    pruner = GradualPruner(model, CubicSparsitySchedule(1.0, 0, 1000, frequency=50)) if sparse_modules(model) else None
    # per-step hook for modules that change themselves during training (G2G dynamic sparse training)
    step_hooks = [m for m in model.modules() if callable(getattr(m, "after_step", None))]
    loss_fn = nn.CrossEntropyLoss()
    start, step, history = time.perf_counter(), 0, []
    progress = 0.0
    for epoch in range(budget.epochs):
        for x, y in loader:
            elapsed = time.perf_counter() - start
            progress = max(step / total_steps, elapsed / budget.seconds if budget.seconds else 0.0)
            if progress >= 1.0:
                break
            for g in opt.param_groups:
                g["lr"] = budget.lr * _lr_factor(progress, budget.warmup)
            if pruner is not None:
                pruner.step(int(1000 * min(1.0, progress / budget.prune_end)))
            loss = loss_fn(model(x.to(device)), y.to(device))
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch + 1}, step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            for m in step_hooks:
                m.after_step(step, progress)
            if on_step is not None:
                on_step(progress)
        recalibrate_bn(model, _calibration_batches(loader, device))
        history.append(accuracy(model, data.val, device))
        if on_epoch is not None:
            on_epoch(epoch + 1, history[-1])
        if progress >= 1.0:
            break
    if pruner is not None:  # a budget cut short still ends with every mask at its target
        pruner.step(1000)
        recalibrate_bn(model, _calibration_batches(loader, device))
    model.eval()
    val = accuracy(model, data.val, device)
    return TrainResult(val, accuracy(model, data.test, device), history, len(history), time.perf_counter() - start)
