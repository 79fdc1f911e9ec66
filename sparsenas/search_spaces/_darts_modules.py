"""The nn.Modules that sparse_darts (and its mixed-op supernet) assemble.

DARTS cell network (Liu et al. 2019) with every weighted convolution a :class:`SparseConv2d` and the
classifier a :class:`SparseLinear`, as in DASS. A cell has two inputs (the outputs of the two cells
before it), ``STEPS`` intermediate nodes, and an edge ``(i, j)`` from state ``j`` to node ``i``
(states 0, 1 are the inputs, state ``k + 2`` is node ``k``); the cell's output is the channel concat
of its nodes. Whether a cell holds one op per chosen edge (a standalone network) or a mixed op on all
14 edges (the supernet) is decided by the ``make_edge`` callable the network is built with.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import SparseConv2d, SparseLinear

PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
              "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
STEPS = 4
# (node, input state) in DARTS order: node 0 reads states 0,1; node 1 reads 0,1,2; ... -> 14 edges
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(STEPS) for j in range(i + 2))


class SparseSpec:
    """How the sparse layers of a network are made: sparsity, mask kind, BatchNorm affine."""

    def __init__(self, sparsity: float, mask_kind: str = "magnitude", affine: bool = True) -> None:
        self.sparsity, self.mask_kind, self.affine = sparsity, mask_kind, affine

    def conv(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1,
             groups: int = 1) -> SparseConv2d:
        return SparseConv2d(cin, cout, k, stride, padding, dilation=dilation, groups=groups, bias=False,
                            sparsity=self.sparsity, mask_kind=self.mask_kind)

    def bn(self, c: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(c, affine=self.affine)


class ReLUConvBN(nn.Sequential):
    """ReLU -> sparse kxk conv -> BN. (B, cin, H, W) -> (B, cout, H/stride, W/stride)"""

    def __init__(self, cin: int, cout: int, k: int, stride: int, padding: int, sp: SparseSpec) -> None:
        super().__init__(nn.ReLU(inplace=False), sp.conv(cin, cout, k, stride, padding), sp.bn(cout))


class DilConv(nn.Sequential):
    """ReLU -> sparse depthwise kxk (dilated) -> sparse pointwise 1x1 -> BN."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, padding: int, dilation: int, sp: SparseSpec) -> None:
        super().__init__(nn.ReLU(inplace=False), sp.conv(cin, cin, k, stride, padding, dilation, groups=cin),
                         sp.conv(cin, cout, 1), sp.bn(cout))


class SepConv(nn.Sequential):
    """Two stacked DilConv(dilation 1): DARTS' separable convolution; the first carries the stride."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, padding: int, sp: SparseSpec) -> None:
        super().__init__(DilConv(cin, cin, k, stride, padding, 1, sp), DilConv(cin, cout, k, 1, padding, 1, sp))


class Zero(nn.Module):
    """The 'none' op: zeros of the output shape (stride 2 halves H and W)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x.mul(0.0) if self.stride == 1 else x[:, :, ::self.stride, ::self.stride].mul(0.0)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


class FactorizedReduce(nn.Module):
    """Halve H and W with two sparse strided 1x1 convs on pixel grids offset by one, concatenated.

    (B, cin, H, W) -> (B, cout, ceil(H/2), ceil(W/2)); odd sizes are padded so both halves agree.
    """

    def __init__(self, cin: int, cout: int, sp: SparseSpec) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv1 = sp.conv(cin, cout // 2, 1, stride=2)
        self.conv2 = sp.conv(cin, cout - cout // 2, 1, stride=2)
        self.bn = sp.bn(cout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv1(x), self.conv2(shifted)], dim=1))


