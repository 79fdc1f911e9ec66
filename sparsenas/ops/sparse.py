"""Masked (training-time) sparse layers: a dense weight times a 0/1 mask, so gradients flow and the
mask can change; ``to_inference`` freezes the mask into a real kernel (see :mod:`.kernels`).

Mask kinds:
- ``"magnitude"``: unstructured, the smallest ``|w|`` are zero; recomputed by ``update_mask``.
- ``"magnitude_oc4"``: magnitude over blocks of 4 output channels at one input position (the zeros
  come four channels at a time: the form MNN's fastest sparse kernel runs, see ``masks.OC_BLOCK``).
- ``"nm"``: N:M along the input dimension (2:4 by default); its sparsity is fixed at ``1 - n/m``.
- ``"score"``: HYDRA/DASS learned scores; the mask is the top-k of ``|score|`` recomputed at every
  forward, with a straight-through gradient to the scores; ``"score_oc4"`` the same over blocks of
  4 output channels (DASS's form of ``"magnitude_oc4"``).
"""
from __future__ import annotations

import math
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kernels import make_kernel
from .masks import (OC_BLOCK, InvalidSparsity, block_magnitude_mask, check_nm, check_sparsity, magnitude_mask, nm_mask,
                    score_mask)

__all__ = [
    "MASK_KINDS", "SCORE_KINDS", "SCORE_OF", "SparseMixin", "SparseLinear", "SparseConv2d",
    "sparse_modules", "apply_sparsity", "update_masks", "GradualPruner",
]

MASK_KINDS = ("magnitude", "nm", "score", "magnitude_oc4", "score_oc4")
MAGNITUDE_KINDS = {"magnitude": magnitude_mask, "magnitude_oc4": block_magnitude_mask}  # pruned by |w|
SCORE_KINDS = {"score": 0, "score_oc4": OC_BLOCK}  # pruned by learned scores: kind -> block of output channels
SCORE_OF = {"magnitude": "score", "magnitude_oc4": "score_oc4"}  # a magnitude kind's learned-score form


class SparseMixin:
    """Mask logic shared by :class:`SparseLinear` and :class:`SparseConv2d`.

    Attributes: ``sparsity`` (current), ``target_sparsity`` (what gradual pruning ends at),
    ``mask_kind``, ``n``/``m``; buffer ``mask`` (float 0/1, weight's shape); parameter ``score``
    for ``mask_kind="score"``.
    """

    weight: nn.Parameter
    mask: Tensor
    score: nn.Parameter | None
    structural_mask = False  # True: the mask comes from the layer's structure (G2G); pruning leaves it alone

    def _init_sparse(self, sparsity: float, mask_kind: str, n: int, m: int) -> None:
        if mask_kind not in MASK_KINDS:
            raise InvalidSparsity(f"unknown mask_kind '{mask_kind}'; allowed: {', '.join(MASK_KINDS)}")
        self.mask_kind, self.n, self.m = mask_kind, n, m
        sparsity = check_sparsity(sparsity)
        if mask_kind == "nm":
            check_nm(n, m)
            fixed = 1.0 - n / m
            # 0.0 (the default) means "implied by n:m"; any other value must agree with it.
            if sparsity not in (0.0,) and not math.isclose(sparsity, fixed, abs_tol=1e-6):
                raise InvalidSparsity(
                    f"mask_kind='nm' with n={n}, m={m} has sparsity 1 - n/m = {fixed:g}; got sparsity={sparsity:g}"
                )
            sparsity = fixed
            row = self.weight[0].numel()
            if row % m:
                raise InvalidSparsity(
                    f"N:M sparsity {n}:{m} needs inputs per output unit divisible by {m}; "
                    f"{type(self).__name__} with weight {tuple(self.weight.shape)} has {row}"
                )
        self.sparsity = self.target_sparsity = sparsity
        self.register_buffer("mask", torch.ones_like(self.weight, requires_grad=False))  # type: ignore[attr-defined]
        if mask_kind in SCORE_KINDS:
            # HYDRA's scaled score init: |w| / max|w| * sqrt(6 / fan_in) (kaiming-uniform range).
            fan_in = self.weight[0].numel()
            with torch.no_grad():
                s = self.weight.abs() / self.weight.abs().max().clamp_min(1e-12) * math.sqrt(6.0 / fan_in)
            self.score = nn.Parameter(s)
        else:
            self.register_parameter("score", None)  # type: ignore[attr-defined]
        self.update_mask()

    # ---- mask management
    def update_mask(self) -> None:
        """Recompute ``mask`` from the current weights (magnitude, nm) or scores (score)."""
        with torch.no_grad():
            if self.mask_kind in MAGNITUDE_KINDS:
                # Pruned weights keep their last values (they get no gradient). Ranking the masked
                # weights keeps them pruned while the sparsity grows (as Zhu & Gupta's TF code);
                # to lower the sparsity, the raw weights decide which come back.
                zeros = self.mask.numel() - int(torch.count_nonzero(self.mask))
                growing = round(self.sparsity * self.mask.numel()) >= zeros
                new = MAGNITUDE_KINDS[self.mask_kind](self.weight * self.mask if growing else self.weight, self.sparsity)
            elif self.mask_kind == "nm":
                new = nm_mask(self.weight, self.n, self.m)
            else:
                new = score_mask(self.score.detach(), self.sparsity, SCORE_KINDS[self.mask_kind])  # type: ignore[union-attr]
            self.mask.copy_(new)

    def set_sparsity(self, sparsity: float) -> None:
        """Set the current sparsity (gradual schedule) and recompute the mask.

        N:M masks have a fixed sparsity; only ``1 - n/m`` is accepted for them.
        """
        sparsity = check_sparsity(sparsity)
        if self.mask_kind == "nm" and not math.isclose(sparsity, self.sparsity, abs_tol=1e-6):
            raise InvalidSparsity(f"an N:M ({self.n}:{self.m}) mask has fixed sparsity {self.sparsity:g}; got {sparsity:g}")
        self.sparsity = sparsity
        self.update_mask()

    def current_mask(self) -> Tensor:
        """The mask used by forward; for scores, differentiable (straight-through) in ``score``."""
        if self.mask_kind in SCORE_KINDS:
            mask = score_mask(self.score, self.sparsity, SCORE_KINDS[self.mask_kind])  # type: ignore[arg-type]
            with torch.no_grad():  # keep the buffer (nnz, state_dict) in sync with the scores
                self.mask.copy_(mask)
            return mask
        return self.mask

    @property
    def oc_block(self) -> int:
        """Output channels per block of zeros (0: the zeros follow no block pattern)."""
        return OC_BLOCK if self.mask_kind in ("magnitude_oc4", "score_oc4") else 0

    def masked_weight(self) -> Tensor:
        """``weight * mask``; gradients reach the weight (where the mask is 1) and the scores."""
        return self.weight * self.current_mask()

    def nnz(self) -> int:
        """Non-zeros of the masked weight."""
        return int(torch.count_nonzero(torch.where(self.mask.bool(), self.weight.detach(), 0.0)))

    @property
    def density(self) -> float:
        return self.nnz() / self.weight.numel()

    def _sparse_repr(self) -> str:
        kind = f"nm {self.n}:{self.m}" if self.mask_kind == "nm" else self.mask_kind
        return f", sparsity={self.sparsity:.4g}, target={self.target_sparsity:.4g}, kind={kind}"

    def to_inference(self, impl: str = "dense") -> nn.Module:
        """Kernel module (see ``KERNELS``) running this layer with its current mask frozen."""
        return make_kernel(self, impl)  # type: ignore[arg-type]


