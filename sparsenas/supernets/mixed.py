"""Mixed-op supernets (DARTS / DASS): every decision is a softmax-weighted sum of its candidates.

A :class:`MixedOp` computes ``sum_i softmax(alpha)_i * op_i(x)``; a :class:`MixedSupernet` owns the
architecture parameters ``alpha`` (one matrix per decision type, a row per decision), knows which
mixed ops read which row, and turns ``alpha`` back into a discrete :class:`~sparsenas.arch.Arch` of
its space. All sparse layers use learned-score masks (HYDRA/DASS), so the same network can be run
dense (warm-up) or masked at its target sparsity (the architecture step, pruning, fine-tuning).

Supernets are registered per space as kind ``mixed`` (``sparse_darts``, ``sparse_mbv2``) in
:mod:`sparsenas.supernets.registry`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import math
from dataclasses import replace
from typing import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..arch import Arch
from ..errors import SparseNASError
from ..ops import SparseMixin, sparse_modules
from ..ops.sparse import SCORE_KINDS, SCORE_OF
from ..ops.spec import LayerSpec, trace_named_layers
from ..search_spaces.base import SearchSpace
from ..task import Task
from ..timing import time_callable
from .registry import get_supernet, register_supernet

__all__ = ["MixedOp", "MixedSupernet", "DartsMixedSupernet", "MBV2MixedSupernet", "OpLatency",
           "build_mixed_supernet", "measured_op_latency", "reset_scores"]

# one kernel's latency in ms; it may have a ``cover(specs)`` method, called with every kernel first
# (to time in one go what it does not know yet)
OpLatency = Callable[[LayerSpec], float]
SAMPLE_TRIES = 20  # draws per wanted architecture before derive_candidates gives up on finding new ones


class MixedOp(nn.Module):
    """``forward(x, weights)`` = ``sum_i weights[i] * candidates[i](x)``; weights are one row of softmax(alpha).

    The ``none`` candidate (:class:`~sparsenas.search_spaces._darts_modules.Zero`) contributes
    exactly zero, so it is not run; its weight still takes its share of the softmax.
    """

    def __init__(self, candidates: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not candidates:
            raise ValueError("a MixedOp needs at least one candidate")
        self.names = list(candidates)
        self.candidates = nn.ModuleList(candidates.values())

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        out: Tensor | None = None
        for w, name, op in zip(weights, self.names, self.candidates):
            if name == "none":
                continue
            y = w * op(x)
            out = y if out is None else out + y
        if out is None:  # only 'none': run it for its output shape
            out = weights[0] * self.candidates[0](x)
        return out

    def extra_repr(self) -> str:
        return f"candidates=[{', '.join(self.names)}]"


def reset_scores(model: nn.Module) -> None:
    """HYDRA's scaled score init from the current weights, ``|w| / max|w| * sqrt(6 / fan_in)``, for every
    score-masked layer: the top-k of the scores is then the magnitude mask of the weights."""
    with torch.no_grad():
        for m in sparse_modules(model):
            if m.mask_kind in SCORE_KINDS:
                w = m.weight.abs()
                m.score.copy_(w / w.max().clamp_min(1e-12) * math.sqrt(6.0 / m.weight[0].numel()))


def to_score_masks(model: nn.Module) -> None:
    """Turn every magnitude-masked layer of ``model`` into a learned-score (HYDRA) layer."""
    for m in sparse_modules(model):
        if m.mask_kind in SCORE_OF:
            m.mask_kind = SCORE_OF[m.mask_kind]
            m.score = nn.Parameter(torch.zeros_like(m.weight))
    reset_scores(model)


class MixedSupernet(nn.Module, ABC):
    """Base of the mixed-op supernets. Subclasses build the network, fill ``self.alpha`` (name -> (rows,
    candidates)) and ``self.candidate_names`` (name -> names), and implement ``forward``,
    :meth:`mixed_ops` and :meth:`derive`."""

    space: SearchSpace
    task: Task
    target_sparsity: float

    def __init__(self) -> None:
        super().__init__()
        self.alpha = nn.ParameterDict()
        self.candidate_names: dict[str, list[str]] = {}

    def _add_alpha(self, name: str, rows: int, names: list[str]) -> None:
        self.alpha[name] = nn.Parameter(1e-3 * torch.randn(rows, len(names)))  # DARTS init
        self.candidate_names[name] = list(names)

    # ---- parameter groups
    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alpha.values())

    def score_parameters(self) -> list[nn.Parameter]:
        return [m.score for m in sparse_modules(self) if m.score is not None]

    def weight_parameters(self) -> list[nn.Parameter]:
        skip = {id(p) for p in self.arch_parameters() + self.score_parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    def probs(self) -> dict[str, Tensor]:
        return {k: F.softmax(a, dim=-1) for k, a in self.alpha.items()}

    def alpha_snapshot(self, digits: int = 4) -> dict[str, list[list[float]]]:
        """softmax(alpha) as nested lists (JSON for the study)."""
        with torch.no_grad():
            return {k: [[round(float(v), digits) for v in row] for row in p.cpu()] for k, p in self.probs().items()}

    # ---- masks
    def set_masked(self, masked: bool) -> None:
        """Run every sparse layer at its target sparsity (True) or dense (False).

        Score masks are recomputed from the scores at every forward, so only the level is set here
        (``set_sparsity`` would also sort the scores, for nothing). Structural masks (G2G) are the
        op's connectivity, not a pruning level: they stay as they are."""
        for m in sparse_modules(self):
            if m.structural_mask:
                continue
            m.sparsity = m.target_sparsity if masked else 0.0
            if m.mask_kind not in SCORE_KINDS:
                m.update_mask()

    def reset_scores(self) -> None:
        reset_scores(self)

    # ---- structure
    @abstractmethod
    def mixed_ops(self) -> Iterator[tuple[str, int, MixedOp]]:
        """``(alpha name, row, mixed op)`` for every mixed op; several ops may share a row."""

    @abstractmethod
    def derive(self, scores: Mapping[str, Tensor] | None = None) -> Arch:
        """The discrete architecture preferred by ``scores`` (name -> (rows, candidates), higher is
        better; default log softmax(alpha))."""

    # ---- latency
    def latency_forward(self, x: Tensor) -> Tensor:
        """The forward whose mixed-op input shapes the latency table uses (the task's resolution)."""
        return self(x)

    @torch.no_grad()
    def candidate_latency(self, op_latency: OpLatency) -> list[tuple[str, int, Tensor]]:
        """``(alpha name, row, ms per candidate)`` for every mixed op: the summed ``op_latency`` of the
        kernels each candidate runs at its input shape, with sparse layers at their target sparsity."""
        shapes: dict[int, tuple[int, ...]] = {}

        def record(mod: nn.Module, args: tuple, out: Tensor) -> None:  # a hook returning a value replaces the output
            shapes.setdefault(id(mod), tuple(args[0].shape[1:]))

        hooks = [op.register_forward_hook(record) for _, _, op in self.mixed_ops()]
        modes = {m: m.training for m in self.modules()}
        try:
            self.eval()
            self.latency_forward(torch.zeros(1, *self.task.input_shape, device=next(self.parameters()).device))
        finally:
            for h in hooks:
                h.remove()
            for m, mode in modes.items():
                m.training = mode
        kernels = []  # (alpha name, row, each candidate's kernels)
        for name, row, op in self.mixed_ops():
            per_cand = []
            for cand in op.candidates:
                modules = dict(cand.named_modules())
                specs = []
                for sub, spec in trace_named_layers(cand, shapes[id(op)]):
                    mod = modules.get(sub)
                    specs.append(replace(spec, sparsity=mod.target_sparsity) if isinstance(mod, SparseMixin) else spec)
                per_cand.append(specs)
            kernels.append((name, row, per_cand))
        if cover := getattr(op_latency, "cover", None):
            cover([s for _, _, per_cand in kernels for specs in per_cand for s in specs])
        return [(name, row, torch.tensor([sum(float(op_latency(s)) for s in specs) for specs in per_cand]))
                for name, row, per_cand in kernels]

    def expected_latency(self, table: list[tuple[str, int, Tensor]]) -> Tensor:
        """Differentiable ``sum over mixed ops of sum_i softmax(alpha)_i * latency_i`` (ms)."""
        probs = self.probs()
        terms = [(probs[name][row] * ms.to(probs[name].device)).sum() for name, row, ms in table]
        return torch.stack(terms).sum()

    def row_latency(self, table: list[tuple[str, int, Tensor]]) -> dict[str, Tensor]:
        """ms each candidate adds to the network per row (summed over the mixed ops sharing the row)."""
        out = {k: torch.zeros_like(a, device="cpu") for k, a in self.alpha.items()}
        for name, row, ms in table:
            out[name][row] += ms
        return out

    def derive_candidates(self, k: int, table: list[tuple[str, int, Tensor]] | None = None) -> list[tuple[str, Arch]]:
        """Up to ``k`` distinct architectures: DARTS' argmax first, then latency-aware derivations
        ``argmax(log softmax(alpha) - mu * ms)`` with growing ``mu`` (when a latency ``table`` is given),
        the next most probable choices (flip the decision with the smallest margin), and then
        architectures sampled from softmax(alpha)."""
        logp = {n: F.log_softmax(a.detach().cpu(), dim=-1) for n, a in self.alpha.items()}
        found: list[tuple[str, Arch]] = [("argmax", self.derive(logp))]
        seen = {found[0][1]}
        if k <= 1:
            return found
        if table is not None:
            lat = self.row_latency(table)
            span = max(float(v.max() - v.min()) for v in lat.values()) or 1.0
            for mu in [0.25 * 2 ** i for i in range(12)]:
                arch = self.derive({n: logp[n] - (mu / span) * lat[n] for n in logp})
                if arch not in seen:
                    seen.add(arch)
                    found.append((f"latency-aware mu={mu:g}", arch))
                if len(found) >= k:
                    return found
        # next most probable: demote the runner-up decisions with the smallest log-prob margin first
        margins = []
        for n, lp in logp.items():
            top2 = lp.topk(min(2, lp.shape[1]), dim=1)
            for row in range(lp.shape[0]):
                if lp.shape[1] > 1:
                    margins.append((float(top2.values[row, 0] - top2.values[row, 1]), n, row, int(top2.indices[row, 0])))
        for _, n, row, best in sorted(margins):
            scores = {m: v.clone() for m, v in logp.items()}
            scores[n][row, best] = -math.inf
            arch = self.derive(scores)
            if arch not in seen:
                seen.add(arch)
                found.append((f"runner-up {n}[{row}]", arch))
            if len(found) >= k:
                return found
        # then samples of softmax(alpha) (Gumbel-max, seeded so a resumed run draws the same ones): a
        # space with few decisions runs out of single flips long before a budget runs out
        gen = torch.Generator().manual_seed(0)
        for draw in range(SAMPLE_TRIES * k):
            gumbel = {n: -torch.log(-torch.log(torch.rand(lp.shape, generator=gen).clamp(1e-12, 1 - 1e-7)))
                      for n, lp in logp.items()}
            arch = self.derive({n: logp[n] + gumbel[n] for n in logp})
            if arch not in seen:
                seen.add(arch)
                found.append((f"sampled from softmax(alpha), draw {draw}", arch))
                if len(found) >= k:
                    break
        return found


