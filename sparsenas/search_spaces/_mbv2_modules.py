"""The nn.Modules that sparse_mbv2 (and its supernets) assemble."""
from __future__ import annotations

import zlib

import torch
from torch import nn

from ..ops import G2GConv2d, SparseConv2d, g2g_plan, update_masks
from ..errors import SparseNASError
from ..ops.g2g import G2GMixin

# G2GNet's "mixer": the expand conv groups channels by index, the project conv interleaves them, so
# that information crosses ensembles from one 1x1 conv to the next
EXPAND_GROUPING, PROJECT_GROUPING, HEAD_GROUPING = "index", "interleaved", "index"


CONNS = ["magnitude", "g2g", "block", "magnitude_oc4"]  # connectivity of the sparse 1x1 convs


def block_plan(cin: int, cout: int, density: float) -> int:
    """Ensembles G of a block-diagonal 1x1 conv at ``density``: the largest power of two with
    ``1/G >= density`` that divides both channel counts (at least 2: channels are multiples of 4)."""
    g = 2
    while 2 * g * density <= 1.0 + 1e-9 and cin % (2 * g) == 0 and cout % (2 * g) == 0:
        g *= 2
    return g


def g2g_seed(layer: str) -> int:
    """Seed of a G2G layer's mask draws, from its name (``"s2b1.exp"``, ``"s2b1.proj"``, ``"head"``):
    stable across processes, so a supernet rebuilds exactly the mask the standalone network has."""
    return zlib.crc32(layer.encode())


def pointwise(cin: int, cout: int, sparsity: float, conn: str = "magnitude", grouping: str = "index",
              seed: int = 0) -> nn.Module:
    """1x1 conv: dense when sparsity is 0 (``conn`` is then ignored); else a magnitude-masked
    SparseConv2d (``conn="magnitude"``), a G2GConv2d at the same density (``conn="g2g"``, Erdos-
    Renyi between ensembles, see :func:`~sparsenas.ops.g2g.g2g_plan`), or a block-diagonal
    G2GConv2d (``conn="block"``, see :func:`block_plan`), or a SparseConv2d pruned in blocks of 4 output
    channels (``conn="magnitude_oc4"``)."""
    if sparsity <= 0:
        return nn.Conv2d(cin, cout, 1, bias=False)
    if conn not in CONNS:
        raise SparseNASError(f"unknown 1x1 conv connectivity {conn!r}; allowed: {', '.join(CONNS)}")
    if conn == "g2g":
        ensembles, p_inter = g2g_plan(cin, cout, 1.0 - sparsity, grouping)
        return G2GConv2d(cin, cout, ensembles=ensembles, p_inter=p_inter, graph="er", grouping=grouping, seed=seed)
    if conn == "block":  # no edges between ensembles: a grouped conv where the runtime runs that faster
        return G2GConv2d(cin, cout, ensembles=block_plan(cin, cout, 1.0 - sparsity), p_inter=0.0, graph="block",
                         grouping=grouping, seed=seed)
    mask_kind = "magnitude_oc4" if conn == "magnitude_oc4" else "magnitude"
    return SparseConv2d(cin, cout, 1, bias=False, sparsity=sparsity, mask_kind=mask_kind)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand] -> kxk depthwise (stride) -> 1x1 project, residual when shapes match.

    ``conn`` picks the sparse 1x1 convs' connectivity (magnitude | g2g); ``name`` (``"s2b1"``)
    seeds their G2G masks. (B, cin, H, W) -> (B, cout, H/stride, W/stride)
    """

    def __init__(self, cin: int, cout: int, stride: int, expand: int, kernel: int, sparsity: float,
                 conn: str = "magnitude", name: str = "") -> None:
        super().__init__()
        hidden = cin * expand
        self.cin, self.cout, self.stride, self.expand, self.kernel, self.sparsity = cin, cout, stride, expand, kernel, sparsity
        self.conn = conn
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [pointwise(cin, hidden, sparsity, conn, EXPAND_GROUPING, g2g_seed(f"{name}.exp")),
                       nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   pointwise(hidden, cout, sparsity, conn, PROJECT_GROUPING, g2g_seed(f"{name}.proj")),
                   nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y

    def extra_repr(self) -> str:
        conn = f", conn={self.conn}" if self.sparsity > 0 else ""
        return (f"{self.cin}->{self.cout}, stride={self.stride}, expand={self.expand}, kernel={self.kernel}, "
                f"sparsity={self.sparsity}{conn}, residual={self.residual}")


class MobileNetV2(nn.Module):
    """stem 3x3 -> stages of InvertedResidual -> 1x1 head -> global pool -> linear.

    ``stages``: list of (channels, stride of the first block, [(expand, kernel, sparsity, conn), ...]);
    block ``i`` of stage ``s`` (from 1) is named ``s{s}b{i}``, which seeds its G2G masks.
    """

    def __init__(self, in_ch: int, num_classes: int, stages: list, head: int, head_sparsity: float,
                 stem: int = 16, head_conn: str = "magnitude") -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem),
                                  nn.ReLU6(inplace=True))
        blocks, cin = [], stem
        for s, (cout, stride, stage_blocks) in enumerate(stages, 1):
            for i, (expand, kernel, sparsity, conn) in enumerate(stage_blocks):
                blocks.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand, kernel, sparsity, conn,
                                               f"s{s}b{i + 1}"))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(pointwise(cin, head, head_sparsity, head_conn, HEAD_GROUPING, g2g_seed("head")),
                                  nn.BatchNorm2d(head), nn.ReLU6(inplace=True))
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
            if isinstance(m, G2GMixin):  # its init rescaling (to the active fan-in) follows the new weights
                m._rescale_init()
        update_masks(self)  # masks follow the re-initialised weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))
