"""LayerSpec: one kernel a network runs (its shapes, stride, sparsity) — the key of a latency table.

``trace_layers`` reads them off a real forward pass, so the specs are those of the network that
runs, in execution order.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SparseNASError

__all__ = ["LayerSpec", "OPS", "block_groups", "trace_layers", "trace_named_layers"]

OPS = frozenset({"conv2d", "linear"})


@dataclass(frozen=True)
class LayerSpec:
    """One conv2d or linear kernel.

    ``in_hw`` is the input (H, W) for conv2d and () for linear; ``batch`` is N for conv2d and the
    number of input rows (product of leading dims) for linear. ``sparsity`` is rounded to 4
    decimals so that specs of the same layout compare and hash equal.
    """

    op: str
    cin: int
    cout: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    in_hw: tuple[int, ...] = ()
    sparsity: float = 0.0
    batch: int = 1
    blocks: int = 0          # a block-diagonal 1x1 layer (G2G "block"): its number of diagonal blocks
    permuted: bool = False   # ... whose channels are grouped other than by index (a gather to lower it)
    oc_block: int = 0        # zeros in blocks of this many output channels (a block magnitude mask); 0: any pattern

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise SparseNASError(f"unknown layer op '{self.op}'; known: {', '.join(sorted(OPS))}")
        object.__setattr__(self, "in_hw", tuple(int(v) for v in self.in_hw))
        object.__setattr__(self, "sparsity", round(float(self.sparsity), 4) + 0.0)  # +0.0: no "-0"
        for name in ("cin", "cout", "kernel", "stride", "groups", "batch"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise SparseNASError(f"LayerSpec.{name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        object.__setattr__(self, "blocks", int(self.blocks))
        object.__setattr__(self, "permuted", bool(self.permuted))
        object.__setattr__(self, "oc_block", int(self.oc_block) if self.sparsity > 0 else 0)
        if self.blocks and (self.blocks < 2 or self.cin % self.blocks or self.cout % self.blocks or self.groups != 1
                            or self.kernel != 1):
            raise SparseNASError(f"LayerSpec: blocks={self.blocks} needs a 1x1 layer with groups=1 whose channels "
                                 f"({self.cin}, {self.cout}) it divides")
        if self.op == "conv2d" and len(self.in_hw) != 2:
            raise SparseNASError(f"LayerSpec for conv2d needs in_hw=(H, W), got {self.in_hw}")
        if self.cin % self.groups or self.cout % self.groups:
            raise SparseNASError(f"LayerSpec: groups={self.groups} must divide cin={self.cin} and cout={self.cout}")
        if not 0.0 <= self.sparsity <= 1.0:
            raise SparseNASError(f"LayerSpec.sparsity must be in [0, 1], got {self.sparsity}")

    def key(self) -> str:
        """Stable readable key, e.g. ``conv2d:c96-576:k1:s1:g1:in8x8:sp0.9:b1`` or
        ``linear:c1280-10:sp0:b1``; a block-diagonal layer ends in ``:bd4`` (``:bd4p`` when permuted),
        a layer with zeros in blocks of 4 output channels in ``:ob4``."""
        sp = f"sp{self.sparsity:g}:b{self.batch}"
        if self.blocks:
            sp += f":bd{self.blocks}{'p' if self.permuted else ''}"
        if self.oc_block:
            sp += f":ob{self.oc_block}"
        if self.op == "linear":
            return f"linear:c{self.cin}-{self.cout}:{sp}"
        hw = "x".join(map(str, self.in_hw))
        return f"{self.op}:c{self.cin}-{self.cout}:k{self.kernel}:s{self.stride}:g{self.groups}:in{hw}:{sp}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["in_hw"] = list(self.in_hw)
        if not self.oc_block:
            del d["oc_block"]  # profiles written before block masks hold no such field
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerSpec":
        known = {f.name for f in fields(cls)}
        if unknown := set(d) - known:
            raise SparseNASError(f"LayerSpec.from_dict: unknown fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{**d, "in_hw": tuple(d.get("in_hw", ()))})

    @property
    def sparse_capable(self) -> bool:
        """Whether a CSR kernel can run it: linear, or a 1x1 conv with groups=1."""
        return self.op == "linear" or (self.op == "conv2d" and self.kernel == 1 and self.groups == 1)

    @property
    def out_hw(self) -> tuple[int, ...]:
        """Output (H, W) assuming 'same' padding k//2 (the convention of the project's spaces)."""
        pad = self.kernel // 2
        return tuple((h + 2 * pad - self.kernel) // self.stride + 1 for h in self.in_hw)

    def flops(self) -> int:
        """Dense multiply-accumulates."""
        if self.op == "linear":
            return self.batch * self.cin * self.cout
        pixels = 1
        for v in self.out_hw:
            pixels *= v
        return self.batch * pixels * self.cout * (self.cin // self.groups) * self.kernel**2

    def effective_flops(self) -> float:
        """MACs that touch a non-zero weight: ``flops() * (1 - sparsity)``."""
        return self.flops() * (1.0 - self.sparsity)


def _weight_sparsity(module: nn.Module) -> float:
    masked = getattr(module, "masked_weight", None)
    if not callable(masked):
        return 0.0  # a dense module: its zeros (if any) are not exploited
    w = masked()
    return 1.0 - int(torch.count_nonzero(w)) / w.numel()


def _square(v: tuple[int, ...] | int, what: str, module: nn.Module) -> int:
    if isinstance(v, int):
        return v
    if len(set(v)) != 1:
        raise SparseNASError(f"LayerSpec needs a square {what}; {type(module).__name__} has {tuple(v)}")
    return int(v[0])


def block_groups(module: nn.Module) -> int:
    """Number of diagonal blocks of a block-diagonal G2G 1x1 conv (0 when the layer is not one):
    every ensemble talks only to itself, and the ensembles divide both channel counts evenly."""
    if getattr(module, "mask_kind", None) != "g2g" or getattr(module, "graph_kind", None) != "block":
        return 0
    if not isinstance(module, nn.Conv2d) or tuple(module.kernel_size) != (1, 1) or module.groups != 1:
        return 0
    g = int(module.ensembles)
    if g < 2 or module.in_channels % g or module.out_channels % g:
        return 0
    return g


def _permuted(module: nn.Module) -> bool:
    """Whether a block-diagonal layer's channels are grouped other than contiguously by index."""
    return any(bool((torch.diff(getattr(module, g)) < 0).any()) for g in ("in_group", "out_group"))


def _spec_of(module: nn.Module, x: Tensor) -> LayerSpec | None:
    own = getattr(module, "layer_spec", None)
    if callable(own):  # inference kernels describe themselves
        return own(x)
    if isinstance(module, nn.Conv2d):
        blocks = block_groups(module)
        return LayerSpec(
            "conv2d", module.in_channels, module.out_channels, kernel=_square(module.kernel_size, "kernel", module),
            stride=_square(module.stride, "stride", module), groups=module.groups, in_hw=tuple(x.shape[-2:]),
            sparsity=_weight_sparsity(module), batch=x.shape[0] if x.dim() == 4 else 1,
            blocks=blocks, permuted=blocks > 0 and _permuted(module), oc_block=getattr(module, "oc_block", 0),
        )
    if isinstance(module, nn.Linear):
        return LayerSpec("linear", module.in_features, module.out_features, sparsity=_weight_sparsity(module),
                         batch=x.numel() // module.in_features)
    return None


def trace_named_layers(
    model: nn.Module, input_shape: tuple[int, ...], batch: int = 1
) -> list[tuple[str, LayerSpec]]:
    """``(module name, spec)`` of every conv2d/linear kernel in one forward, in execution order.

    ``input_shape`` excludes the batch dimension. The forward runs under ``no_grad`` in eval mode
    on zeros; every module's training flag is restored afterwards. A module called twice appears
    twice.
    """
    found: list[tuple[str, LayerSpec]] = []
    names: dict[nn.Module, str] = {}
    modes: dict[nn.Module, bool] = {}

    def hook(module: nn.Module, args: tuple[Any, ...], _out: Any) -> None:
        spec = _spec_of(module, args[0])
        if spec is not None:
            found.append((names[module], spec))

    handles = []
    for n, m in model.named_modules():  # one walk: this runs twice a trial, on every trial
        names[m], modes[m] = n, m.training
        if isinstance(m, (nn.Conv2d, nn.Linear)) or callable(getattr(m, "layer_spec", None)):
            handles.append(m.register_forward_hook(hook))
    param = next(model.parameters(), None)
    buf = next(model.buffers(), None)
    ref = param if param is not None else buf
    x = torch.zeros(batch, *input_shape, dtype=ref.dtype if ref is not None and ref.is_floating_point()
                    else torch.float32, device=ref.device if ref is not None else "cpu")
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            if m.training != mode:
                m.training = mode
    return found


def trace_layers(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1) -> list[LayerSpec]:
    """Specs of every conv2d/linear kernel (incl. sparse and inference modules) in execution order."""
    return [spec for _, spec in trace_named_layers(model, input_shape, batch)]