def make_op(name: str, c: int, stride: int, sp: SparseSpec) -> nn.Module:
    """One DARTS primitive on ``c`` channels; stride 2 on the edges of a reduction cell's inputs."""
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, sp)
    if name in ("sep_conv_3x3", "sep_conv_5x5"):
        k = int(name[-1])
        return SepConv(c, c, k, stride, k // 2, sp)
    if name in ("dil_conv_3x3", "dil_conv_5x5"):
        k = int(name[-1])
        return DilConv(c, c, k, stride, 2 * (k // 2), 2, sp)
    raise ValueError(f"unknown DARTS primitive '{name}'; known: {', '.join(PRIMITIVES)}")


# make_edge(cell index, reduction, node, input state, channels, stride) -> the edge's module, or None
EdgeFactory = Callable[[int, bool, int, int, int, int], "nn.Module | None"]


class Cell(nn.Module):
    """A DARTS cell: (s0 (B, c_pp, H0, W0), s1 (B, c_p, H, W)) -> (B, 4c, H/r, W/r), r = 2 if reduction.

    Edges absent from ``edges`` contribute nothing; mixed-op edges take the cell type's row of
    architecture weights (``weights``: (14, ops)).
    """

    def __init__(self, index: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool,
                 make_edge: EdgeFactory, sp: SparseSpec) -> None:
        super().__init__()
        self.index, self.reduction, self.c = index, reduction, c
        self.pre0 = FactorizedReduce(c_pp, c, sp) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, sp)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, sp)
        self.edges = nn.ModuleDict()
        self.edge_rows: dict[str, int] = {}
        for row, (i, j) in enumerate(EDGES):
            op = make_edge(index, reduction, i, j, c, 2 if reduction and j < 2 else 1)
            if op is not None:
                self.edges[f"{i}_{j}"] = op
                self.edge_rows[f"{i}_{j}"] = row
        for i in range(STEPS):
            if not any(k.startswith(f"{i}_") for k in self.edges):
                raise ValueError(f"cell {index}: node {i} has no incoming edge")

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor | None = None) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for i in range(STEPS):
            total: Tensor | None = None
            for j in range(i + 2):
                key = f"{i}_{j}"
                if key not in self.edges:
                    continue
                op = self.edges[key]
                y = op(states[j]) if weights is None else op(states[j], weights[self.edge_rows[key]])
                total = y if total is None else total + y
            states.append(total)  # type: ignore[arg-type]
        return torch.cat(states[2:], dim=1)

    def extra_repr(self) -> str:
        return f"index={self.index}, c={self.c}, reduction={self.reduction}, edges={len(self.edges)}"


def reduction_cells(cells: int) -> set[int]:
    """Cells that halve the resolution: at 1/3 and 2/3 of the depth (DARTS)."""
    return {cells // 3, 2 * cells // 3} if cells >= 3 else {cells - 1}


class DartsNetwork(nn.Module):
    """Dense 3x3 stem -> ``cells`` cells (channels doubling at reductions) -> global pool -> SparseLinear.

    (B, in_ch, H, W) -> (B, num_classes). The stem stays dense: with one or three input channels a
    90%-sparse 3x3 stem filter would keep less than one weight per output channel, and the stem holds
    well under 1% of the weights.
    """

    def __init__(self, in_ch: int, num_classes: int, c: int, cells: int, make_edge: EdgeFactory, sp: SparseSpec,
                 stem_multiplier: int = 3) -> None:
        super().__init__()
        self.c, self.num_cells = c, cells
        c_stem = stem_multiplier * c
        self.stem = nn.Sequential(nn.Conv2d(in_ch, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        c_pp, c_p, c_cur = c_stem, c_stem, c
        reductions = reduction_cells(cells)
        self.cells = nn.ModuleList()
        reduction_prev = False
        for idx in range(cells):
            reduction = idx in reductions
            if reduction:
                c_cur *= 2
            self.cells.append(Cell(idx, c_pp, c_p, c_cur, reduction, reduction_prev, make_edge, sp))
            reduction_prev = reduction
            c_pp, c_p = c_p, STEPS * c_cur
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = SparseLinear(c_p, num_classes, sparsity=sp.sparsity, mask_kind=sp.mask_kind)

    def forward(self, x: Tensor, weights: Mapping[bool, Tensor] | None = None) -> Tensor:
        """``weights``: {reduction?: (14, ops) architecture weights} for a mixed-op network."""
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            w = None if weights is None else weights[cell.reduction]
            s0, s1 = s1, cell(s0, s1, w)
        return self.classifier(torch.flatten(self.pool(s1), 1))

    def extra_repr(self) -> str:
        return f"c={self.c}, cells={self.num_cells}, reductions={sorted(reduction_cells(self.num_cells))}"
