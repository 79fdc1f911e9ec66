"""Cost of a network: parameters, non-zeros and FLOPs."""
from __future__ import annotations

from torch import nn

from ..ops import sparse_modules
from ..ops.spec import LayerSpec


def count_params(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters), counting a sparse layer's weight through its mask and leaving
    out the learned mask scores, which an exported network does not carry."""
    sparse = {id(m.weight): m for m in sparse_modules(model)}
    scores = {id(getattr(m, "score")) for m in sparse.values() if getattr(m, "score", None) is not None}
    total = nnz = 0
    for p in model.parameters():
        if id(p) in scores:
            continue
        total += p.numel()
        m = sparse.get(id(p))
        nnz += int((m.masked_weight() != 0).sum()) if m is not None else int((p != 0).sum())
    return total, nnz


def count_flops(layers: list[LayerSpec]) -> tuple[int, int]:
    """(dense MACs, effective MACs) over the network's conv and linear kernels."""
    return sum(s.flops() for s in layers), sum(s.effective_flops() for s in layers)
