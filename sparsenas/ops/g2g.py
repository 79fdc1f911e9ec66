"""G2G (group-to-group) layers: neurons split into ensembles, dense inside an ensemble, sparse between
ensembles along a group graph; plus dynamic sparse training (prune and regrow, Hebbian rule).

After G2GNet (Konstantaropoulos et al., arXiv 2508.14140). The mask of a layer with
``G`` ensembles on each side is built in two steps:

1. a **group graph** (networkx) on the G ensembles says which pairs of ensembles may talk:
   ``"block"`` none (block-diagonal), ``"er"`` every pair (the inter-group edges are then an
   Erdos-Renyi draw over all neuron pairs of different ensembles), ``"small_world"`` a
   Watts-Strogatz graph (each ensemble talks to its ring neighbours, a few pairs rewired to
   shortcuts), ``"full"`` dense;
2. exactly ``round(p_inter * #(neuron pairs in different ensembles))`` edges are drawn uniformly
   among the pairs the group graph allows (never more than it allows), and every pair inside an
   ensemble is connected.

So the density is ``1/G + (1 - 1/G) * p_inter`` for ``er`` and ``small_world`` (up to rounding and
unequal ensemble sizes), ``1/G`` for ``block`` and 1 for ``full``: one formula, whatever the graph
decides about *where* the inter-group edges go.

Neurons are assigned to ensembles by ``grouping``: ``"index"`` (contiguous blocks), ``"random"``
(a seeded permutation, then blocks) or ``"interleaved"`` (``i mod G``; stacking index and interleaved
layers is G2GNet's "mixer").

Dynamic sparse training: with :meth:`G2GMixin.enable_dst`, a layer rewires itself from the
training loop's per-step hook (``after_step(step, progress)``, see ``evaluators/training.py``): every
``every`` steps it prunes ``fraction`` of its active edges (smallest ``|w|``: ``"magnitude"``/SET,
lowest ``|cos|`` correlation: ``"hebbian"``, or ``"random"``) and regrows as many among the inactive
ones (highest ``|cos|`` correlation between the pre- and post-activity of the last training batch:
``"hebbian"``, or ``"random"``), so the density never changes. Regrown weights start at zero
(RigL's choice: the network's function does not jump). As in RigL, the fraction decays with a
cosine and rewiring stops at ``stop`` (share of training), so the last steps fine-tune a fixed mask.

The layers are :class:`~sparsenas.ops.sparse.SparseMixin` modules with ``mask_kind="g2g"`` and a
structural mask (``structural_mask = True``: gradual pruning leaves them alone), so ``nnz``,
``masked_weight``, ``trace_layers`` and ``to_inference`` (CSR kernels) work on them unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SparseNASError
from .masks import InvalidSparsity
from .sparse import SparseMixin

__all__ = [
    "G2G_GRAPHS", "G2G_GROUPINGS", "DST_PRUNE", "DST_GROW", "DSTConfig", "G2GMixin", "G2GLinear", "G2GConv2d",
    "group_assignment", "group_graph", "g2g_mask", "g2g_layer_mask", "g2g_plan", "g2g_density", "g2g_modules",
    "enable_dst", "hebbian_scores",
]

G2G_GRAPHS = ("block", "er", "small_world", "full")
G2G_GROUPINGS = ("index", "random", "interleaved")
DST_PRUNE = ("magnitude", "hebbian", "random")
DST_GROW = ("hebbian", "random")
SMALL_WORLD_BETA = 0.2  # Watts-Strogatz rewiring probability: mostly local, a few shortcuts


def _check_choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SparseNASError(f"unknown G2G {what} {value!r}; allowed: {', '.join(allowed)}")


def g2g_density(ensembles: int, p_inter: float, graph: str = "er") -> float:
    """Expected mask density: ``1/G + (1 - 1/G) * p_inter`` (block: ``1/G``; full: 1)."""
    if graph == "full" or ensembles == 1:
        return 1.0
    if graph == "block":
        return 1.0 / ensembles
    return 1.0 / ensembles + (1.0 - 1.0 / ensembles) * p_inter


def group_assignment(n: int, ensembles: int, grouping: str, generator: torch.Generator | None = None) -> Tensor:
    """Ensemble id (0..G-1) of each of ``n`` neurons; sizes differ by at most one. Shape (n,)."""
    _check_choice("grouping", grouping, G2G_GROUPINGS)
    idx = torch.arange(n)
    if grouping == "interleaved":
        return idx % ensembles
    blocks = idx * ensembles // n  # contiguous, balanced sizes
    if grouping == "random":
        return blocks[torch.randperm(n, generator=generator)]
    return blocks


def group_graph(kind: str, ensembles: int, p_inter: float = 0.0, seed: int = 0) -> nx.DiGraph:
    """Directed graph on the ensembles; edge ``i -> j`` lets ensemble i (inputs) feed ensemble j
    (outputs). Self-loops are implied (intra-ensemble connections are always dense) and not stored."""
    _check_choice("graph", kind, G2G_GRAPHS)
    g = ensembles
    if kind == "block":
        return nx.empty_graph(g, create_using=nx.DiGraph)
    if kind in ("er", "full"):
        return nx.complete_graph(g, create_using=nx.DiGraph)
    # small world: the smallest even ring degree whose pairs can hold p_inter of all inter-group edges
    degree = max(2, 2 * math.ceil(p_inter * (g - 1) / 2))
    if degree >= g - 1:
        return nx.complete_graph(g, create_using=nx.DiGraph)
    return nx.DiGraph(nx.watts_strogatz_graph(g, degree, SMALL_WORLD_BETA, seed=seed))  # both directions


def g2g_mask(out_groups: Tensor, in_groups: Tensor, graph: nx.DiGraph, p_inter: float, kind: str,
             generator: torch.Generator | None = None) -> Tensor:
    """0/1 float mask (out, in): dense inside ensembles, ``round(p_inter * #inter pairs)`` inter-group
    edges drawn uniformly among the pairs ``graph`` allows (``kind="full"``: all ones)."""
    intra = out_groups[:, None] == in_groups[None, :]
    if kind == "full":
        return torch.ones(intra.shape)
    g = int(max(out_groups.max(), in_groups.max())) + 1
    adj = torch.zeros(g, g, dtype=torch.bool)  # adj[j, i]: input ensemble i feeds output ensemble j
    for i, j in graph.edges():
        adj[j, i] = True
    allowed = adj[out_groups][:, in_groups] & ~intra
    mask = intra.clone()
    if kind != "block" and p_inter > 0:
        want = min(int(round(p_inter * int((~intra).sum()))), int(allowed.sum()))
        cand = allowed.flatten().nonzero().flatten()
        pick = cand[torch.randperm(len(cand), generator=generator)[:want]]
        mask.view(-1)[pick] = True
    return mask.float()


def g2g_layer_mask(n_in: int, n_out: int, ensembles: int, p_inter: float, graph: str, grouping: str,
                   seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """The mask a G2G layer with these settings builds: (mask (out, in), in_groups (in,), out_groups (out,)).
    A function of its arguments alone (own generator), so a supernet can rebuild a child's mask."""
    gen = torch.Generator().manual_seed(seed)
    in_g = group_assignment(n_in, ensembles, grouping, gen)
    out_g = group_assignment(n_out, ensembles, grouping, gen)
    gg = group_graph(graph, ensembles, p_inter, seed)
    return g2g_mask(out_g, in_g, gg, float(p_inter), graph, gen), in_g, out_g


def g2g_plan(n_in: int, n_out: int, density: float, grouping: str = "index") -> tuple[int, float]:
    """``(ensembles, p_inter)`` of an ``"er"`` G2G layer (n_in -> n_out) whose mask keeps
    ``round(density * n_in * n_out)`` weights, so that it can stand in for a magnitude mask of the
    same density (and the same latency-table entry).

    ``ensembles`` G is the smallest power of two with ``1/G <= density``, capped at ``min(n_in,
    n_out)`` so that no ensemble is empty; ``p_inter`` fills the rest from the layer's *realised*
    intra-ensemble pairs (more than ``numel / G`` when G does not divide the sizes). Where even the
    cap leaves more intra pairs than the target (small layers at high sparsity, e.g. 8 channels at
    density 0.05), ``p_inter`` is 0 and the layer is as sparse as dense ensembles allow: its density
    is the intra fraction (1/8 in that example), above ``density``."""
    _check_choice("grouping", grouping, G2G_GROUPINGS)
    if not 0.0 < float(density) <= 1.0:
        raise SparseNASError(f"G2G density must be in (0, 1], got {density!r}")
    numel = n_in * n_out
    target = int(round(float(density) * numel))
    if target >= numel:
        return 1, 0.0
    ensembles = min(2 ** math.ceil(math.log2(1.0 / float(density)) - 1e-9), n_in, n_out)
    # "random" grouping permutes index blocks: the same group sizes, hence the same intra count
    sizes = "interleaved" if grouping == "interleaved" else "index"
    in_g, out_g = group_assignment(n_in, ensembles, sizes), group_assignment(n_out, ensembles, sizes)
    intra = int((out_g[:, None] == in_g[None, :]).sum())
    inter = numel - intra
    if inter == 0 or target <= intra:
        return ensembles, 0.0
    return ensembles, (target - intra) / inter


def hebbian_scores(pre: Tensor, post: Tensor) -> Tensor:
    """``|cos|`` between each post-neuron's and each pre-neuron's activity over a batch: (out, in).

    ``pre`` (rows, in) and ``post`` (rows, out) are activities, one row per sample (per pixel for
    convolutions). The magnitude is used because a weight may be negative: a strong anti-correlation
    is as useful an edge as a strong correlation."""
    pre_n = pre / pre.norm(dim=0, keepdim=True).clamp_min(1e-12)
    post_n = post / post.norm(dim=0, keepdim=True).clamp_min(1e-12)
    return (post_n.T @ pre_n).abs()


@dataclass(frozen=True)
class DSTConfig:
    """Prune-and-regrow schedule: every ``every`` optimizer steps, rewire ``fraction`` of the active
    edges (decayed by a cosine over training, none after ``stop`` of training)."""

    every: int = 100
    fraction: float = 0.1
    prune: str = "magnitude"
    grow: str = "hebbian"
    stop: float = 0.75

    def __post_init__(self) -> None:
        _check_choice("DST prune rule", self.prune, DST_PRUNE)
        _check_choice("DST grow rule", self.grow, DST_GROW)
        if self.every < 1:
            raise SparseNASError(f"DST 'every' must be at least 1 step, got {self.every}")
        if not 0.0 < self.fraction < 1.0:
            raise SparseNASError(f"DST fraction must be in (0, 1), got {self.fraction}")
        if not 0.0 < self.stop <= 1.0:
            raise SparseNASError(f"DST stop must be in (0, 1], got {self.stop}")

    def fraction_at(self, progress: float) -> float:
        if progress >= self.stop:
            return 0.0
        return self.fraction * 0.5 * (1.0 + math.cos(math.pi * progress / self.stop))


class G2GMixin(SparseMixin):
    """Group-to-group mask construction, fan-in-rescaled init and DST, shared by the linear and the
    1x1-conv form. Buffers: ``mask`` (weight's shape), ``in_group`` (in,), ``out_group`` (out,)."""

    structural_mask = True

    def _init_g2g(self, n_in: int, n_out: int, ensembles: int, p_inter: float, graph: str, grouping: str,
                  seed: int) -> None:
        _check_choice("graph", graph, G2G_GRAPHS)
        _check_choice("grouping", grouping, G2G_GROUPINGS)
        if not (isinstance(ensembles, int) and 1 <= ensembles <= min(n_in, n_out)):
            raise SparseNASError(f"G2G ensembles must be an integer from 1 to min(in, out) = {min(n_in, n_out)}, "
                                 f"got {ensembles!r}")
        if not 0.0 <= float(p_inter) <= 1.0:
            raise SparseNASError(f"G2G p_inter must be in [0, 1], got {p_inter!r}")
        self.ensembles, self.p_inter, self.graph_kind, self.grouping, self.seed = (
            ensembles, float(p_inter), graph, grouping, seed)
        self.mask_kind, self.n, self.m = "g2g", 1, 1
        self.dst: DSTConfig | None = None
        self._pre: Tensor | None = None
        self._post: Tensor | None = None
        mask2d, in_g, out_g = g2g_layer_mask(n_in, n_out, ensembles, self.p_inter, graph, grouping, seed)
        self.register_buffer("in_group", in_g)  # type: ignore[attr-defined]
        self.register_buffer("out_group", out_g)  # type: ignore[attr-defined]
        self.register_buffer("mask", mask2d.reshape(self.weight.shape).to(self.weight.dtype))  # type: ignore[attr-defined]
        self.register_parameter("score", None)  # type: ignore[attr-defined]
        self.sparsity = self.target_sparsity = 1.0 - float(mask2d.mean())
        self._rescale_init()

    def _rescale_init(self) -> None:
        """Scale each row by sqrt(full fan-in / active fan-in), so that the pre-activation variance
        of a sparse unit matches a dense unit's under the same (Kaiming) init."""
        with torch.no_grad():
            rows = self.mask.reshape(self.mask.shape[0], -1)
            active = rows.sum(1).clamp_min(1.0)
            scale = (rows.shape[1] / active).sqrt()
            self.weight.mul_(scale.view(-1, *([1] * (self.weight.dim() - 1))))

    # ---- the mask is structural: magnitude/gradual pruning does not apply
    def update_mask(self) -> None:
        """Nothing to recompute: a G2G mask changes only by :meth:`rewire`."""

    def set_sparsity(self, sparsity: float) -> None:
        if not math.isclose(float(sparsity), self.sparsity, abs_tol=1e-6):
            raise InvalidSparsity(f"a G2G layer's sparsity ({self.sparsity:.4g}) follows from its ensembles and "
                                  f"p_inter; it cannot be set to {sparsity!r}")

    def _sparse_repr(self) -> str:
        dst = "" if self.dst is None else f", dst={self.dst.prune}->{self.dst.grow}/{self.dst.every}"
        return (f", ensembles={self.ensembles}, p_inter={self.p_inter:g}, graph={self.graph_kind}, "
                f"grouping={self.grouping}, sparsity={self.sparsity:.4g}{dst}")

    # ---- activity for the Hebbian rule
    def _record(self, x: Tensor, y: Tensor) -> None:
        if self.training and self.dst is not None:
            self._pre, self._post = self._rows(x.detach()), self._rows(y.detach())

    @staticmethod
    def _rows(t: Tensor) -> Tensor:
        """(rows, features): samples (and pixels, for NCHW) as rows."""
        if t.dim() == 4:
            return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
        return t.reshape(-1, t.shape[-1])

    def correlation(self) -> Tensor:
        """``|cos|`` correlation (out, in) of the last recorded training batch."""
        if self._pre is None or self._post is None:
            raise RuntimeError("no activity recorded: the Hebbian rule needs a training-mode forward with DST "
                               "enabled (layer.enable_dst(...)) before rewiring")
        return hebbian_scores(self._pre.float(), self._post.float())

    def enable_dst(self, config: DSTConfig | None) -> None:
        """Turn dynamic sparse training on (``config``) or off (``None``)."""
        self.dst = config
        if config is None:
            self._pre = self._post = None

    def after_step(self, step: int, progress: float = 0.0) -> int:
        """Training-loop hook (after each optimizer step): rewire on schedule; returns edges moved."""
        if self.dst is None or step % self.dst.every:
            return 0
        fraction = self.dst.fraction_at(progress)
        return self.rewire(fraction, self.dst.prune, self.dst.grow) if fraction > 0 else 0

    @torch.no_grad()
    def rewire(self, fraction: float, prune: str = "magnitude", grow: str = "hebbian",
               generator: torch.Generator | None = None) -> int:
        """Prune ``round(fraction * active)`` active edges and regrow as many inactive ones (never one
        pruned in the same call); the density is unchanged. Returns the number of edges moved."""
        _check_choice("DST prune rule", prune, DST_PRUNE)
        _check_choice("DST grow rule", grow, DST_GROW)
        mask = self.mask.reshape(self.mask.shape[0], -1)  # a view: writes land in the buffer
        weight = self.weight.reshape(self.weight.shape[0], -1)
        active = mask.bool()
        inactive = ~active
        k = min(int(round(fraction * int(active.sum()))), int(inactive.sum()))
        if k <= 0:
            return 0
        corr = self.correlation() if "hebbian" in (prune, grow) else None
        rand = lambda: torch.rand(mask.shape, generator=generator)  # noqa: E731
        # prune: lowest score among active edges
        p_score = {"magnitude": lambda: weight.abs(), "hebbian": lambda: corr, "random": rand}[prune]()
        p_score = torch.where(active, p_score.float(), torch.full_like(mask, float("inf")))
        pruned = torch.topk(p_score.flatten(), k, largest=False).indices
        # grow: highest score among edges inactive before this call
        g_score = corr if grow == "hebbian" else rand()
        g_score = torch.where(inactive, g_score.float(), torch.full_like(mask, float("-inf")))
        grown = torch.topk(g_score.flatten(), k, largest=True).indices
        flat_m, flat_w = mask.reshape(-1), weight.reshape(-1)
        flat_m[pruned] = 0.0
        flat_w[pruned] = 0.0
        flat_m[grown] = 1.0
        flat_w[grown] = 0.0  # start at zero: the function is unchanged by the regrowth itself
        return k


class G2GLinear(G2GMixin, nn.Linear):
    """``nn.Linear`` whose connectivity is a G2G mask. x (..., in) -> (..., out).

    Keyword-only: ``ensembles`` (G), ``p_inter``, ``graph`` (block | er | small_world | full),
    ``grouping`` (index | random | interleaved), ``seed`` (mask and grouping draws)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, ensembles: int = 8,
                 p_inter: float = 0.15, graph: str = "er", grouping: str = "index", seed: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(in_features, out_features, bias, **kwargs)
        self._init_g2g(in_features, out_features, ensembles, p_inter, graph, grouping, seed)

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.masked_weight(), self.bias)
        self._record(x, y)
        return y

    def extra_repr(self) -> str:
        return nn.Linear.extra_repr(self) + self._sparse_repr()


class G2GConv2d(G2GMixin, nn.Conv2d):
    """1x1 convolution whose channel connectivity is a G2G mask. x (N, in, H, W) -> (N, out, H', W')."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, bias: bool = False, *,
                 ensembles: int = 8, p_inter: float = 0.15, graph: str = "er", grouping: str = "index",
                 seed: int = 0) -> None:
        super().__init__(in_channels, out_channels, 1, stride=stride, bias=bias)
        self._init_g2g(in_channels, out_channels, ensembles, p_inter, graph, grouping, seed)

    def forward(self, x: Tensor) -> Tensor:
        y = self._conv_forward(x, self.masked_weight(), self.bias)
        self._record(x, y)
        return y

    def extra_repr(self) -> str:
        return nn.Conv2d.extra_repr(self) + self._sparse_repr()


def g2g_modules(model: nn.Module) -> list[G2GMixin]:
    return [m for m in model.modules() if isinstance(m, G2GMixin)]


def enable_dst(model: nn.Module, config: DSTConfig | None) -> int:
    """Set (or clear) DST on every G2G layer of ``model``; returns how many layers."""
    layers = g2g_modules(model)
    for m in layers:
        m.enable_dst(config)
    return len(layers)
