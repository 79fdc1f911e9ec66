"""Mask computation: unstructured and block magnitude, N:M, learned scores, and the gradual-pruning schedule.

Every mask is a float tensor of 0/1 with the weight's shape and dtype, so ``weight * mask`` is the
weight a layer runs with. Ties are broken by flat index (a stable sort), so a mask is a function
of the weight values alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..errors import SparseNASError

__all__ = [
    "InvalidSparsity", "OC_BLOCK", "check_sparsity", "check_nm", "magnitude_mask", "block_magnitude_mask",
    "block_magnitude_levels", "nm_mask",
    "score_mask",
    "TopKStraightThrough", "CubicSparsitySchedule",
]


class InvalidSparsity(SparseNASError, ValueError):
    """A sparsity level, mask kind or N:M pattern that is not allowed."""


def check_sparsity(sparsity: float, *, name: str = "sparsity") -> float:
    """Return ``sparsity`` as a float in [0, 1), or raise :class:`InvalidSparsity`."""
    s = float(sparsity)
    if not 0.0 <= s < 1.0:  # also rejects NaN
        raise InvalidSparsity(f"{name} must be in [0, 1) (the fraction of zero weights), got {sparsity!r}")
    return s


def _num_zeros(numel: int, sparsity: float) -> int:
    return min(numel, int(round(check_sparsity(sparsity) * numel)))


def magnitude_mask(weight: Tensor, sparsity: float) -> Tensor:
    """Mask with exactly ``round(sparsity * numel)`` zeros, at the smallest ``|weight|``.

    Among equal magnitudes the lower flat index is pruned first (stable sort).
    """
    w = weight.detach()
    k = _num_zeros(w.numel(), sparsity)
    mask = torch.ones(w.numel(), dtype=w.dtype if w.is_floating_point() else torch.float32, device=w.device)
    if k:
        order = torch.argsort(w.abs().flatten(), stable=True)
        mask[order[:k]] = 0
    return mask.view_as(w)


# Output channels per block of a block mask: the form MNN's (and XNNPACK's) sparse kernels run fastest,
# one weight column loaded once for 4 output channels (docs/measurements.md, "MNN").
OC_BLOCK = 4


def block_magnitude_mask(weight: Tensor, sparsity: float, block: int = OC_BLOCK) -> Tensor:
    """Mask whose zeros come in blocks of ``block`` consecutive output channels at one input
    position (one weight column of a ``block``-channel group): the blocks with the smallest mean
    ``|w|`` are zeroed, as many as bring the zeros nearest to ``round(sparsity * numel)`` (within half a
    block: a 64-weight layer at 0.7 gets 0.6875, within a profile's snapping of its level). Channels past the last whole
    group form one smaller group. Ties prune the lower index first (stable sort)."""
    w = weight.detach()
    return block_magnitude_levels(w, [sparsity], block).to(w.dtype if w.is_floating_point() else torch.float32)


def block_magnitude_levels(weight: Tensor, sparsities: Sequence[float], block: int = OC_BLOCK) -> Tensor:
    """Long tensor shaped like ``weight``: how many of the :func:`block_magnitude_mask` masks at
    ``sparsities`` keep each weight, from one ranking of the blocks. A higher sparsity zeroes a
    superset of the blocks (the same ranking, more of it), so for ascending ``sparsities`` this
    count minus one is the index of the highest level whose mask still keeps the weight."""
    w = weight.detach()
    cout = w.shape[0]
    rows = w.reshape(cout, -1)
    groups = [(g, min(g + block, cout)) for g in range(0, cout, block)]
    group_sizes = torch.tensor([b - a for a, b in groups], device=w.device)
    scores = torch.cat([rows[a:b].abs().mean(0) for a, b in groups])             # one per (group, column)
    order = torch.argsort(scores, stable=True)
    zeroed = torch.cumsum(group_sizes.repeat_interleave(rows.shape[1])[order], 0)  # weights zeroed by the first n blocks
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=w.device)
    kept = torch.zeros(scores.numel(), dtype=torch.long, device=w.device)
    for s in sparsities:
        kept += rank >= _blocks_zeroed(zeroed, _num_zeros(w.numel(), s))
    return kept.reshape(len(groups), rows.shape[1]).repeat_interleave(group_sizes, 0).view_as(w)


def _blocks_zeroed(zeroed: Tensor, k: int) -> int:
    """How many of the ranked blocks to zero (``zeroed[n - 1]``: weights the first n zero) to land nearest ``k`` zeros."""
    if not k:
        return 0
    n = int(torch.searchsorted(zeroed, torch.tensor(k, device=zeroed.device), right=True))  # at most k zeros
    below = int(zeroed[n - 1]) if n else 0
    if n < len(zeroed) and int(zeroed[n]) - k < k - below:  # one block more lands nearer k
        n += 1
    return n


def nm_mask(weight: Tensor, n: int, m: int) -> Tensor:
    """N:M mask: keep the ``n`` largest ``|w|`` in every ``m`` consecutive weights of a row.

    A row is one output unit's weights flattened (in_features, or in_channels/groups * kh * kw),
    as NVIDIA's 2:4 sparsity groups along the reduction dimension. Ties keep the lower index.
    """
    check_nm(n, m)
    w = weight.detach()
    rows = w.reshape(w.shape[0], -1) if w.dim() > 1 else w.reshape(1, -1)
    if rows.shape[1] % m:
        raise InvalidSparsity(
            f"N:M sparsity {n}:{m} needs the row length (inputs per output unit) to be divisible by {m}; "
            f"weight of shape {tuple(w.shape)} has rows of {rows.shape[1]}"
        )
    groups = rows.abs().reshape(rows.shape[0], -1, m)
    keep = torch.argsort(groups, dim=-1, descending=True, stable=True)[..., :n]
    mask = torch.zeros_like(groups, dtype=w.dtype if w.is_floating_point() else torch.float32)
    mask.scatter_(-1, keep, 1.0)
    return mask.view_as(w)


def check_nm(n: int, m: int) -> None:
    """Raise :class:`InvalidSparsity` unless ``1 <= n <= m`` are integers."""
    if not (isinstance(n, int) and isinstance(m, int) and 1 <= n <= m):
        raise InvalidSparsity(f"N:M sparsity needs integers 1 <= n <= m, got n={n!r}, m={m!r}")


class TopKStraightThrough(torch.autograd.Function):
    """Forward: hard mask keeping the largest ``|score|`` at the given sparsity.
    Backward: the mask's gradient passes unchanged to the scores (HYDRA's GetSubnet, DASS)."""

    @staticmethod
    def forward(ctx, scores: Tensor, sparsity: float, block: int = 0) -> Tensor:  # type: ignore[override]
        return block_magnitude_mask(scores, sparsity, block) if block else magnitude_mask(scores, sparsity)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        return grad, None, None


def score_mask(scores: Tensor, sparsity: float, block: int = 0) -> Tensor:
    """Hard top-k mask of ``|scores|`` (in blocks of ``block`` output channels when given) that is
    differentiable (straight-through) in ``scores``."""
    return TopKStraightThrough.apply(scores, sparsity, block)


@dataclass(frozen=True)
class CubicSparsitySchedule:
    """Zhu & Gupta (2017), "To prune, or not to prune":
    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n Δt))**3`` for ``t0 <= t <= t0 + n Δt``,
    with ``t0 = start_step``, ``n Δt = end_step - start_step`` and t rounded down to a multiple of
    ``frequency`` (Δt) steps after t0; ``s_i`` before the start, ``s_f`` after the end.

    Used by :class:`~sparsenas.ops.sparse.GradualPruner` with ``final=1.0`` its values are the
    *fraction of each layer's target* reached (see there).
    """

    final: float
    start_step: int
    end_step: int
    initial: float = 0.0
    frequency: int = 1

    def __post_init__(self) -> None:
        for name in ("final", "initial"):
            v = float(getattr(self, name))
            if not 0.0 <= v <= 1.0:
                raise InvalidSparsity(f"CubicSparsitySchedule: {name} must be in [0, 1], got {v}")
        if self.end_step < self.start_step:
            raise InvalidSparsity(
                f"CubicSparsitySchedule: end_step ({self.end_step}) must be >= start_step ({self.start_step})"
            )
        if self.frequency < 1:
            raise InvalidSparsity(f"CubicSparsitySchedule: frequency must be >= 1, got {self.frequency}")

    def at(self, step: int) -> float:
        if step < self.start_step:
            return float(self.initial)
        if step >= self.end_step:
            return float(self.final)
        t = self.start_step + (step - self.start_step) // self.frequency * self.frequency
        progress = (t - self.start_step) / (self.end_step - self.start_step)
        # Same formula written from s_i, so that it is exactly s_i at t0 and monotone under rounding.
        s = self.initial + (self.final - self.initial) * (1.0 - (1.0 - progress) ** 3)
        return float(min(max(s, min(self.initial, self.final)), max(self.initial, self.final)))

