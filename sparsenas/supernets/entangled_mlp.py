"""Weight-entangled supernet for g2g_mlp (Once-for-All slicing, TangleNAS gradient mixing).

One weight per hidden layer at the largest choice, ``W_i`` (512, n_in_max) with bias (512,), and one
classifier ``W_c`` (classes, 512); every child is a slice of them:

- width w of hidden layer i: the first w units, i.e. the first w rows of ``W_i`` (and of its bias)
  and the first w columns of the next layer's weight (or of the classifier);
- depth d: the first d hidden layers; the classifier reads layer d's output through its first
  ``width_d`` columns;
- connectivity (``ensembles`` G, ``p_inter``, ``graph``, ``grouping``): the G2G mask applied to the
  weight. In sampling mode and :meth:`EntangledG2GMLP.extract` it is the child's EXACT mask, drawn by
  the function and seed the standalone :class:`~sparsenas.ops.g2g.G2GLinear` uses for that layer's
  shape (:func:`~sparsenas.search_spaces._g2g_mlp_modules.layer_plan`), kept in a bounded cache keyed
  by (layer, shape, decision values); so a child inside the supernet computes what the extracted
  standalone child computes. The space has no BatchNorm, so there is nothing to recalibrate.
- fan-in scale: a masked row is multiplied by ``sqrt(n_in / kept fan-in)`` (what G2GLinear's init
  does once), because one weight serves children of every density and, without BatchNorm, a unit
  that keeps 1/16 of its inputs would otherwise see pre-activations ~4x smaller than the dense
  children it was trained with. ``extract`` bakes the scale into the child's weight (the mask
  stays 0/1), so the two still compute the same. On MNIST-1D it moved the Kendall tau of the
  ranking figure from 0.54-0.57 to 0.60-0.72 (benchmarks/entangled_ranking.py; one run each).
- ``dst`` (dynamic sparse training) is a training procedure, not a structure: the supernet ignores
  it and searches only ``dst="off"`` (``choices["dst"] == ["off"]``): an architecture evaluated with
  inherited weights has no training left in which to rewire, so the searched value would carry no
  signal. The architectures found are retrained as found, i.e. without DST.

**Gradient mode** (``set_mixed()``; TangleNAS). One logit vector ``alpha`` per searched choice.

*Width and depth* are mixed as TangleNAS mixes slices. Layer i's mixed weight is
``sum_{a,b} p_i[a] p_{i-1}[b] pad(W_i[:w_a, :w_b]) = W_i * outer(m_i, m_{i-1})`` with
``m_i = sum_a p_i[a] * prefix(w_a)`` the probability that each unit is in use (``m_0 = 1``: the input
is not searched), and mixed bias ``m_i * b_i``. Scaling rows and columns of a weight is scaling the
layer's output and input, so the layer runs as ``m_i * (linear(m_{i-1} * x, W_i * M) + b_i)``: the
mixing costs activation-sized products, not weight-sized ones (a batch-32 MLP step is dominated by
weight-sized work, so this is what keeps it near one child's step time). Depth d's classifier reads
layer d's output zero-padded beyond its width: softly, ``m_d * h_d``, i.e. the classifier's mixed
weight ``W_c * m_d`` over layer d's width applied to ``h_d``. All depths share ``W_c``, and the
classifier is linear, so ``sum_d beta_d W_c (m_d * h_d) = W_c (sum_d beta_d m_d * h_d)``: the
beta-weighted features go through ONE classifier matmul (``beta = softmax(alpha[depth])``).

*Connectivity* has 5 x 6 x 4 x 3 = 360 joint values per layer and each is a 512 x 512 mask that is not
a slice of another (it depends on the shape, the grouping draw and the ER draw), so mixing them
densely would cost 360 mask products per layer. Instead each of the four decisions is sampled by a
hard Gumbel-softmax with a straight-through gradient (GDAS): one joint combination ``c``, drawn anew at
every :meth:`~EntangledG2GMLP.refresh_masks` (every ``mask_every`` = 20 steps in the strategy, because
drawing a new combination's three masks costs more than a step), its (fan-in scaled) mask ``M_c`` (at
the layer's largest shape, cached) applied to the weight, and the layer's output multiplied by
``s = prod_k y_k[c_k]`` with ``y_k = onehot_k - softmax_k.detach() + softmax_k`` recomputed every step
(value 1; its gradient reaches every alpha of the four decisions through the softmaxes). The mixed
weight of layer i is therefore ``s * W_i * outer(m_i, m_{i-1}) * M_c``. Outside training, gradient
mode uses the argmax combination. As in the sparse_mbv2 supernet, gradient mode sees the largest
shape's G2G pattern (an approximation); sampling mode and ``extract`` use each child's exact mask.

**Sampling mode** (``set_arch(arch)``; Once-for-All / single path): runs exactly the child's slices
and masks, so its output equals ``extract(arch)``'s. Trained with the sandwich rule by the strategy.

Shapes: input (B, *task.input_shape), flattened; logits (B, classes).
"""
from __future__ import annotations

