"""sparse_mbv2: MobileNetV2 adapted to small inputs, with a sparse-or-dense choice per block.

Choices, with ``sN`` a stage and ``sNbM`` a block of it:
- ``downsample``: which stages start with a stride-2 block; how many is fixed by the input size
  (8x8 -> 1, 16x16 -> 2, 32x32 -> 3) so every network ends at about 4x4;
- ``sN_depth``, ``sN_width``: blocks in the stage and its width multiplier;
- ``sNbM_expand``, ``sNbM_kernel``: MobileNetV2 expansion ratio and depthwise kernel;
- ``sNbM_sparsity``: the op of the block's 1x1 convolutions, dense (0.0) or sparse at that
  sparsity (DASS's operation choice); ``head_sparsity`` likewise for the final 1x1 conv;
- ``sNbM_conn`` (``head_conn``): how those sparse 1x1 convs are connected at that sparsity:
  ``"magnitude"`` (SparseConv2d, the smallest weights pruned, gradually during training) or
  ``"g2g"`` (G2GConv2d, G2GNet's fixed modular mask at the same density: channels in ensembles,
  dense inside, Erdos-Renyi between; the expand conv groups by index, the project conv
  interleaves, so consecutive 1x1 convs mix ensembles; see ``ops.g2g.g2g_plan``). Ignored when the
  sparsity is 0 (dense conv). Both keep the weight's shape and the non-zero count (except for
  layers too small for dense ensembles at 0.9/0.95, see ``g2g_plan``), so the kernels, the kernel
  list and the hardware profile are those of the magnitude networks; or ``"block"`` (G2G with no
  edges between ensembles: block-diagonal, ``G`` the largest power of two with ``1/G`` >= the
  density that divides both channel counts, so its sparsity is ``1 - 1/G``). A block-diagonal
  layer is a grouped convolution (the project conv interleaves its channels: a gather on each
  side), which every runtime that reads ONNX runs faster than the dense layer; hardware profiles
  time both (``LayerSpec.blocks``); or ``"magnitude_oc4"`` (SparseConv2d pruned by magnitude over
  blocks of 4 output channels at one input position: the same level, zeros four channels at a time,
  the form MNN's fastest sparse kernel runs; ``LayerSpec.oc_block``).

Version 2 added the ``conn`` choices, version 3 ``"block"``, version 4 ``"magnitude_oc4"``; older
architectures are upgraded (version 1: ``"magnitude"`` everywhere, what they built; versions 2 and 3:
unchanged).
"""
from __future__ import annotations

import itertools
import math

from ..arch import Arch
from ..ops.masks import OC_BLOCK
from ..task import Task
from . import SPACES
from ._mbv2_modules import CONNS, MobileNetV2, block_plan  # noqa: F401  (block_plan: part of this space's API)
from .base import SearchSpace

STAGE_CHANNELS = (16, 24, 32, 64, 96)
STAGE_MAX_DEPTH = (2, 3, 3, 3, 3)
HEAD_CHANNELS = 320
EXPANSIONS = [1, 3, 6]
KERNELS = [3, 5, 7]
SPARSITIES = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95]
WIDTHS = [0.5, 0.75, 1.0]
# what the supernets (DASS's mixed ops, the weight-entangled one) can mix; "block" is searched standalone
SUPERNET_CONNS = ("magnitude", "g2g", "magnitude_oc4")


