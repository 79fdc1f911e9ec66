"""Weight-entangled supernet for sparse_mbv2 (Once-for-All slicing, TangleNAS gradient mixing).

One weight per layer at the largest choice; every candidate is a slice of it:
- kernel k: the centre k x k of the 7 x 7 depthwise kernel;
- expansion e and stage width w: the first ``cin * e`` hidden / first ``make_divisible(C * w)``
  output channels (input channels follow the previous stage's width);
- depth d: the first d blocks of a stage;
- sparsity s: the magnitude mask at sparsity s of the (mixed) 1x1 weight;
- connectivity (``conn``) of the sparse 1x1 convs: that magnitude mask, the magnitude mask over
  blocks of 4 output channels (``magnitude_oc4``, as the standalone child's SparseConv2d prunes), or
  the fixed G2G mask the standalone child's G2GConv2d builds for the slice's shape and s (same
  function, same seed). ``block`` (block-diagonal) is searched by the multi-trial strategies.

Two ways to run it:

**Gradient mode** (``set_mixed()``; TangleNAS). One logit vector ``alpha`` per choice of the space
(same names as ``space.choices``). Each layer builds ONE weight, the probability-weighted sum of
its candidates' zero-padded slices, and runs ONE convolution. Decisions that shape the same weight
are coupled by the outer product of their probabilities (previous width x expansion for the
expand conv; previous width x expansion x kernel for the depthwise conv; width x previous width x
expansion for the project conv). Because slices are prefixes of one tensor, the sum of padded
slices equals ``W * C`` with ``C`` the summed 0/1 prefix masks, which is how it is computed. The
sparsity choice multiplies the mixed 1x1 weight by ``sum_s p_s * magnitude_mask_s`` (the masks are
nested, so this is ``cumsum(p)`` gathered at each weight's magnitude rank; ranks are refreshed by
``refresh_masks()``, as the standalone trainer refreshes masks every 50 steps). The connectivity
decision is coupled with sparsity: the soft mask is ``p_magnitude * sum_s p_s * magnitude_mask_s +
p_oc4 * sum_s p_s * block_magnitude_mask_s + p_g2g * sum_s p_s * g2g_mask_s`` (the 4-channel-block
masks are nested too: one ranking of the blocks), the G2G masks built once, at construction, on the layer's
largest weight (a G2G mask depends on the layer's shape -- ensembles, ER draws -- so it is not
nested across slices: gradient mode sees the largest layer's G2G pattern, an approximation;
sampling mode and ``extract`` use each child's exact mask). Each weight's magnitude bucket, block
bucket and G2G code (which levels' G2G masks keep it) share one int16 code (6 x 6 x 32 = 1152 values:
a byte held the first and last only), so the whole soft mask is one small (levels x levels x codes)
table gathered once per layer, as cheap as the sparsity decision alone.
BatchNorm affine parameters are mixed the same way (a channel kept by fewer candidates is scaled down), as
TangleNAS does, because batch statistics would otherwise normalise the weight scaling away.
Expansion 1 (no expand conv) is the identity folded into the expand weight, so the skip costs no
extra activation (folding the skip into the weight is what keeps memory at ~1.0x of the largest child); in
gradient mode that candidate therefore passes BN + ReLU6, which the standalone block does not.
Depth mixes the stage's block outputs with ``beta = softmax(alpha[sN_depth])``. The first block of
a stage has a residual exactly when input and output widths agree, so its residual is weighted by
the probability of that event.

**Downsampling placement** is weight-free (a stride), but placements change every later feature
map size, so mixing them would run the network once per placement. Gradient mode therefore fixes
the placement per run (``downsample=``, default the space's first placement); sampling mode and
``extract`` accept any placement, and the NSGA-II search over inherited weights searches it.

**Sampling mode** (``set_arch(arch)``; Once-for-All / single path): runs exactly the child's
slices, stride and masks, so its output equals ``extract(arch)``'s (same BatchNorm statistics).
Trained with the sandwich rule (largest + smallest + random children per step) by the strategy.

Shapes: input (B, C, H, W) of the task; logits (B, classes).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..arch import Arch
from ..errors import SparseNASError
from ..ops import SparseConv2d, g2g_layer_mask, g2g_plan, recalibrate_bn
from ..ops.masks import block_magnitude_levels
from ..ops.sparse import MAGNITUDE_KINDS
from ..search_spaces._mbv2_modules import EXPAND_GROUPING, HEAD_GROUPING, PROJECT_GROUPING, g2g_seed
from ..search_spaces.base import SearchSpace
from ..search_spaces.sparse_mbv2 import (
    EXPANSIONS, HEAD_CHANNELS, KERNELS, SPARSITIES, STAGE_CHANNELS, STAGE_MAX_DEPTH, SUPERNET_CONNS, WIDTHS,
    make_divisible,
)
from ..task import Task
from .registry import get_supernet, register_supernet

__all__ = ["EntangledMBV2", "EntangledAlphas", "entangled_supernet", "prefix", "centre_mask", "sparsity_buckets",
           "block_sparsity_buckets", "g2g_child_mask", "g2g_codes", "mask_codes", "soft_conn_mask"]

STEM = 16
KMAX = max(KERNELS)
EMAX = max(EXPANSIONS)
MIXINGS = ("softmax", "dirichlet")



# ---------------------------------------------------------------- slicing helpers
def prefix(n: int, total: int, like: Tensor | None = None) -> Tensor:
    """(total,) float vector with ones on the first ``n`` entries."""
    v = torch.zeros(total, dtype=like.dtype if like is not None else torch.float32,
                    device=like.device if like is not None else None)
    v[:n] = 1
    return v


def centre_mask(k: int, kmax: int = KMAX, like: Tensor | None = None) -> Tensor:
    """(kmax, kmax) float mask with ones on the centre ``k x k`` window."""
    m = torch.zeros(kmax, kmax, dtype=like.dtype if like is not None else torch.float32,
                    device=like.device if like is not None else None)
    s = (kmax - k) // 2
    m[s:s + k, s:s + k] = 1
    return m


def centre(w: Tensor, k: int) -> Tensor:
    """Centre ``k x k`` window of a (..., kmax, kmax) kernel."""
    s = (w.shape[-1] - k) // 2
    return w[..., s:s + k, s:s + k]


def soft_prefix(probs: Tensor, sizes: list[int], total: int) -> Tensor:
    """``sum_i probs[i] * prefix(sizes[i], total)``: probability that each channel is in use."""
    masks = torch.stack([prefix(n, total, probs) for n in sizes])
    return probs @ masks


def sparsity_buckets(weight: Tensor, sparsities: list[float] = SPARSITIES) -> Tensor:
    """For each weight, index of the highest sparsity level (of the ascending ``sparsities``) whose
    magnitude mask still keeps it; the masks are nested, ranked as :func:`magnitude_mask` ranks."""
    w = weight.detach().abs().flatten()
    n = w.numel()
    rank = torch.empty(n, dtype=torch.long, device=w.device)
    rank[torch.argsort(w, stable=True)] = torch.arange(n, device=w.device)
    zeros = torch.tensor([min(n, int(round(s * n))) for s in sparsities], device=w.device)
    return (torch.searchsorted(zeros, rank, right=True) - 1).view_as(weight)


def block_sparsity_buckets(weight: Tensor, sparsities: list[float] = SPARSITIES) -> Tensor:
    """As :func:`sparsity_buckets` for the masks of ``conn="magnitude_oc4"`` (:func:`block_magnitude_mask`
    over blocks of 4 output channels, nested across the ascending levels, the first of which is 0)."""
    return block_magnitude_levels(weight, sparsities) - 1


def g2g_child_mask(n_in: int, n_out: int, sparsity: float, grouping: str, seed: int) -> Tensor:
    """(n_out, n_in, 1, 1) 0/1 mask of the G2GConv2d that ``pointwise(..., conn="g2g")`` builds for
    these arguments (the standalone child's mask)."""
    ensembles, p_inter = g2g_plan(n_in, n_out, 1.0 - sparsity, grouping)
    return g2g_layer_mask(n_in, n_out, ensembles, p_inter, "er", grouping, seed)[0][:, :, None, None]


LEVELS = len(SPARSITIES)
G2G_LEVELS = LEVELS - 1             # sparse levels, each with its own G2G mask
G2G_CODES = 2 ** G2G_LEVELS         # a weight's G2G code: bit s-1 set when level s's mask keeps it
MASK_CODES = LEVELS * LEVELS * G2G_CODES  # magnitude bucket x block bucket x G2G code
assert MASK_CODES <= torch.iinfo(torch.int16).max + 1, "mask codes must fit an int16"
_BITS = ((torch.arange(G2G_CODES)[:, None] >> torch.arange(G2G_LEVELS)) & 1).float()  # (codes, levels)


def g2g_codes(n_in: int, n_out: int, grouping: str, seed: int) -> Tensor:
    """uint8 (n_out, n_in, 1, 1): the G2G code of each weight over the sparse levels of SPARSITIES."""
    code = torch.zeros(n_out, n_in, 1, 1, dtype=torch.long)
    for bit, s in enumerate(SPARSITIES[1:]):
        code |= g2g_child_mask(n_in, n_out, s, grouping, seed).long() << bit
    return code.to(torch.uint8)


def mask_codes(buckets: Tensor, block_buckets: Tensor, codes: Tensor) -> Tensor:
    """int16: a weight's magnitude bucket (:func:`sparsity_buckets`), block bucket
    (:func:`block_sparsity_buckets`) and G2G code (:func:`g2g_codes`) in one code."""
    return ((buckets.long() * LEVELS + block_buckets.long()) * G2G_CODES + codes.long()).to(torch.int16)


_CONN = {c: i for i, c in enumerate(SUPERNET_CONNS)}  # index of each connectivity in ``p_conn``


def _mask_table(p_sparsity: Tensor, p_conn: Tensor) -> Tensor:
    """(MASK_CODES,): the soft mask value of a weight, by its :func:`mask_codes` code; ``p_conn``
    over SUPERNET_CONNS."""
    kept = torch.cumsum(p_sparsity, 0)                                      # (levels,) by nested bucket
    g2g = p_sparsity[0] + _BITS.to(p_sparsity) @ p_sparsity[1:]             # (codes,) by G2G code
    table = (p_conn[_CONN["magnitude"]] * kept[:, None, None] + p_conn[_CONN["magnitude_oc4"]] * kept[None, :, None]
             + p_conn[_CONN["g2g"]] * g2g[None, None, :])
    return table.flatten()


def soft_conn_mask(p_sparsity: Tensor, p_conn: Tensor, codes: Tensor) -> Tensor:
    """``sum_c p_c * sum_s p_s * mask_(c, s)`` over the connectivities c (magnitude, g2g,
    magnitude_oc4; level 0: all ones), for weights coded by :func:`mask_codes`: a small table
    gathered once, so the connectivity decision costs no more elementwise work than the sparsity
    decision alone."""
    return _mask_table(p_sparsity, p_conn)[codes.long()]


class _MaskedMix(torch.autograd.Function):
    """``w * coef[:, :, None, None] * soft_conn_mask(p_sparsity, p_conn, codes)`` for a 1x1 weight
    ``w`` (out, in, 1, 1), ``coef`` (out, in) the summed prefix coefficients of its slices.

    Written by hand because autograd would keep two weight-sized tensors per layer alive for
    backward (the coefficient-scaled weight and the gathered mask) and checkpointing them costs a
    second pass of the whole mixing (step time 1.14-1.24x the largest child instead of ~1.05x).
    Here backward keeps only ``w`` (a parameter, alive anyway), ``coef`` and the probabilities,
    and re-gathers the mask from the int16 codes; the probabilities' gradient is the per-code sum
    of ``grad * w * coef`` (a bincount) pushed through the small table."""

    @staticmethod
    def forward(ctx, w: Tensor, coef: Tensor, p_sparsity: Tensor, p_conn: Tensor, codes: Tensor) -> Tensor:
        ctx.save_for_backward(w, coef, p_sparsity, p_conn, codes)
        mask = _mask_table(p_sparsity, p_conn)[codes.long()]
        return w * (coef[:, :, None, None] * mask)

    @staticmethod
    def backward(ctx, grad: Tensor):
        w, coef, p_sparsity, p_conn, codes = ctx.saved_tensors
        idx = codes.long()
        with torch.enable_grad():
            ps, pc = p_sparsity.detach().requires_grad_(), p_conn.detach().requires_grad_()
            table = _mask_table(ps, pc)
        mask = table.detach()[idx]
        c4 = coef[:, :, None, None]
        gw = grad * (c4 * mask) if ctx.needs_input_grad[0] else None
        gwm = grad * w
        gcoef = (gwm * mask).sum((2, 3)) if ctx.needs_input_grad[1] else None
        g_table = torch.bincount(idx.flatten(), weights=(gwm * c4).flatten(), minlength=table.numel())
        gps, gpc = torch.autograd.grad(table, (ps, pc), g_table.to(table.dtype))
        return gw, gcoef, gps, gpc, None


def masked_mix(w: Tensor, coef: Tensor, p_sparsity: Tensor, p_conn: Tensor, codes: Tensor) -> Tensor:
    """See :class:`_MaskedMix`."""
    return _MaskedMix.apply(w, coef, p_sparsity, p_conn, codes)


def _bn(bn: nn.BatchNorm2d, x: Tensor, c: int, scale: Tensor | None = None) -> Tensor:
    """BatchNorm over the first ``c`` channels of ``bn`` (running stats updated in place through the
    slice views); ``scale`` (c,) multiplies the affine weight and bias (TangleNAS's mixed BN)."""
    w, b = bn.weight[:c], bn.bias[:c]
    if scale is not None:
        w, b = w * scale, b * scale
    momentum = bn.momentum
    if momentum is None and bn.training:  # cumulative average, as nn.BatchNorm2d with momentum=None
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked)
    return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], w, b, bn.training, momentum or 0.0, bn.eps)