import math
import random
from collections import OrderedDict
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..arch import Arch
from ..errors import SparseNASError
from ..ops.g2g import g2g_layer_mask
from ..search_spaces._g2g_mlp_modules import layer_plan
from ..search_spaces.base import SearchSpace
from ..search_spaces.g2g_mlp import MAX_DEPTH, WIDTHS, layer_groupings
from ..task import Task
from .entangled import MIXINGS, EntangledAlphas, soft_prefix
from .registry import register_supernet

__all__ = ["EntangledG2GMLP", "CONN_DECISIONS"]

CONN_DECISIONS = ("ensembles", "p_inter", "graph", "grouping")  # sampled, not mixed (module docstring)
WMAX = max(WIDTHS)
MASK_CACHE = 128  # scaled masks, at most 512 x 512 floats = 1 MiB each: at most 128 MiB (a rebuild: 1-12 ms)


@register_supernet("g2g_mlp", "entangled")
class EntangledG2GMLP(EntangledAlphas, nn.Module):
    """The weight-entangled g2g_mlp supernet (see the module docstring).

    Parameters: ``weights[i]`` (512, n_in_max) and ``biases[i]`` (512,) for the hidden layers
    (n_in_max: the flattened input for layer 0, 512 after), ``classifier`` Linear(512, classes);
    ``alphas``: one logit vector per choice of the space but ``dst``.
    ``mixing`` ("softmax" | "dirichlet") applies to the mixed decisions (widths, depth); the
    connectivity decisions are always sampled by a hard Gumbel-softmax with temperature ``tau``.
    """

    # the entangled strategy's defaults for this space: an MNIST-1D epoch of the supernet takes ~1 s
    # and a standalone retraining 0.05-0.4 s/epoch, and 3 epochs leave MLPs far from converged
    # (40% vs 68-72% after 20), which would rank them by speed of learning, not by accuracy
    default_options = {"search_epochs": 10, "sandwich_epochs": 30, "retrain_epochs": 20}

    def __init__(self, space: SearchSpace, task: Task, *, mixing: str = "softmax", tau: float = 1.0) -> None:
        super().__init__()
        if space.name != "g2g_mlp":
            raise SparseNASError(f"EntangledG2GMLP is the supernet of g2g_mlp, not of '{space.name}'")
        if mixing not in MIXINGS:
            raise SparseNASError(f"unknown mixing '{mixing}'; allowed: {', '.join(MIXINGS)}")
        self.space, self.task, self.mixing, self.tau = space, task, mixing, float(tau)
        self.choices = {**space.choices(task), "dst": ["off"]}
        self.in_features = math.prod(task.input_shape)
        ins = [self.in_features] + [WMAX] * (MAX_DEPTH - 1)
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(WMAX, n)) for n in ins])
        self.biases = nn.ParameterList([nn.Parameter(torch.empty(WMAX)) for _ in ins])
        for w, b in zip(self.weights, self.biases):  # nn.Linear's init at the largest shape
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            nn.init.uniform_(b, -1 / math.sqrt(w.shape[1]), 1 / math.sqrt(w.shape[1]))
        self.classifier = nn.Linear(WMAX, task.num_classes)
        self.alphas = nn.ParameterDict({k: nn.Parameter(torch.zeros(len(v)))
                                        for k, v in self.choices.items() if k != "dst"})
        # (len(WIDTHS), 512) 0/1 rows: prefix(w) of every width, so m_i = p_i @ prefixes is one op
        self.register_buffer("prefixes", torch.stack([soft_prefix(torch.eye(len(WIDTHS))[j], WIDTHS, WMAX)
                                                      for j in range(len(WIDTHS))]), persistent=False)
        self.active: Arch | None = None
        self._masks: OrderedDict[tuple, Tensor | None] = OrderedDict()  # LRU of scaled G2G masks
        self._held: dict[str, int] | None = None  # gradient mode's connectivity sample (conn_pick)

    def extra_repr(self) -> str:
        mode = "gradient" if self.active is None else f"sampling {self.active.digest()}"
        return (f"in={self.in_features}, hidden<={MAX_DEPTH}x{WMAX}, classes={self.task.num_classes}, "
                f"mode={mode}, mixing={self.mixing}, tau={self.tau:g}")

    # ---- modes and named children
    def set_arch(self, arch: Arch) -> "EntangledG2GMLP":
        """Sampling mode: run only ``arch``'s slices and masks (its ``dst`` is ignored)."""
        self.active = self.space.validate(arch, self.task)
        return self

    def refresh_masks(self) -> None:
        """Draw a new connectivity combination for gradient mode (:meth:`conn_pick`); the cached G2G
        masks stay, as they depend on shapes and decisions, not on weight values."""
        self._held = None

    def derive(self) -> Arch:
        """The per-decision argmax of alpha (``dst`` off)."""
        picks = {k: self.choices[k][int(torch.argmax(a.detach()))] for k, a in self.alphas.items()}
        return Arch(self.space.name, self.space.version, {**picks, "dst": "off"})

    def extreme(self, largest: bool, placement: str | None = None) -> Arch:
        """The largest child (3 x 512, dense: one ensemble, full graph) or the smallest (1 x 64,
        16 ensembles, block-diagonal, no inter-ensemble edges). ``placement`` has no meaning here."""
        c = self.choices
        pick = (lambda v: v[-1]) if largest else (lambda v: v[0])
        picks = {k: pick(c[k]) for k in ("depth", *(f"h{i}_width" for i in range(1, MAX_DEPTH + 1)))}
        picks.update(ensembles=c["ensembles"][0 if largest else -1], p_inter=pick(c["p_inter"]),
                     graph="full" if largest else "block", grouping=c["grouping"][0], dst="off")
        return Arch(self.space.name, self.space.version, picks)

    def sample(self, rng: random.Random) -> Arch:
        return Arch(self.space.name, self.space.version, {k: rng.choice(v) for k, v in self.choices.items()})

    # ---- masks
    def layer_mask(self, layer: int, n_in: int, n_out: int, ensembles: int, p_inter: float, graph: str,
                   grouping: str, seed: int) -> Tensor | None:
        """(n_out, n_in) G2G mask the standalone G2GLinear draws for these arguments, its kept entries
        set to the row's fan-in scale ``sqrt(n_in / kept)`` (module docstring), or None when it is all
        ones (one ensemble, or the full graph). ``ensembles`` is the layer's own (already capped at
        ``min(n_in, n_out)``)."""
        if ensembles == 1 or graph == "full":
            return None
        if graph == "block" or p_inter == 0:  # both draw no inter-ensemble edge: the same mask
            graph, p_inter = "block", 0.0
        key = (layer, n_in, n_out, ensembles, float(p_inter), graph, grouping, seed)
        if key in self._masks:
            self._masks.move_to_end(key)
            return self._masks[key]
        mask = g2g_layer_mask(n_in, n_out, ensembles, p_inter, graph, grouping, seed)[0]
        mask = mask * (n_in / mask.sum(1, keepdim=True).clamp_min(1.0)).sqrt()
        self._masks[key] = mask.to(self.weights[0])
        if len(self._masks) > MASK_CACHE:
            self._masks.popitem(last=False)
        return self._masks[key]

    def child_plan(self, ch: dict) -> list[tuple[int, int, int, str, int]]:
        depth = ch["depth"]
        widths = [ch[f"h{i}_width"] for i in range(1, depth + 1)]
        return layer_plan(self.in_features, widths, ch["ensembles"], layer_groupings(ch["grouping"], depth))

    def child_weights(self, arch: Arch) -> list[tuple[Tensor, Tensor]]:
        """The child's (masked weight slice, bias slice) per hidden layer."""
        ch = arch.choices
        out = []
        for i, (n_in, n_out, g, grouping, seed) in enumerate(self.child_plan(ch)):
            w = self.weights[i][:n_out, :n_in]
            m = self.layer_mask(i, n_in, n_out, g, ch["p_inter"], ch["graph"], grouping, seed)
            out.append((w if m is None else w * m, self.biases[i][:n_out]))
        return out

    # ---- forward
    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(x, 1)
        return self._forward_mixed(x) if self.active is None else self._forward_child(x, self.active)

    def _forward_child(self, x: Tensor, arch: Arch) -> Tensor:
        for w, b in self.child_weights(arch):
            x = F.relu(F.linear(x, w, b))
        return F.linear(x, self.classifier.weight[:, :x.shape[1]], self.classifier.bias)

    def conn_pick(self) -> tuple[dict[str, object], Tensor]:
        """The connectivity combination gradient mode runs now and its straight-through scale ``s``:
        while training with gradients, a hard Gumbel-softmax sample per decision, held until the next
        :meth:`refresh_masks` (the strategy calls it every ``mask_every`` steps: a new combination's
        masks cost 1-12 ms to draw, more than a step), with ``s = prod_k (onehot_k - softmax_k.detach()
        + softmax_k)[c_k]`` recomputed every step; otherwise the argmax (s = 1)."""
        picks, scale = {}, torch.ones((), device=self.classifier.weight.device)
        sampling = self.training and torch.is_grad_enabled()
        if sampling and self._held is None:
            self._held = {k: int(F.gumbel_softmax(self.alphas[k].detach(), tau=self.tau, hard=True).argmax())
                          for k in CONN_DECISIONS}
        for k in CONN_DECISIONS:
            a = self.alphas[k]
            if sampling:
                i = self._held[k]
                soft = F.softmax(a / self.tau, 0)
                scale = scale * (1.0 - soft[i].detach() + soft[i])
            else:
                i = int(a.detach().argmax())
            picks[k] = self.choices[k][i]
        return picks, scale

    def width_probs(self, p: dict[str, Tensor]) -> list[Tensor]:
        """``m_i`` (512,) per hidden layer: the probability that each unit is in use."""
        return [p[f"h{i}_width"] @ self.prefixes for i in range(1, MAX_DEPTH + 1)]

    def largest_masks(self, conn: dict[str, object]) -> list[Tensor | None]:
        """The connectivity combination ``conn``'s G2G masks at every layer's largest shape."""
        groupings = layer_groupings(str(conn["grouping"]), MAX_DEPTH)
        plan = layer_plan(self.in_features, [WMAX] * MAX_DEPTH, int(conn["ensembles"]), groupings)
        return [self.layer_mask(i, n_in, n_out, g, float(conn["p_inter"]), str(conn["graph"]), grouping, seed)
                for i, (n_in, n_out, g, grouping, seed) in enumerate(plan)]

    def mixed_weight(self, layer: int, p: dict[str, Tensor], conn: dict[str, object],
                     scale: Tensor | float = 1.0) -> tuple[Tensor, Tensor]:
        """Layer ``layer``'s mixed (weight, bias) materialised: ``s * W * outer(m_i, m_{i-1}) * M_c``
        and ``m_i * b`` (gradient mode computes the same through its input and output, see the
        module docstring; this form is for inspection and tests)."""
        m = self.width_probs(p)
        m_in = m[layer - 1] if layer else torch.ones(self.in_features).to(m[0])
        mask = self.largest_masks(conn)[layer]
        w = self.weights[layer] * torch.outer(m[layer], m_in)
        w = w if mask is None else w * mask
        return scale * w, m[layer] * self.biases[layer]

    def _forward_mixed(self, x: Tensor) -> Tensor:
        p = self.probs()
        conn, scale = self.conn_pick()
        masks = self.largest_masks(conn)
        beta = p["depth"]
        m_prev: Tensor | None = None
        cls_in = 0.0
        for i, m in enumerate(self.width_probs(p)):
            w = self.weights[i] if masks[i] is None else self.weights[i] * masks[i]
            z = F.linear(x if m_prev is None else x * m_prev, w)
            # m * (s * z + b) with the scalars folded into (512,) vectors: two activation-sized ops
            x = F.relu(torch.addcmul(m * self.biases[i], m * scale, z))
            cls_in = cls_in + x * (beta[i] * m)
            m_prev = m
        return self.classifier(cls_in)

    # ---- extraction
    @torch.no_grad()
    def extract(self, arch: Arch, calibration: Iterable[Tensor] | None = None) -> nn.Module:
        """``space.build(arch)`` carrying this supernet's weight slices; its G2G layers keep the mask
        they draw themselves, the one sampling mode runs. ``calibration`` is accepted for the common
        interface and unused: the space has no BatchNorm."""
        arch = self.space.validate(arch, self.task)
        model = self.space.build(arch, self.task)
        hidden = [m for m in model.features if isinstance(m, nn.Linear)]
        ch = arch.choices
        for i, ((n_in, n_out, g, grouping, seed), layer) in enumerate(zip(self.child_plan(ch), hidden)):
            w = self.weights[i][:n_out, :n_in]
            m = self.layer_mask(i, n_in, n_out, g, ch["p_inter"], ch["graph"], grouping, seed)
            # the fan-in scale the supernet applies to the masked rows, baked into the child's weight
            layer.weight.copy_(w if m is None else w * m.amax(1, keepdim=True))
            layer.bias.copy_(self.biases[i][:n_out])
        n = model.classifier.in_features
        model.classifier.weight.copy_(self.classifier.weight[:, :n])
        model.classifier.bias.copy_(self.classifier.bias)
        return model.eval()