# ---------------------------------------------------------------- sparse_darts
class DartsMixedSupernet(MixedSupernet):
    """The DARTS search network: every one of a cell's 14 edges is a MixedOp over the 8 primitives;
    all normal cells share ``alpha['normal']`` (14 x 8), all reduction cells ``alpha['reduce']``.
    BatchNorm is not affine (DARTS), convs are score-masked at ``target_sparsity``.

    As DARTS searches a shallower network than it evaluates, the supernet may have fewer ``cells``
    than the derived network (``derived_cells``), and with ``downscale`` it sees the input average-
    pooled 2x (a 16x16 digit is an 8x8 one upsampled): both cut the cost of a search step ~2-4x on a
    CPU. The latency table is still measured at the task's resolution."""

    def __init__(self, space: SearchSpace, task: Task, target_sparsity: float = 0.9, channels: int = 8,
                 cells: int = 3, derived_cells: int = 5, downscale: bool = False) -> None:
        super().__init__()
        from ..search_spaces._darts_modules import EDGES, PRIMITIVES, DartsNetwork, SparseSpec, make_op

        self.space, self.task, self.target_sparsity = space, task, target_sparsity
        self.channels, self.cells, self.derived_cells, self.downscale = channels, cells, derived_cells, downscale
        self.pool_input = nn.AvgPool2d(2) if downscale else nn.Identity()
        sp = SparseSpec(target_sparsity, mask_kind="score", affine=False)

        def make_edge(index: int, reduction: bool, i: int, j: int, c: int, stride: int) -> MixedOp:
            return MixedOp({p: make_op(p, c, stride, sp) for p in PRIMITIVES})

        self.net = DartsNetwork(task.input_shape[0], task.num_classes, channels, cells, make_edge, sp)
        for name in ("normal", "reduce"):
            self._add_alpha(name, len(EDGES), list(PRIMITIVES))
        self.edges = EDGES

    def forward(self, x: Tensor) -> Tensor:
        return self.latency_forward(self.pool_input(x))

    def latency_forward(self, x: Tensor) -> Tensor:
        p = self.probs()
        return self.net(x, {False: p["normal"], True: p["reduce"]})

    def mixed_ops(self) -> Iterator[tuple[str, int, MixedOp]]:
        for cell in self.net.cells:
            for key, op in cell.edges.items():
                yield ("reduce" if cell.reduction else "normal"), cell.edge_rows[key], op

    def derive(self, scores: Mapping[str, Tensor] | None = None) -> Arch:
        """DARTS derivation: per node keep the 2 incoming edges whose best non-'none' candidate scores
        highest, each with that candidate."""
        from ..search_spaces._darts_modules import STEPS
        from ..search_spaces.sparse_darts import genotype_choices

        if scores is None:
            scores = {n: F.log_softmax(a.detach().cpu(), dim=-1) for n, a in self.alpha.items()}
        names = self.candidate_names["normal"]
        usable = [i for i, n in enumerate(names) if n != "none"]
        genotype = {}
        for cell in ("normal", "reduce"):
            s = scores[cell].detach().cpu()[:, usable]
            edges = []
            for i in range(STEPS):
                rows = [(r, j) for r, (n, j) in enumerate(self.edges) if n == i]
                best = sorted(rows, key=lambda rj: -float(s[rj[0]].max()))[:2]
                edges += [(i, j, names[usable[int(s[r].argmax())]]) for r, j in best]
            genotype[cell] = edges
        choices = {"channels": self.channels, "cells": self.derived_cells, "sparsity": self.target_sparsity,
                   **genotype_choices(genotype)}
        arch = Arch(self.space.name, self.space.version, choices)
        self.space.validate(arch, self.task)
        return arch

    def extra_repr(self) -> str:
        return (f"target_sparsity={self.target_sparsity}, channels={self.channels}, cells={self.cells}, "
                f"derived_cells={self.derived_cells}, downscale={self.downscale}")


