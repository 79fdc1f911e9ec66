"""BatchNorm statistics re-estimation, shared by short standalone training and inherited weights."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Tensor]) -> nn.Module:
    """Reset every BatchNorm's running statistics and re-estimate them as the exact (cumulative)
    average over ``batches`` of inputs.

    Short budgets (tens of steps) leave momentum-averaged statistics far from the weights' real ones,
    so eval-mode accuracy sits near chance; weights inherited from a supernet come with statistics of
    other children (Once-for-All). Both need this.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was = model.training
    model.train()
    for x in batches:
        model(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.train(was)
    return model
