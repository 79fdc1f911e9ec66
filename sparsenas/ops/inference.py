"""Convert a masked training model into an inference model with one real kernel per sparse layer.

``choose(spec) -> impl`` is the single decision point: the default times the candidates for that
exact layer on this machine (:func:`measured_choice`); a hardware profile passes its own.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Callable

import torch
from torch import Tensor, nn

from ..timing import Timing, time_interleaved
from .kernels import KERNELS, DenseConv2dKernel, _MatmulKernel, is_pointwise, kernel_impl
from .masks import magnitude_mask
from .plain import grouped_pointwise
from .sparse import SparseMixin
from .spec import LayerSpec, trace_named_layers

__all__ = ["Chooser", "kernel_inputs", "measure_kernels", "measured_choice", "to_inference", "kernel_choices"]

Chooser = Callable[[LayerSpec], str]

_CHOICE_CACHE: "OrderedDict[str, str]" = OrderedDict()
_CHOICE_CACHE_SIZE = 4096


def kernel_inputs(spec: LayerSpec, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random weight (Cout, Cin) magnitude-pruned to ``spec.sparsity`` and a matching input:
    (batch, Cin, H, W) for conv2d, (batch, Cin) for linear."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(spec.cout, spec.cin, generator=g)
    w *= magnitude_mask(w, min(spec.sparsity, 0.9999))
    shape = (spec.batch, spec.cin, *spec.in_hw) if spec.op == "conv2d" else (spec.batch, spec.cin)
    return w, torch.randn(*shape, generator=g)


def measure_kernels(
    spec: LayerSpec,
    impls: tuple[str, ...] | None = None,
    *,
    warmup: int = 5,
    repeats: int = 30,
    rounds: int = 3,
    threads: int | None = 1,
    seed: int = 0,
) -> dict[str, Timing]:
    """Time every implementation (default: all of :data:`KERNELS`) on ``spec``, interleaved,
    under ``inference_mode``. Only for sparse-capable specs (linear, 1x1 conv with groups=1)."""
    w, x = kernel_inputs(spec, seed)
    with torch.inference_mode():
        mods = {i: kernel_impl(i).build(spec, w) for i in (impls or tuple(KERNELS))}
        fns = {i: (lambda m=m: m(x)) for i, m in mods.items()}
        return time_interleaved(fns, warmup=warmup, repeats=repeats, threads=threads, rounds=rounds)


def measured_choice(spec: LayerSpec) -> str:
    """The implementation with the lowest median wall time for ``spec`` on this machine (1 thread,
    30 interleaved calls each); ``"dense"`` for layers CSR cannot run. Cached per ``spec.key()``
    for the process (LRU), so each distinct layer is timed once."""
    if not spec.sparse_capable:
        return "dense"
    key = spec.key()
    if key in _CHOICE_CACHE:
        _CHOICE_CACHE.move_to_end(key)
        return _CHOICE_CACHE[key]
    timings = measure_kernels(spec)
    best = min(timings, key=lambda i: timings[i].wall_ms)
    _CHOICE_CACHE[key] = best
    if len(_CHOICE_CACHE) > _CHOICE_CACHE_SIZE:
        _CHOICE_CACHE.popitem(last=False)
    return best


def to_inference(
    model: nn.Module, input_shape: tuple[int, ...], choose: Chooser | None = None, *, batch: int = 1
) -> nn.Module:
    """Deep copy of ``model`` in eval mode with every sparse layer replaced by a kernel module.

    Sparse linear and 1x1 convs (groups=1, no padding) get ``choose(spec)`` (default
    :func:`measured_choice`; ``"grouped"`` lowers a block-diagonal G2G layer to a grouped conv), with the spec traced at ``input_shape`` (no batch dim) and ``batch``;
    other sparse convs, and sparse layers the forward never reaches, get the dense kernel. Dense
    layers are left as they are. The model itself is not modified.
    """
    choose = measured_choice if choose is None else choose
    out = copy.deepcopy(model).eval()
    specs: dict[str, LayerSpec] = {}
    for name, spec in trace_named_layers(out, input_shape, batch):
        specs.setdefault(name, spec)  # a layer called twice keeps its first shape
    for name, module in list(out.named_modules()):
        if not isinstance(module, SparseMixin):
            continue
        spec = specs.get(name)
        csr_ok = isinstance(module, nn.Linear) or is_pointwise(module)
        impl = choose(spec) if spec is not None and csr_ok and spec.sparse_capable else "dense"
        kernel = grouped_pointwise(module) if impl == "grouped" else module.to_inference(impl)
        if name == "":
            return kernel.eval()
        out.set_submodule(name, kernel)
    return out.eval()


def kernel_choices(model: nn.Module) -> dict[str, str]:
    """``{module name: impl}`` for every kernel module of an inference model."""
    return {n: m.impl for n, m in model.named_modules() if isinstance(m, (_MatmulKernel, DenseConv2dKernel))}