@register_supernet("sparse_darts", "mixed")
def _darts_supernet(space: SearchSpace, task: Task, *, target_sparsity: float = 0.9, channels: int = 8,
                    cells: int = 5, search_cells: int = 3, downscale: bool | None = None,
                    **_: object) -> DartsMixedSupernet:
    from ..search_spaces.sparse_darts import CELLS, CHANNELS, SPARSITIES

    _check_in("target sparsity", target_sparsity, SPARSITIES, space.name)
    _check_in("channels", channels, CHANNELS, space.name)
    _check_in("cells", cells, CELLS, space.name)
    if not 2 <= int(search_cells) <= 20:
        raise SparseNASError(f"search_cells must be between 2 and 20 (cells of the DARTS supernet, which needs a "
                             f"normal and a reduction cell), got {search_cells}")
    if downscale is None:  # auto: inputs of 16 px and more are searched at half resolution
        downscale = min(task.input_shape[1:]) >= 16
    return DartsMixedSupernet(space, task, target_sparsity, channels, int(search_cells), cells, bool(downscale))


# ---------------------------------------------------------------- sparse_mbv2
class MBV2MixedSupernet(MixedSupernet):
    """A small MobileNetV2 supernet for sparse_mbv2: each block is a MixedOp over (depthwise kernel x
    1x1-conv op), the op being dense, score-masked SparseConv at the target sparsity (DASS's operation
    choice), with ``"magnitude_oc4"`` in ``conns`` the same with scores pruned in blocks of 4 output
    channels (the space's ``conn="magnitude_oc4"``) or, with ``"g2g"`` in ``conns``, a G2G conv at the
    target sparsity (the space's ``conn="g2g"``); the head's 1x1 conv is a MixedOp over the same ops.

    A G2G candidate's mask is fixed by its structure, so DASS's phases treat it as a fixed-mask op:
    it trains its weights at its sparsity in the warm-up as well (the dense warm-up is for the
    magnitude candidates' scores), keeps them in the score-pruning phase (it has no scores) and
    trains them again in the fine-tune.

    Kept small for a CPU by fixing the other choices: ``depth`` blocks per stage (default 1), width
    multiplier ``width`` (default 0.5), expansion ``expand`` (default 3), and the first downsampling
    placement of the space; derivation is the argmax per block and these fixed values.
    """

    def __init__(self, space: SearchSpace, task: Task, target_sparsity: float = 0.9, depth: int = 1,
                 width: float = 0.5, expand: int = 3, conns: tuple[str, ...] = ("magnitude", "g2g")) -> None:
        super().__init__()
        from ..search_spaces._mbv2_modules import HEAD_GROUPING, InvertedResidual, g2g_seed, pointwise
        from ..search_spaces.sparse_mbv2 import HEAD_CHANNELS, KERNELS, STAGE_CHANNELS, STAGE_MAX_DEPTH, make_divisible

        self.space, self.task, self.target_sparsity = space, task, target_sparsity
        self.depth, self.width, self.expand, self.conns = depth, width, expand, tuple(conns)
        choices = space.choices(task)
        self.downsample = choices["downsample"][0]
        down = set(self.downsample.split("+"))
        # 1x1 ops (sparsity, conn): dense, then the target sparsity with each connectivity
        convs = [(0.0, "magnitude")] + [(target_sparsity, c) for c in self.conns]
        ops = [(k, sp, c) for sp, c in convs for k in KERNELS]
        names = [f"k{k}_{_op_name(sp, c)}" for k, sp, c in ops]
        self.ops = ops
        stem = 16
        self.stem = nn.Sequential(nn.Conv2d(task.input_shape[0], stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem),
                                  nn.ReLU6(inplace=True))
        self.blocks = nn.ModuleList()
        self.block_keys: list[tuple[int, int]] = []
        cin = stem
        for s in range(1, 6):
            cout = make_divisible(STAGE_CHANNELS[s - 1] * width)
            for b in range(1, min(depth, STAGE_MAX_DEPTH[s - 1]) + 1):
                stride = 2 if f"s{s}" in down and b == 1 else 1
                self.blocks.append(MixedOp({n: InvertedResidual(cin, cout, stride, expand, k, sp, c, f"s{s}b{b}")
                                            for n, (k, sp, c) in zip(names, ops)}))
                self.block_keys.append((s, b))
                cin = cout
        self.head = MixedOp({_op_name(sp, c): nn.Sequential(pointwise(cin, HEAD_CHANNELS, sp, c, HEAD_GROUPING,
                                                                       g2g_seed("head")),
                                                             nn.BatchNorm2d(HEAD_CHANNELS), nn.ReLU6(inplace=True))
                             for sp, c in convs})
        self.head_ops = convs
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(HEAD_CHANNELS, task.num_classes)
        to_score_masks(self)
        self._add_alpha("blocks", len(self.blocks), names)
        self._add_alpha("head", 1, list(self.head.names))

    def forward(self, x: Tensor) -> Tensor:
        p = self.probs()
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x, p["blocks"][i])
        x = self.head(x, p["head"][0])
        return self.classifier(torch.flatten(self.pool(x), 1))

    def mixed_ops(self) -> Iterator[tuple[str, int, MixedOp]]:
        for i, block in enumerate(self.blocks):
            yield "blocks", i, block
        yield "head", 0, self.head

    def derive(self, scores: Mapping[str, Tensor] | None = None) -> Arch:
        if scores is None:
            scores = {n: F.log_softmax(a.detach().cpu(), dim=-1) for n, a in self.alpha.items()}
        from ..search_spaces.sparse_mbv2 import STAGE_MAX_DEPTH

        picks: dict[str, object] = {"downsample": self.downsample}
        chosen = {key: self.ops[int(scores["blocks"][i].argmax())] for i, key in enumerate(self.block_keys)}
        for s in range(1, 6):
            depth = min(self.depth, STAGE_MAX_DEPTH[s - 1])
            picks[f"s{s}_depth"], picks[f"s{s}_width"] = depth, self.width
            for b in range(1, STAGE_MAX_DEPTH[s - 1] + 1):
                k, sp, conn = chosen.get((s, b), chosen[(s, 1)])  # blocks past the depth are unused; any value
                picks.update({f"s{s}b{b}_expand": self.expand, f"s{s}b{b}_kernel": k, f"s{s}b{b}_sparsity": sp,
                              f"s{s}b{b}_conn": conn})
        picks["head_sparsity"], picks["head_conn"] = self.head_ops[int(scores["head"][0].argmax())]
        arch = Arch(self.space.name, self.space.version, picks)
        self.space.validate(arch, self.task)
        return arch

    def extra_repr(self) -> str:
        return (f"target_sparsity={self.target_sparsity}, depth={self.depth}, width={self.width}, "
                f"expand={self.expand}, conns={self.conns}, downsample={self.downsample}")


