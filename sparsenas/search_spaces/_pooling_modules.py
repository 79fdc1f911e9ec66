"""The nn.Modules of pooling_resnet20: a standalone ResNet20 for one placement, and the
single-path weight-sharing supernet that runs any placement (for the balanced strategy)."""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..arch import Arch

# Channels of the stem (layer 0) and of the 9 basic blocks; they do not move with the downsamplings
# (as in the balanced-mixture paper), so every placement has the same parameters.
CHANNELS = (16, 16, 16, 16, 32, 32, 32, 64, 64, 64)


def positions(placement: str) -> tuple[int, int]:
    """Blocks (1..9) that the two downsamplings precede: ``"4-3-3"`` -> (4, 7)."""
    b1, b2, _ = (int(v) for v in placement.split("-"))
    return b1, b1 + b2


def _bn(c: int, batch_stats: bool) -> nn.BatchNorm2d:
    # batch_stats: no affine, no running statistics, always the batch's own: paths that share a
    # supernet see different resolutions, and running statistics averaged over them fit none.
    return nn.BatchNorm2d(c, affine=not batch_stats, track_running_stats=not batch_stats)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU. x (N, cin, H, W) -> (N, cout, ceil(H/s), ceil(W/s)).

    The shortcut is the identity when shapes agree, else a 1x1 conv (stride s) + BN. With
    ``shared=True`` the projection always exists and ``forward(x, stride)`` picks the stride per call
    (the supernet's strided-conv downsampling reuses the stride-1 weights)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, *, batch_stats: bool = False, shared: bool = False) -> None:
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _bn(cout, batch_stats)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _bn(cout, batch_stats)
        needs = shared or stride != 1 or cin != cout
        self.project = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _bn(cout, batch_stats)) if needs else None

    def forward(self, x: Tensor, stride: int | None = None) -> Tensor:
        s = self.stride if stride is None else stride
        h = self.conv1(x) if s == self.stride else F.conv2d(x, self.conv1.weight, None, s, 1)
        h = self.bn2(self.conv2(F.relu(self.bn1(h))))
        if s == 1 and self.cin == self.cout:
            short = x
        else:
            conv, bn = self.project  # type: ignore[misc]
            short = bn(conv(x) if s == self.stride else F.conv2d(x, conv.weight, None, s))
        return F.relu(h + short)

    def extra_repr(self) -> str:
        return f"{self.cin}->{self.cout}, stride={self.stride}"


def _pool(kind: str) -> nn.Module:
    # ceil_mode: odd sizes round up, as the stride-2 convs (padding 1) do, so all types agree
    return nn.MaxPool2d(2, ceil_mode=True) if kind == "max" else nn.AvgPool2d(2, ceil_mode=True)


class PoolingResNet(nn.Module):
    """ResNet20 with its 2 downsamplings before blocks ``positions`` (1..9), of type max | avg | conv.

    x (N, C, H, W) -> logits (N, classes); ``features(x)`` is (N, 64, ceil(H/4), ceil(W/4))."""

    def __init__(self, in_channels: int, num_classes: int, positions: Sequence[int], downsample: str) -> None:
        super().__init__()
        self.positions, self.downsample = tuple(positions), downsample
        body: list[nn.Module] = [nn.Conv2d(in_channels, CHANNELS[0], 3, 1, 1, bias=False), nn.BatchNorm2d(CHANNELS[0]),
                                 nn.ReLU()]
        for i in range(1, len(CHANNELS)):
            down = i in self.positions
            if down and downsample != "conv":
                body.append(_pool(downsample))
            body.append(BasicBlock(CHANNELS[i - 1], CHANNELS[i], 2 if down and downsample == "conv" else 1))
        self.body = nn.Sequential(*body)
        self.head = nn.Linear(CHANNELS[-1], num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean((2, 3)))

    def extra_repr(self) -> str:
        return f"positions={self.positions}, downsample={self.downsample}"


class PoolingSupernet(nn.Module):
    """All placements in one network with shared weights; BatchNorm on batch statistics.

    ``forward(x, arch)``: x (N, C, H, W) -> logits (N, classes) of the pooling_resnet20 ``arch``'s path."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, CHANNELS[0], 3, 1, 1, bias=False), _bn(CHANNELS[0], True),
                                  nn.ReLU())
        self.blocks = nn.ModuleList(BasicBlock(CHANNELS[i - 1], CHANNELS[i], batch_stats=True, shared=True)
                                    for i in range(1, len(CHANNELS)))
        self.head = nn.Linear(CHANNELS[-1], num_classes)

    def extra_repr(self) -> str:
        return "shared weights, BatchNorm on batch statistics"

    def net_blocks(self) -> list[BasicBlock]:
        return list(self.blocks)

    def forward(self, x: Tensor, arch: Arch) -> Tensor:
        return self.run(x, positions(arch["placement"]), arch["downsample"])

    def run(self, x: Tensor, positions: Sequence[int], downsample: str) -> Tensor:
        x = self.stem(x)
        for i, block in enumerate(self.blocks, start=1):
            down = i in positions
            if down and downsample == "max":
                x = F.max_pool2d(x, 2, ceil_mode=True)
            elif down and downsample == "avg":
                x = F.avg_pool2d(x, 2, ceil_mode=True)
            x = block(x, 2 if down and downsample == "conv" else 1)
        return self.head(x.mean((2, 3)))
