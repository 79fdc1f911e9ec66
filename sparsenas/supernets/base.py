"""The supernet contract: what every supernet search's training is, whatever the strategy.

A :class:`SupernetTrainer` builds its supernet and optimizers, trains one epoch at a time, hands
its state for a checkpoint and takes it back, and derives its result. The strategies' loop with
per-epoch checkpoints is :func:`sparsenas.strategies.supernet.train_supernet`; :func:`run_epochs`
is the same loop without one (library use, tests).

Determinism: before every epoch the Python, numpy and torch generators are seeded from (seed,
epoch), and trainers draw batches with :func:`epoch_batches` (a permutation seeded the same way),
so an epoch's data order, masks and samples depend only on the seed, the epoch and the state the
previous epoch left. Under ``torchrun`` each rank gets its rows of every global batch and
:func:`shard_loss` makes the averaged gradient the one-process gradient.
"""
from __future__ import annotations

import contextlib
import random
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterator

import numpy as np
import torch
from torch import Tensor

from .. import distributed
from ..errors import SparseNASError


class SupernetTrainer(ABC):
    """A supernet search's training, one epoch at a time."""

    kind: ClassVar[str]          # the strategy's name, written into the checkpoint
    epochs: int                  # epochs in all

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Plain-typed settings a checkpoint must have been made with to be resumed."""

    @abstractmethod
    def build(self) -> None:
        """Make the supernet and its optimizers (the same on every rank for a seed)."""

    @abstractmethod
    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train epoch ``epoch`` (0-based); returns its log entry (JSON-able)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain types only (checkpoints are read with ``weights_only=True``)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`state_dict` gave."""

    @abstractmethod
    def derive(self) -> Any:
        """The search's result once every epoch has run."""


_STEP_LIMIT: int | None = None  # set only by step_limit(): a probe's epochs stop after that many batches


@contextlib.contextmanager
def step_limit(steps: int) -> Iterator[None]:
    """Inside it, every :func:`epoch_batches` epoch ends after ``steps`` batches: how a budget probe
    (:mod:`sparsenas.strategies.budget`) times a few real steps of a trainer's real epoch."""
    global _STEP_LIMIT
    before, _STEP_LIMIT = _STEP_LIMIT, int(steps)
    try:
        yield
    finally:
        _STEP_LIMIT = before


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A seed for (search seed, epoch, stream): independent of anything that ran before."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(stream)]).generate_state(1)[0])


def epoch_batches(dataset: Any, batch_size: int, seed: int, epoch: int, stream: int = 0,
                  device: str | torch.device = "cpu") -> Iterator[tuple[Tensor, Tensor, int]]:
    """``(x, y, global rows)`` of one epoch over a TensorDataset, in an order seeded from (seed, epoch,
    stream); under torchrun each rank gets its rows of every global batch (global batches with fewer
    rows than ranks are skipped, so no rank ever runs an empty batch)."""
    x_all, y_all = dataset.tensors
    order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(epoch_seed(seed, epoch, stream)))
    world = distributed.world_size()
    stop = len(order) if _STEP_LIMIT is None else min(len(order), _STEP_LIMIT * batch_size)
    for i in range(0, stop, batch_size):
        idx = order[i:i + batch_size]
        if len(idx) < world:
            continue
        x, y = distributed.shard((x_all[idx], y_all[idx]))
        yield x.to(device), y.to(device), len(idx)


def cycle_batches(dataset: Any, batch_size: int, seed: int, epoch: int, stream: int,
                  device: str | torch.device = "cpu") -> Iterator[tuple[Tensor, Tensor, int]]:
    """:func:`epoch_batches` without end (passes 0, 1, ... each seeded): for the validation batches
    of bilevel steps, whose split is smaller than the training one."""
    if len(dataset) < distributed.world_size():
        raise SparseNASError(f"a split of {len(dataset)} rows cannot feed {distributed.world_size()} processes; "
                             "use fewer processes or more data")
    rep = 0
    while True:
        yield from epoch_batches(dataset, batch_size, seed, epoch * 1000 + rep, stream, device)
        rep += 1


def shard_loss(logits: Tensor, y: Tensor, global_rows: int) -> Tensor:
    """Cross-entropy of this rank's rows as its share of the global batch's mean (the plain mean
    in one process): averaged over the ranks, the gradient is the one-process gradient."""
    if not distributed.active():
        return torch.nn.functional.cross_entropy(logits, y)
    return torch.nn.functional.cross_entropy(logits, y, reduction="sum") * distributed.shard_weight(global_rows)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_epoch(trainer: SupernetTrainer, seed: int, epoch: int) -> dict[str, Any]:
    """Epoch ``epoch`` of ``trainer`` with the generators seeded from (seed, epoch); its log entry."""
    seed_everything(epoch_seed(seed, epoch, 99))
    return {"epoch": epoch + 1, **trainer.train_epoch(epoch)}


def run_epochs(trainer: SupernetTrainer, seed: int) -> list[dict[str, Any]]:
    """Build ``trainer`` and train all its epochs, without a checkpoint (library use and tests)."""
    seed_everything(seed)
    trainer.build()
    return [run_epoch(trainer, seed, epoch) for epoch in range(trainer.epochs)]


def optimizer_state(opt: torch.optim.Optimizer | None) -> dict[str, Any] | None:
    return None if opt is None else opt.state_dict()


def load_optimizer(opt: torch.optim.Optimizer | None, state: dict[str, Any] | None) -> None:
    if opt is not None and state is not None:
        opt.load_state_dict(state)