def _op_name(sparsity: float, conn: str) -> str:
    """Candidate name of a 1x1 op: ``dense``, ``sparse0.9`` (magnitude/score mask), ``sparse_oc4_0.9``
    (the same in blocks of 4 output channels), ``g2g0.9``."""
    if sparsity == 0:
        return "dense"
    return {"magnitude": "sparse", "magnitude_oc4": "sparse_oc4_"}.get(conn, conn) + f"{sparsity:g}"


@register_supernet("sparse_mbv2", "mixed")
def _mbv2_supernet(space: SearchSpace, task: Task, *, target_sparsity: float = 0.9, depth: int = 1,
                   width: float = 0.5, expand: int = 3, conns: object = ("magnitude", "g2g"),
                   **_: object) -> MBV2MixedSupernet:
    from ..search_spaces.sparse_mbv2 import EXPANSIONS, SPARSITIES, STAGE_MAX_DEPTH, WIDTHS
    from ..search_spaces.sparse_mbv2 import SUPERNET_CONNS as CONNS

    _check_in("target sparsity", target_sparsity, [s for s in SPARSITIES if s > 0], space.name)
    _check_in("depth", depth, list(range(1, max(STAGE_MAX_DEPTH) + 1)), space.name)
    _check_in("width", width, WIDTHS, space.name)
    _check_in("expand", expand, EXPANSIONS, space.name)
    conns = (conns,) if isinstance(conns, str) else tuple(conns)  # type: ignore[arg-type]
    if not conns or len(set(conns)) != len(conns):
        raise SparseNASError(f"the mixed-op supernet of space '{space.name}' needs distinct conns (1x1 connectivities "
                             f"among {', '.join(CONNS)}), got {conns!r}")
    for c in conns:
        _check_in("conn", c, CONNS, space.name)
    return MBV2MixedSupernet(space, task, target_sparsity, depth, width, expand, conns)


