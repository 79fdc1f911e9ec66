"""The nn.Modules that sparse_mbv2 (and its supernets) assemble."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import SparseConv2d, update_masks


def pointwise(cin: int, cout: int, sparsity: float) -> nn.Module:
    """1x1 conv: dense when sparsity is 0, else a magnitude-masked SparseConv2d."""
    if sparsity <= 0:
        return nn.Conv2d(cin, cout, 1, bias=False)
    return SparseConv2d(cin, cout, 1, bias=False, sparsity=sparsity)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand] -> kxk depthwise (stride) -> 1x1 project, residual when shapes match.

    (B, cin, H, W) -> (B, cout, H/stride, W/stride)
    """

    def __init__(self, cin: int, cout: int, stride: int, expand: int, kernel: int, sparsity: float) -> None:
        super().__init__()
        hidden = cin * expand
        self.cin, self.cout, self.stride, self.expand, self.kernel, self.sparsity = cin, cout, stride, expand, kernel, sparsity
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [pointwise(cin, hidden, sparsity), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   pointwise(hidden, cout, sparsity), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y

    def extra_repr(self) -> str:
        return (f"{self.cin}->{self.cout}, stride={self.stride}, expand={self.expand}, kernel={self.kernel}, "
                f"sparsity={self.sparsity}, residual={self.residual}")


class MobileNetV2(nn.Module):
    """stem 3x3 -> stages of InvertedResidual -> 1x1 head -> global pool -> linear.

    ``stages``: list of (channels, stride of the first block, [(expand, kernel, sparsity), ...]).
    """

    def __init__(self, in_ch: int, num_classes: int, stages: list, head: int, head_sparsity: float,
                 stem: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem),
                                  nn.ReLU6(inplace=True))
        blocks, cin = [], stem
        for cout, stride, stage_blocks in stages:
            for i, (expand, kernel, sparsity) in enumerate(stage_blocks):
                blocks.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand, kernel, sparsity))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(pointwise(cin, head, head_sparsity), nn.BatchNorm2d(head), nn.ReLU6(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(head, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        update_masks(self)  # masks follow the re-initialised weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))
