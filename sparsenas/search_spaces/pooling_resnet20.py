"""pooling_resnet20: where ResNet20 downsamples, and how (the balanced-mixture paper's space).

ResNet20 as 10 layers: a stem conv and 9 basic blocks with fixed channels
16 | 16 16 16 | 32 32 32 | 64 64 64. The channel increases stay at blocks 4 and 7 whatever the
placement (as in the paper's code), so all placements have the same weights and one supernet can
hold them all. The choices:

- ``placement``: the 2 downsamplings go before 2 distinct blocks of the 9 (C(9,2) = 36), written as
  the paper's ``b1-b2-b3``, layers per resolution (b1 + b2 + b3 = 10); the default ResNet20 is 4-3-3;
- ``downsample``: 2x2 max pool, 2x2 average pool (both ceil mode) or a stride-2 first conv of the
  block (with a stride-2 1x1 projection shortcut), the standard ResNet.

The network ends at ceil(H/4): 8x8 digits -> 2x2, 16x16 -> 4x4, 32x32 CIFAR -> 8x8.
"""
from __future__ import annotations

import itertools

from ..arch import Arch
from ..task import Task
from . import SPACES
from ._pooling_modules import PoolingResNet, positions
from .base import SearchSpace

NUM_BLOCKS = 9
DOWNSAMPLE_TYPES = ["max", "avg", "conv"]


def placements() -> list[str]:
    """All 36 placements as ``b1-b2-b3``, ordered by the positions of the two downsamplings."""
    return [f"{p1}-{p2 - p1}-{NUM_BLOCKS + 1 - p2}" for p1, p2 in itertools.combinations(range(1, NUM_BLOCKS + 1), 2)]


@SPACES.register("pooling_resnet20")
class PoolingResNet20Space(SearchSpace):
    name = "pooling_resnet20"
    version = 1
    description = ("ResNet20 (stem + 9 basic blocks, fixed channels): positions of its 2 downsamplings "
                   "(36 placements) and their type (max pool, avg pool, strided conv)")
    default_dataset = "digits"

    def check_task(self, task: Task) -> None:
        self.require_images(task, 4, " (it downsamples twice)")

    def choices(self, task: Task) -> dict[str, list]:
        self.check_task(task)
        return {"placement": placements(), "downsample": DOWNSAMPLE_TYPES}

    def default_arch(self, task: Task) -> Arch:
        """The standard ResNet20: downsampling by strided convs at blocks 4 and 7."""
        return Arch(self.name, self.version, {"placement": "4-3-3", "downsample": "conv"})

    def build(self, arch: Arch, task: Task):
        self.validate(arch, task)
        return PoolingResNet(task.input_shape[0], task.num_classes, positions(arch["placement"]), arch["downsample"])