def _check_in(what: str, value: object, allowed: list, space: str) -> None:
    if value not in allowed:
        raise SparseNASError(f"the mixed-op supernet of space '{space}' cannot use {what} {value!r}; "
                             f"allowed: {', '.join(map(str, allowed))}")


def build_mixed_supernet(space: SearchSpace, task: Task, **options: object) -> MixedSupernet:
    """The mixed-op supernet of ``space`` for ``task`` (options: target_sparsity, and per space
    channels/cells or depth/width/expand)."""
    build = get_supernet(space.name, "mixed", f"space '{space.name}' has no mixed-op supernet, so DASS cannot "
                                              "search it")
    return build(space, task, **options)


# ---------------------------------------------------------------- latency of one kernel, measured here
_OP_LATENCY_CACHE: dict[str, float] = {}


def measured_op_latency(spec: LayerSpec) -> float:
    """Median thread-CPU ms of one kernel on this machine (1 thread, 30 calls after warm-up), cached per
    ``spec.key()``: the fastest of the inference kernels for sparse-capable layers (as ``to_inference``
    would pick), a dense ``F.conv2d`` for kxk / grouped convs. CPU time rather than wall time because
    the machine is shared: it is the less noisy of the two (docs/measurements.md)."""
    key = spec.key()
    if key in _OP_LATENCY_CACHE:
        return _OP_LATENCY_CACHE[key]
    from ..ops import measure_kernels

    if spec.sparse_capable:
        ms = min(t.cpu_ms for t in measure_kernels(spec, repeats=30).values())
    else:
        conv = nn.Conv2d(spec.cin, spec.cout, spec.kernel, spec.stride, spec.kernel // 2, groups=spec.groups,
                         bias=False).eval()
        x = torch.randn(spec.batch, spec.cin, *spec.in_hw)
        with torch.inference_mode():
            ms = time_callable(lambda: conv(x), warmup=5, repeats=30, threads=1).cpu_ms
    _OP_LATENCY_CACHE[key] = ms
    return ms
