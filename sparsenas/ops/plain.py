"""The plain-PyTorch form of a masked network: what ONNX (and any runtime reading ONNX) runs.

Every sparse layer becomes the ``nn.Conv2d`` / ``nn.Linear`` it stands for, holding its masked weight
(ONNX has no sparse convolution: a masked layer is a dense one in every ONNX runtime), except where
``choose`` picks a structural lowering the runtime does run faster: a block-diagonal G2G 1x1 conv as a
grouped convolution between two channel permutations (:class:`GroupedPointwise`).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn

from ..errors import SparseNASError
from .kernels import frozen_weight
from .sparse import SparseMixin
from .spec import LayerSpec, block_groups, trace_named_layers

__all__ = ["GroupedPointwise", "block_groups", "grouped_pointwise", "to_plain", "ungrouped"]


NOT_BLOCK_DIAGONAL = "GroupedPointwise: the mask is not block-diagonal between its groups"


def no_plain_equivalent(name: str, m: nn.Module) -> SparseNASError:
    """The error for a sparse layer that is neither a Conv2d nor a Linear (nothing plain stands for it)."""
    return SparseNASError(f"cannot export sparse layer '{name}' of type {type(m).__name__}: only sparse "
                          "Conv2d and Linear layers have a plain PyTorch equivalent")


class GroupedPointwise(nn.Module):
    """A block-diagonal 1x1 conv run as ``groups`` independent convs: gather the input channels
    group by group, one grouped ``nn.Conv2d``, scatter the outputs back to their channel order.
    The permutations are skipped when they are the identity (index grouping).

    x (N, Cin, H, W) -> (N, Cout, H', W')."""

    def __init__(self, weight: Tensor, in_group: Tensor, out_group: Tensor, groups: int, stride: int = 1,
                 bias: Tensor | None = None) -> None:
        super().__init__()
        cout, cin = weight.shape[:2]
        perm_in = torch.argsort(in_group, stable=True)
        perm_out = torch.argsort(out_group, stable=True)
        w = weight.reshape(cout, cin)[perm_out][:, perm_in]
        gi, go = cin // groups, cout // groups
        blocks = [w[g * go:(g + 1) * go, g * gi:(g + 1) * gi] for g in range(groups)]
        off_block = w.clone()
        for g in range(groups):
            off_block[g * go:(g + 1) * go, g * gi:(g + 1) * gi] = 0
        if torch.count_nonzero(off_block):
            raise SparseNASError(NOT_BLOCK_DIAGONAL)
        self.conv = nn.Conv2d(cin, cout, 1, stride=stride, groups=groups, bias=bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat(blocks, 0).reshape(cout, gi, 1, 1))
            if bias is not None:
                self.conv.bias.copy_(bias[perm_out])
        self.groups = groups
        ident_in = bool(torch.equal(perm_in, torch.arange(cin)))
        ident_out = bool(torch.equal(perm_out, torch.arange(cout)))
        self.register_buffer("perm_in", None if ident_in else perm_in)
        self.register_buffer("unperm_out", None if ident_out else torch.argsort(perm_out))
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        if self.perm_in is not None:
            x = x.index_select(1, self.perm_in)
        y = self.conv(x)
        if self.unperm_out is not None:
            y = y.index_select(1, self.unperm_out)
        return y

    def dense(self) -> nn.Conv2d:
        """The plain 1x1 conv this computes: the block-diagonal weight, in the channels' own order."""
        cout, gi = self.conv.out_channels, self.conv.in_channels // self.groups
        go = cout // self.groups
        w = torch.zeros(cout, self.conv.in_channels)
        for g in range(self.groups):
            w[g * go:(g + 1) * go, g * gi:(g + 1) * gi] = self.conv.weight[g * go:(g + 1) * go, :, 0, 0]
        perm_in = self.perm_in if self.perm_in is not None else torch.arange(w.shape[1])
        perm_out = torch.argsort(self.unperm_out) if self.unperm_out is not None else torch.arange(cout)
        conv = nn.Conv2d(w.shape[1], cout, 1, stride=self.conv.stride, bias=self.conv.bias is not None)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[perm_out[:, None], perm_in[None, :], 0, 0] = w
            if self.conv.bias is not None:
                conv.bias[perm_out] = self.conv.bias
        return conv.eval().requires_grad_(False)

    def extra_repr(self) -> str:
        return (f"groups={self.groups}, permute_in={self.perm_in is not None}, "
                f"permute_out={self.unperm_out is not None}")


def grouped_pointwise(m: nn.Module) -> GroupedPointwise:
    """A block-diagonal G2G 1x1 conv (see :func:`block_groups`) as a :class:`GroupedPointwise`."""
    bias = m.bias.detach() if m.bias is not None else None
    return GroupedPointwise(frozen_weight(m), m.in_group, m.out_group, block_groups(m), m.stride[0], bias)


def to_plain(model: nn.Module, input_shape: tuple[int, ...] | None = None,
             choose: Callable[[LayerSpec], str] | None = None) -> nn.Module:
    """A deep copy of ``model`` in eval mode where every sparse layer is the plain ``nn.Conv2d`` /
    ``nn.Linear`` it stands for, holding its masked weight; with ``choose`` (and ``input_shape`` to
    trace the layers), a block-diagonal G2G layer for which ``choose(spec)`` is ``"grouped"`` becomes
    a :class:`GroupedPointwise`. Needs nothing of sparsenas to run but these modules."""
    out = copy.deepcopy(model).eval()
    specs: dict[str, LayerSpec] = {}
    if choose is not None and input_shape is not None:
        for name, spec in trace_named_layers(out, input_shape):
            specs.setdefault(name, spec)
    for name, m in list(out.named_modules()):
        if not isinstance(m, SparseMixin):
            continue
        spec = specs.get(name)
        if spec is not None and spec.blocks and choose is not None and choose(spec) == "grouped":
            plain: nn.Module = grouped_pointwise(m)
        elif isinstance(m, nn.Conv2d):
            plain = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                              m.dilation, m.groups, m.bias is not None, m.padding_mode)
        elif isinstance(m, nn.Linear):
            plain = nn.Linear(m.in_features, m.out_features, m.bias is not None)
        else:
            raise no_plain_equivalent(name, m)
        if not isinstance(plain, GroupedPointwise):
            with torch.no_grad():
                plain.weight.copy_(frozen_weight(m))
                if m.bias is not None:
                    plain.bias.copy_(m.bias.detach())
        plain.eval()
        if name == "":
            return plain
        out.set_submodule(name, plain)
    return out.eval()


def ungrouped(graph: nn.Module) -> nn.Module:
    """``graph`` (a copy) with each :class:`GroupedPointwise` back as the plain 1x1 conv it computes:
    for a converter that would rewrite a grouped conv into ops no layer of the network maps to (MNN)."""
    if not any(isinstance(m, GroupedPointwise) for m in graph.modules()):
        return graph
    out = copy.deepcopy(graph)
    for name, m in list(out.named_modules()):
        if isinstance(m, GroupedPointwise):
            if name == "":
                return m.dense()
            out.set_submodule(name, m.dense())
    return out