class SparseLinear(SparseMixin, nn.Linear):
    """``nn.Linear`` with a mask; extra keyword-only args: sparsity, mask_kind, n, m."""

    def __init__(self, *args: Any, sparsity: float = 0.0, mask_kind: str = "magnitude",
                 n: int = 2, m: int = 4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_sparse(sparsity, mask_kind, n, m)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.masked_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._sparse_repr()


class SparseConv2d(SparseMixin, nn.Conv2d):
    """``nn.Conv2d`` with a mask; extra keyword-only args: sparsity, mask_kind, n, m."""

    def __init__(self, *args: Any, sparsity: float = 0.0, mask_kind: str = "magnitude",
                 n: int = 2, m: int = 4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_sparse(sparsity, mask_kind, n, m)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._sparse_repr()


# ---------------------------------------------------------------- model-level helpers
def sparse_modules(model: nn.Module) -> list[SparseMixin]:
    """Every sparse layer of ``model`` in ``named_modules`` order."""
    return [m for m in model.modules() if isinstance(m, SparseMixin)]


def apply_sparsity(model: nn.Module, sparsity: float) -> int:
    """Set target and current sparsity of every non-N:M sparse layer; returns how many changed."""
    sparsity = check_sparsity(sparsity)
    changed = 0
    for m in sparse_modules(model):
        if m.mask_kind != "nm" and not m.structural_mask:
            m.target_sparsity = sparsity
            m.set_sparsity(sparsity)
            changed += 1
    return changed


def update_masks(model: nn.Module) -> None:
    """Recompute every sparse layer's mask from its current weights or scores."""
    for m in sparse_modules(model):
        m.update_mask()


class Schedule(Protocol):
    def at(self, step: int) -> float: ...


class GradualPruner:
    """Gradual pruning where each layer ramps to its *own* target.

    ``schedule.at(step)`` is a progress fraction f in [0, 1] (clamped); each magnitude/score layer
    gets ``sparsity = target_sparsity * f``. With ``CubicSparsitySchedule(final=1.0, t0, t1)`` this
    is exactly Zhu & Gupta's cubic schedule per layer with ``s_f = target`` (and ``s_i = target *
    initial``). N:M layers are structural (fixed 1 - n/m) and are left alone.
    """

    def __init__(self, model: nn.Module, schedule: Schedule) -> None:
        self.model, self.schedule = model, schedule

    def step(self, step: int) -> float:
        """Apply the schedule at ``step`` (recomputing masks where the sparsity changed); returns f."""
        f = min(1.0, max(0.0, float(self.schedule.at(step))))
        for m in sparse_modules(self.model):
            if m.mask_kind == "nm" or m.structural_mask:
                continue
            s = m.target_sparsity * f
            if s != m.sparsity:
                m.set_sparsity(s)
        return f