def _pad_channels(x: Tensor, c: int) -> Tensor:
    return x if x.shape[1] == c else F.pad(x, (0, 0, 0, 0, 0, c - x.shape[1]))


@dataclass
class Mix:
    """Probabilities one block needs in gradient mode (1-D tensors) and its stride."""

    p_in: Tensor          # over the block's ``in_sizes`` (previous stage's widths, or the stem)
    p_out: Tensor         # over the block's ``out_sizes`` (this stage's widths)
    p_expand: Tensor      # over EXPANSIONS
    p_kernel: Tensor      # over KERNELS
    p_sparsity: Tensor    # over SPARSITIES
    stride: int
    p_conn: Tensor        # over sparse_mbv2.SUPERNET_CONNS: (magnitude, g2g, magnitude_oc4)


class EntangledBlock(nn.Module):
    """Inverted-residual block at its largest size; children are slices (see module docstring).

    Weights: ``w_exp`` (cin_max * 6, cin_max, 1, 1), ``w_dw`` (cin_max * 6, 1, 7, 7),
    ``w_proj`` (cout_max, cin_max * 6, 1, 1); BatchNorms ``bn1``/``bn2`` (hidden) and ``bn3`` (cout).
    ``in_sizes``/``out_sizes``: the input / output widths the block can be given.
    """

    def __init__(self, name: str, in_sizes: list[int], out_sizes: list[int]) -> None:
        super().__init__()
        self.name, self.in_sizes, self.out_sizes = name, list(in_sizes), list(out_sizes)
        self.cin_max, self.cout_max = max(in_sizes), max(out_sizes)
        self.hidden_max = h = self.cin_max * EMAX
        self.w_exp = nn.Parameter(torch.empty(h, self.cin_max, 1, 1))
        self.w_dw = nn.Parameter(torch.empty(h, 1, KMAX, KMAX))
        self.w_proj = nn.Parameter(torch.empty(self.cout_max, h, 1, 1))
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm2d(h), nn.BatchNorm2d(h), nn.BatchNorm2d(self.cout_max)
        for w in (self.w_exp, self.w_dw, self.w_proj):
            nn.init.kaiming_normal_(w, mode="fan_out")
        # 0/1 prefix masks of every candidate slice, as constants: rows follow (input width, expansion)
        pairs = [(ci, e) for ci in self.in_sizes for e in EXPANSIONS]
        self.register_buffer("pre_hidden", torch.stack([prefix(ci * e, h) for ci, e in pairs]), persistent=False)
        self.register_buffer("pre_in", torch.stack([prefix(ci, self.cin_max) for ci, _ in pairs]), persistent=False)
        self.register_buffer("is_skip", torch.tensor([float(e == 1) for _, e in pairs]), persistent=False)
        self.register_buffer("pre_out", torch.stack([prefix(c, self.cout_max) for c in self.out_sizes]),
                             persistent=False)
        self.register_buffer("pre_kernel", torch.stack([centre_mask(k) for k in KERNELS]), persistent=False)
        same = [[float(ci == co) for co in self.out_sizes] for ci in self.in_sizes]
        self.register_buffer("same_width", torch.tensor(same), persistent=False)
        # G2G masks of the largest weights at every level (gradient mode), as one code byte per weight
        self.register_buffer("g2g_exp", g2g_codes(self.cin_max, h, EXPAND_GROUPING, self.seed("exp")),
                             persistent=False)
        self.register_buffer("g2g_proj", g2g_codes(h, self.cout_max, PROJECT_GROUPING, self.seed("proj")),
                             persistent=False)
        self._buckets: dict[str, Tensor] = {}
        self._masks: dict[tuple, Tensor] = {}  # sampling mode's masks (magnitude and G2G) until the next refresh

    def extra_repr(self) -> str:
        return (f"{self.name}: cin in {self.in_sizes}, cout in {self.out_sizes}, hidden<={self.hidden_max}, "
                f"kernel<={KMAX}")

    def seed(self, layer: str) -> int:
        """Seed of the G2G masks of this block's ``layer`` ("exp" | "proj"), as the standalone block's."""
        return g2g_seed(f"{self.name}.{layer}")

    def refresh_masks(self) -> None:
        self._buckets.clear()
        self._masks.clear()

    # ---- sampling mode
    def child_mask(self, key: str, w: Tensor, sparsity: float, conn: str = "magnitude") -> Tensor | None:
        if sparsity <= 0:
            return None
        if conn == "g2g":
            grouping = EXPAND_GROUPING if key == "exp" else PROJECT_GROUPING
            return _cached_g2g(self._masks, key, w, sparsity, grouping, self.seed(key))
        prune = MAGNITUDE_KINDS["magnitude_oc4" if conn == "magnitude_oc4" else "magnitude"]
        if not self.training:  # evaluation: always the mask of the current weights (exact)
            return prune(w, sparsity)
        k = (key, tuple(w.shape), sparsity, conn)
        if k not in self._masks:
            self._masks[k] = prune(w, sparsity)
        return self._masks[k]

    def child_weights(self, cin: int, cout: int, expand: int, kernel: int, sparsity: float,
                      conn: str = "magnitude") -> tuple[Tensor | None, Tensor, Tensor]:
        """The child's (masked) weights: expand (or None for expansion 1), depthwise, project."""
        hidden = cin * expand
        w_exp = None
        if expand != 1:
            w_exp = self.w_exp[:hidden, :cin]
            m = self.child_mask("exp", w_exp, sparsity, conn)
            w_exp = w_exp if m is None else w_exp * m
        w_dw = centre(self.w_dw[:hidden], kernel)
        w_proj = self.w_proj[:cout, :hidden]
        m = self.child_mask("proj", w_proj, sparsity, conn)
        return w_exp, w_dw, (w_proj if m is None else w_proj * m)

    def forward_child(self, x: Tensor, cout: int, stride: int, expand: int, kernel: int,
                      sparsity: float, conn: str = "magnitude") -> Tensor:
        """(B, cin, H, W) -> (B, cout, H/stride, W/stride), exactly the standalone block."""
        cin = x.shape[1]
        hidden = cin * expand
        w_exp, w_dw, w_proj = self.child_weights(cin, cout, expand, kernel, sparsity, conn)
        h = x
        if w_exp is not None:
            h = F.relu6(_bn(self.bn1, F.conv2d(x, w_exp), hidden), inplace=True)
        h = F.conv2d(h, w_dw, None, stride, kernel // 2, 1, hidden)
        h = F.relu6(_bn(self.bn2, h, hidden), inplace=True)
        y = _bn(self.bn3, F.conv2d(h, w_proj), cout)
        return x + y if stride == 1 and cin == cout else y

    # ---- gradient mode
    def codes(self, key: str, w: Tensor, coef: Tensor) -> Tensor:
        """Mask codes (:func:`mask_codes`) of the 1x1 weight ``key`` ("exp" | "proj"): magnitude
        and block buckets of the coefficient-scaled weight ``w * coef``, kept (2 bytes per weight)
        until :meth:`refresh_masks`."""
        if key not in self._buckets:
            with torch.no_grad():
                mixed = w * coef[:, :, None, None]
            self._buckets[key] = mask_codes(sparsity_buckets(mixed), block_sparsity_buckets(mixed),
                                            getattr(self, f"g2g_{key}"))
        return self._buckets[key]

    def mixed_weights(self, mix: Mix) -> dict[str, Tensor]:
        """The ONE weight each layer runs in gradient mode: ``exp`` (with the identity of expansion 1
        folded in), ``dw`` and ``proj``; plus ``hidden`` (hidden_max,) and ``out`` (cout_max,): the
        probability that each channel is in use, which scales the BatchNorm affine parameters."""
        pair = torch.outer(mix.p_in, mix.p_expand).flatten()          # (input width, expansion)
        conv = pair * (1 - self.is_skip)
        # sum over pairs of p * prefix_rows x prefix_cols == sum of the zero-padded slices
        coef = torch.einsum("t,to,ti->oi", conv, self.pre_hidden, self.pre_in)
        exp_core = masked_mix(self.w_exp, coef, mix.p_sparsity, mix.p_conn, self.codes("exp", self.w_exp, coef))
        diag = (pair * self.is_skip) @ self.pre_in                     # identity of expansion 1
        ident = F.pad(torch.diag(diag), (0, 0, 0, self.hidden_max - self.cin_max))
        w_exp = exp_core + ident[:, :, None, None]

        hidden = pair @ self.pre_hidden
        kmask = torch.einsum("k,kij->ij", mix.p_kernel, self.pre_kernel)
        w_dw = self.w_dw * (hidden[:, None, None, None] * kmask)

        out = mix.p_out @ self.pre_out
        coef = out[:, None] * hidden[None, :]
        w_proj = masked_mix(self.w_proj, coef, mix.p_sparsity, mix.p_conn, self.codes("proj", self.w_proj, coef))
        return {"exp": w_exp, "dw": w_dw, "proj": w_proj, "hidden": hidden, "out": out}

    def forward_mixed(self, x: Tensor, mix: Mix, first: bool) -> Tensor:
        """(B, cin_max, H, W) -> (B, cout_max, H/stride, W/stride): one conv per layer."""
        w = self.mixed_weights(mix)
        h = F.relu6(_bn(self.bn1, F.conv2d(x, w["exp"]), self.hidden_max, w["hidden"]), inplace=True)
        h = F.conv2d(h, w["dw"], None, mix.stride, KMAX // 2, 1, self.hidden_max)
        h = F.relu6(_bn(self.bn2, h, self.hidden_max, w["hidden"]), inplace=True)
        y = _bn(self.bn3, F.conv2d(h, w["proj"]), self.cout_max, w["out"])
        if mix.stride != 1:
            return y
        if not first:
            return y + x
        # first block of a stage: a residual only when the input width equals the chosen output width
        if not bool(self.same_width.any()):
            return y
        p_same = mix.p_in @ self.same_width @ mix.p_out
        return y + _pad_channels(p_same * x, self.cout_max)


class EntangledAlphas:
    """What every weight-entangled supernet does with its ``alphas`` (a ParameterDict of logits per
    decision) and ``mixing``: parameter groups, gradient mode, mixing probabilities."""

    alphas: nn.ParameterDict
    mixing: str
    active: Arch | None
    training: bool

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]  # type: ignore[attr-defined]

    def set_mixed(self):
        """Gradient mode: every choice mixed by its alphas."""
        self.active = None
        return self

    def probs(self) -> dict[str, Tensor]:
        """Mixing weights per choice: softmax(alpha), or a DrNAS Dirichlet sample while training."""
        if self.mixing == "dirichlet" and self.training:
            return {k: torch.distributions.Dirichlet(F.elu(a) + 1).rsample() for k, a in self.alphas.items()}
        if self.mixing == "dirichlet":
            return {k: (F.elu(a) + 1) / (F.elu(a) + 1).sum() for k, a in self.alphas.items()}
        return {k: F.softmax(a, 0) for k, a in self.alphas.items()}

    @torch.no_grad()
    def alpha_summary(self) -> dict[str, list[float]]:
        return {k: [round(float(v), 4) for v in p] for k, p in self.probs().items()}


@register_supernet("sparse_mbv2", "entangled")
class EntangledMBV2(EntangledAlphas, nn.Module):
    """The weight-entangled sparse_mbv2 supernet (see the module docstring).

    ``alphas``: a ParameterDict keyed by the space's choice names (all but ``downsample``).
    ``mixing``: "softmax" (DARTS) or "dirichlet" (DrNAS: ``Dirichlet(elu(alpha) + 1).rsample()``
    while training, its mean otherwise).
    """

    def __init__(self, space: SearchSpace, task: Task, *, downsample: str | None = None,
                 mixing: str = "softmax") -> None:
        super().__init__()
        if space.name != "sparse_mbv2":
            raise SparseNASError(f"EntangledMBV2 is the supernet of sparse_mbv2, not of '{space.name}'")
        if mixing not in MIXINGS:
            raise SparseNASError(f"unknown mixing '{mixing}'; allowed: {', '.join(MIXINGS)}")
        self.space, self.task, self.mixing = space, task, mixing
        # the supernet mixes the magnitude, G2G and 4-channel-block masks; block-diagonal layers are
        # searched standalone. Its ``_conn`` choices are SUPERNET_CONNS in that order (``_mask_table``)
        self.choices = {k: [c for c in v if c in SUPERNET_CONNS] if k.endswith("_conn") else v
                        for k, v in space.choices(task).items()}
        assert all(v == list(SUPERNET_CONNS) for k, v in self.choices.items() if k.endswith("_conn"))
        placements = self.choices["downsample"]
        if downsample is None:
            downsample = placements[0]
        if downsample not in placements:
            raise SparseNASError(f"downsample placement {downsample!r} is not one of {placements} for input "
                                 f"{task.input_shape}")
        self.downsample = downsample
        self.widths = {s: [make_divisible(STAGE_CHANNELS[s - 1] * w) for w in WIDTHS] for s in range(1, 6)}
        in_ch = task.input_shape[0]
        self.stem = nn.Sequential(nn.Conv2d(in_ch, STEM, 3, 1, 1, bias=False), nn.BatchNorm2d(STEM),
                                  nn.ReLU6(inplace=True))
        blocks: dict[str, EntangledBlock] = {}
        in_sizes = [STEM]
        for s in range(1, 6):
            for b in range(1, STAGE_MAX_DEPTH[s - 1] + 1):
                blocks[f"s{s}b{b}"] = EntangledBlock(f"s{s}b{b}", in_sizes, self.widths[s])
                in_sizes = self.widths[s]
        self.blocks = nn.ModuleDict(blocks)
        self.w_head = nn.Parameter(torch.empty(HEAD_CHANNELS, max(in_sizes), 1, 1))
        self.bn_head = nn.BatchNorm2d(HEAD_CHANNELS)
        self.classifier = nn.Linear(HEAD_CHANNELS, task.num_classes)
        nn.init.kaiming_normal_(self.w_head, mode="fan_out")
        nn.init.kaiming_normal_(self.stem[0].weight, mode="fan_out")
        self.alphas = nn.ParameterDict({k: nn.Parameter(torch.zeros(len(v)))
                                        for k, v in self.choices.items() if k != "downsample"})
        self.register_buffer("g2g_head", g2g_codes(max(in_sizes), HEAD_CHANNELS, HEAD_GROUPING, g2g_seed("head")),
                             persistent=False)
        self.active: Arch | None = None
        self._head_buckets: Tensor | None = None
        self._head_masks: dict[tuple, Tensor] = {}

    def extra_repr(self) -> str:
        mode = "gradient" if self.active is None else f"sampling {self.active.digest()}"
        return f"mode={mode}, mixing={self.mixing}, downsample(gradient mode)={self.downsample}"

    # ---- modes
    def set_arch(self, arch: Arch) -> "EntangledMBV2":
        """Sampling mode: run only ``arch``'s slices."""
        self.active = self.space.validate(arch, self.task)
        return self

    def refresh_masks(self) -> None:
        """Recompute magnitude ranks / masks from the current weights (call every N training steps)."""
        for blk in self.blocks.values():
            blk.refresh_masks()
        self._head_buckets = None
        self._head_masks.clear()

    def derive(self) -> Arch:
        """The per-decision argmax of alpha, at the gradient-mode placement."""
        picks = {k: self.choices[k][int(torch.argmax(a.detach()))] for k, a in self.alphas.items()}
        return Arch(self.space.name, self.space.version, {**picks, "downsample": self.downsample})

    # ---- named children
    def extreme(self, largest: bool, downsample: str | None = None) -> Arch:
        """The largest (or smallest) child: expansion, kernel, depth, width max (min) and sparsity min
        (max); connectivity is not a size: magnitude in both."""
        picks = {}
        for k, v in self.choices.items():
            if k.endswith("_conn"):
                picks[k] = v[0]
                continue
            big = v[-1] if not k.endswith("sparsity") else v[0]
            small = v[0] if not k.endswith("sparsity") else v[-1]
            picks[k] = big if largest else small
        picks["downsample"] = downsample or self.downsample
        return Arch(self.space.name, self.space.version, picks)

    def sample(self, rng: random.Random) -> Arch:
        """A random child among the supernet's choices (never a ``block`` conn, which it cannot run)."""
        return Arch(self.space.name, self.space.version, {k: rng.choice(v) for k, v in self.choices.items()})

    # ---- forward
    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self._features_mixed(x) if self.active is None else self._features_child(x, self.active)
        x = F.adaptive_avg_pool2d(x, 1)
        return self.classifier(torch.flatten(x, 1))

    def _head_child(self, x: Tensor, sparsity: float, conn: str = "magnitude") -> Tensor:
        w = self.w_head[:, :x.shape[1]]
        if sparsity > 0 and conn == "g2g":
            w = w * _cached_g2g(self._head_masks, "head", w, sparsity, HEAD_GROUPING, g2g_seed("head"))
        elif sparsity > 0:
            prune = MAGNITUDE_KINDS["magnitude_oc4" if conn == "magnitude_oc4" else "magnitude"]
            if self.training:
                key = (tuple(w.shape), sparsity, conn)
                if key not in self._head_masks:
                    self._head_masks[key] = prune(w, sparsity)
                m = self._head_masks[key]
            else:
                m = prune(w, sparsity)
            w = w * m
        return F.relu6(_bn(self.bn_head, F.conv2d(x, w), HEAD_CHANNELS), inplace=True)

    def _features_child(self, x: Tensor, arch: Arch) -> Tensor:
        ch = arch.choices
        down = set(ch["downsample"].split("+"))
        for s in range(1, 6):
            cout = self.widths[s][WIDTHS.index(ch[f"s{s}_width"])]
            for b in range(1, ch[f"s{s}_depth"] + 1):
                stride = 2 if b == 1 and f"s{s}" in down else 1
                key = f"s{s}b{b}"
                x = self.blocks[key].forward_child(x, cout, stride, ch[f"{key}_expand"], ch[f"{key}_kernel"],
                                                   ch[f"{key}_sparsity"], ch[f"{key}_conn"])
        return self._head_child(x, ch["head_sparsity"], ch["head_conn"])

    def stage_mixes(self, p: Mapping[str, Tensor]) -> dict[str, Mix]:
        """The :class:`Mix` of every block for the probabilities ``p`` (see :meth:`probs`)."""
        down = set(self.downsample.split("+"))
        mixes, p_in = {}, torch.ones(1).to(p["head_sparsity"])
        for s in range(1, 6):
            for b in range(1, STAGE_MAX_DEPTH[s - 1] + 1):
                key = f"s{s}b{b}"
                mixes[key] = Mix(p_in, p[f"s{s}_width"], p[f"{key}_expand"], p[f"{key}_kernel"],
                                 p[f"{key}_sparsity"], 2 if b == 1 and f"s{s}" in down else 1, p[f"{key}_conn"])
                p_in = p[f"s{s}_width"]
        return mixes

    def head_weight_mixed(self, p: Mapping[str, Tensor]) -> Tensor:
        """The head's one mixed weight: input channels weighted by s5's width, soft-sparsified
        (magnitude, G2G and block masks mixed by ``head_conn``, as the blocks' 1x1 weights)."""
        used = soft_prefix(p["s5_width"], self.widths[5], self.w_head.shape[1])
        coef = used[None, :].expand(self.w_head.shape[0], -1)
        if self._head_buckets is None:
            with torch.no_grad():
                mixed = self.w_head * used[None, :, None, None]
                self._head_buckets = mask_codes(sparsity_buckets(mixed), block_sparsity_buckets(mixed), self.g2g_head)
        return masked_mix(self.w_head, coef, p["head_sparsity"], p["head_conn"], self._head_buckets)

    def _features_mixed(self, x: Tensor) -> Tensor:
        p = self.probs()
        mixes = self.stage_mixes(p)
        for s in range(1, 6):
            outs = []
            for b in range(1, STAGE_MAX_DEPTH[s - 1] + 1):
                x = self.blocks[f"s{s}b{b}"].forward_mixed(x, mixes[f"s{s}b{b}"], first=b == 1)
                outs.append(x)
            beta = p[f"s{s}_depth"]
            x = sum(beta[d] * o for d, o in enumerate(outs)) if len(outs) > 1 else outs[0]
        w = self.head_weight_mixed(p)
        h = F.conv2d(x, w)
        return F.relu6(_bn(self.bn_head, h, HEAD_CHANNELS), inplace=True)

    # ---- extraction
    @torch.no_grad()
    def extract(self, arch: Arch, calibration: Iterable[Tensor] | None = None) -> nn.Module:
        """``space.build(arch)`` carrying this supernet's weights (slices, masks, BN statistics);
        with ``calibration`` (input batches), BatchNorm statistics are recomputed on them. G2G convs
        keep the mask they build themselves, the one sampling mode runs."""
        arch = self.space.validate(arch, self.task)
        model = self.space.build(arch, self.task)
        ch = arch.choices
        _copy_conv(model.stem[0], self.stem[0].weight)
        _copy_bn(model.stem[1], self.stem[1], STEM)
        standalone = iter(model.blocks)
        cin = STEM
        for s in range(1, 6):
            cout = self.widths[s][WIDTHS.index(ch[f"s{s}_width"])]
            for b in range(1, ch[f"s{s}_depth"] + 1):
                sb, blk = self.blocks[f"s{s}b{b}"], next(standalone)
                expand, kernel = ch[f"s{s}b{b}_expand"], ch[f"s{s}b{b}_kernel"]
                hidden = cin * expand
                body, i = list(blk.body), 0
                if expand != 1:
                    _copy_conv(body[0], sb.w_exp[:hidden, :cin])
                    _copy_bn(body[1], sb.bn1, hidden)
                    i = 3
                _copy_conv(body[i], centre(sb.w_dw[:hidden], kernel))
                _copy_bn(body[i + 1], sb.bn2, hidden)
                _copy_conv(body[i + 3], sb.w_proj[:cout, :hidden])
                _copy_bn(body[i + 4], sb.bn3, cout)
                cin = cout
        _copy_conv(model.head[0], self.w_head[:, :cin])
        _copy_bn(model.head[1], self.bn_head, HEAD_CHANNELS)
        model.classifier.load_state_dict(self.classifier.state_dict())
        if calibration is not None:
            recalibrate_bn(model, calibration)
        return model.eval()


def _cached_g2g(cache: dict[tuple, Tensor], layer: str, w: Tensor, sparsity: float, grouping: str,
                seed: int) -> Tensor:
    """The standalone child's G2G mask for the slice ``w`` (out, in, 1, 1) of ``layer``, kept in
    ``cache`` (emptied by ``refresh_masks``, which bounds its size; a rebuild takes ~2 ms)."""
    key = ("g2g", layer, tuple(w.shape), sparsity, w.device, w.dtype)
    if key not in cache:
        cache[key] = g2g_child_mask(w.shape[1], w.shape[0], sparsity, grouping, seed).to(w)
    return cache[key]


def _copy_conv(dst: nn.Conv2d, w: Tensor) -> None:
    if dst.weight.shape != w.shape:
        raise RuntimeError(f"slice {tuple(w.shape)} does not fit {dst}")  # a bug, not user input
    dst.weight.copy_(w)
    if isinstance(dst, SparseConv2d):  # the child's mask: magnitude mask of the inherited slice
        dst.mask.fill_(1)
        dst.update_mask()


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, c: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[:c])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


def entangled_supernet(space: SearchSpace, task: Task, **kwargs) -> nn.Module:
    """The weight-entangled supernet of ``space`` (kind ``entangled`` of :mod:`sparsenas.supernets.registry`)."""
    return get_supernet(space.name, "entangled", f"no weight-entangled supernet for space '{space.name}'")(
        space, task, **kwargs)