def make_divisible(c: float, divisor: int = 4) -> int:
    """Channels rounded to a multiple of 4 (keeps 2:4 patterns and SIMD lanes whole)."""
    return max(divisor, int(c + divisor / 2) // divisor * divisor)


def num_downsamplings(hw: int) -> int:
    return max(1, min(4, round(math.log2(max(hw, 4) / 4))))


def block_keys() -> list[tuple[int, int]]:
    return [(s, b) for s in range(1, 6) for b in range(1, STAGE_MAX_DEPTH[s - 1] + 1)]


@SPACES.register("sparse_mbv2")
class SparseMBV2Space(SearchSpace):
    name = "sparse_mbv2"
    version = 4
    description = ("MobileNetV2 for 8x8..32x32 images: per block expansion, kernel and dense/sparse 1x1 "
                   "convs (magnitude, 4-channel-block magnitude or G2G connectivity); per stage depth and width; downsampling placement")
    default_dataset = "digits"

    def check_task(self, task: Task) -> None:
        self.require_images(task, 4)

    def choices(self, task: Task) -> dict[str, list]:
        self.check_task(task)
        n_down = num_downsamplings(min(task.input_shape[1:]))
        placements = ["+".join(f"s{s}" for s in combo) for combo in itertools.combinations(range(2, 6), n_down)]
        c: dict[str, list] = {"downsample": placements}
        for s in range(1, 6):
            c[f"s{s}_depth"] = list(range(1, STAGE_MAX_DEPTH[s - 1] + 1))
            c[f"s{s}_width"] = WIDTHS
        for s, b in block_keys():
            c[f"s{s}b{b}_expand"] = EXPANSIONS
            c[f"s{s}b{b}_kernel"] = KERNELS
            c[f"s{s}b{b}_sparsity"] = SPARSITIES
            c[f"s{s}b{b}_conn"] = CONNS
        c["head_sparsity"] = SPARSITIES
        c["head_conn"] = CONNS
        return c

    def upgrade(self, arch: Arch) -> Arch:
        """Version 1 had no ``conn`` choices (its sparse 1x1 convs were all magnitude-masked);
        versions 2 and 3 lacked values added since, so their architectures are version-4 ones as they are."""
        if arch.space != self.name or arch.version not in (1, 2, 3):
            return arch
        if arch.version in (2, 3):
            return Arch(self.name, self.version, dict(arch.choices))
        conns = {f"s{s}b{b}_conn": CONNS[0] for s, b in block_keys()} | {"head_conn": CONNS[0]}
        return Arch(self.name, self.version, {**conns, **arch.choices})

    def canonical(self, arch: Arch) -> Arch:
        """Blocks past their stage's depth are not built, and ``conn`` means nothing for a dense
        (sparsity 0) 1x1 conv: those choices are set to the first value."""
        arch = self.upgrade(arch)
        ch = dict(arch.choices)
        for s, b in block_keys():
            key = f"s{s}b{b}"
            if b > ch.get(f"s{s}_depth", b):
                ch.update({f"{key}_expand": EXPANSIONS[0], f"{key}_kernel": KERNELS[0],
                           f"{key}_sparsity": SPARSITIES[0], f"{key}_conn": CONNS[0]})
            elif ch.get(f"{key}_sparsity") == 0:
                ch[f"{key}_conn"] = CONNS[0]
        if ch.get("head_sparsity") == 0:
            ch["head_conn"] = CONNS[0]
        return Arch(arch.space, arch.version, ch)

    def default_arch(self, task: Task) -> Arch:
        """MobileNetV2-like dense reference: full depth, width 1, t=6 (t=1 first), k=3."""
        ch = self.choices(task)
        picks = {k: v[-1] if k.endswith(("_depth", "_width")) else v[0] for k, v in ch.items()}
        for s, b in block_keys():
            picks[f"s{s}b{b}_expand"] = 1 if s == 1 else 6
        picks["downsample"] = ch["downsample"][0]
        return Arch(self.name, self.version, picks)

    def build(self, arch: Arch, task: Task):
        ch = self.validate(arch, task).choices
        down = set(ch["downsample"].split("+"))
        stages = []
        for s in range(1, 6):
            width = ch[f"s{s}_width"]
            blocks = [(ch[f"s{s}b{b}_expand"], ch[f"s{s}b{b}_kernel"], ch[f"s{s}b{b}_sparsity"], ch[f"s{s}b{b}_conn"])
                      for b in range(1, ch[f"s{s}_depth"] + 1)]
            stages.append((make_divisible(STAGE_CHANNELS[s - 1] * width), 2 if f"s{s}" in down else 1, blocks))
        return MobileNetV2(task.input_shape[0], task.num_classes, stages, HEAD_CHANNELS, ch["head_sparsity"],
                           head_conn=ch["head_conn"])

    def kernel_specs(self, task: Task, **_: object) -> set:
        """Exact enumeration of every conv/linear kernel (batch 1) any architecture can run: the
        shapes of a block follow from the stage widths, the input resolution of its stage (set by
        the downsampling placement), expansion, kernel and sparsity (``conn`` changes which weights
        are zero, not the shapes or the level). ``tests`` check it against traced networks."""
        from ..ops.spec import LayerSpec

        ch = self.choices(task)
        c_in, h, w = task.input_shape

        def conv(cin: int, cout: int, hw: tuple[int, int], k: int = 1, stride: int = 1, groups: int = 1,
                 sp: float = 0.0) -> LayerSpec:
            return LayerSpec("conv2d", cin, cout, k, stride, groups, hw, sp)

        def block(cin: int, cout: int, hw: tuple[int, int], sp: float, permuted: bool) -> set:
            """The block-diagonal (conn "block") and 4-channel-block (conn "magnitude_oc4") forms of a
            sparse 1x1 conv, none for a dense one."""
            if sp == 0:
                return set()
            g = block_plan(cin, cout, 1.0 - sp)
            permuted = permuted and not cin == cout == g  # one channel per ensemble: interleaving is the identity
            return {LayerSpec("conv2d", cin, cout, 1, 1, 1, hw, 1.0 - 1.0 / g, blocks=g, permuted=permuted),
                    LayerSpec("conv2d", cin, cout, 1, 1, 1, hw, sp, oc_block=OC_BLOCK)}

        def down(hw: tuple[int, int], k: int, stride: int) -> tuple[int, int]:
            return tuple((v + 2 * (k // 2) - k) // stride + 1 for v in hw)  # type: ignore[return-value]

        specs = {conv(c_in, 16, (h, w), k=3), LayerSpec("linear", HEAD_CHANNELS, task.num_classes)}
        widths = [sorted({make_divisible(c * m) for m in WIDTHS}) for c in STAGE_CHANNELS]
        for placement in ch["downsample"]:
            hw = (h, w)
            prev = [16]  # the stem's channels feed stage 1
            for s in range(1, 6):
                stride = 2 if f"s{s}" in placement.split("+") else 1
                out_hw = down(hw, 3, stride)  # same for every odd kernel with padding k//2
                for cout in widths[s - 1]:
                    firsts = [(cin, stride, hw) for cin in prev]
                    for cin, st, in_hw in firsts + [(cout, 1, out_hw)]:  # first block, then later blocks
                        for e in EXPANSIONS:
                            hidden = cin * e
                            for sp in SPARSITIES:
                                if e != 1:
                                    specs.add(conv(cin, hidden, in_hw, sp=sp))
                                    specs |= block(cin, hidden, in_hw, sp, permuted=False)
                                specs.add(conv(hidden, cout, out_hw, sp=sp))
                                specs |= block(hidden, cout, out_hw, sp, permuted=True)
                            for k in KERNELS:
                                specs.add(conv(hidden, hidden, in_hw, k=k, stride=st, groups=hidden))
                prev, hw = widths[s - 1], out_hw
            for cin in prev:
                for sp in SPARSITIES:
                    specs.add(conv(cin, HEAD_CHANNELS, hw, sp=sp))
                    specs |= block(cin, HEAD_CHANNELS, hw, sp, permuted=False)
        return specs

