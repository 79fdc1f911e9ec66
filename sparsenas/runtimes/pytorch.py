"""PyTorch eager, in process: the masked network with ``to_inference``'s kernel per sparse layer
(dense matmul, torch CSR or scipy CSR for sparse 1x1 convs and linear layers; a grouped conv for a
block-diagonal G2G layer). For users who deploy PyTorch; the artifact is the masked ``state_dict``
(``model.pt``), rebuilt with the recorded kernels by ``sparsenas.load``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..ops.inference import kernel_inputs, measured_choice, to_inference
from ..ops.kernels import KERNELS, kernel_impl
from ..ops.plain import GroupedPointwise
from ..ops.spec import LayerSpec
from ..timing import Timing, time_interleaved
from . import RUNTIMES
from .base import GROUPED, NATIVE, Chooser, KernelSettings, Runner, Runtime

CSR_INDEX_BYTES = {"torch_csr": 8, "scipy_csr": 4}  # int64 in torch's CSR, int32 in scipy's


def native_module(spec: LayerSpec) -> nn.Module:
    """The module that runs a layer natively: ``nn.Conv2d`` (padding k//2) or ``nn.Linear``. Its
    weights stay dense random: zeros do not change the speed of a dense kernel."""
    if spec.op == "linear":
        m: nn.Module = nn.Linear(spec.cin, spec.cout, bias=True)
    else:
        m = nn.Conv2d(spec.cin, spec.cout, spec.kernel, spec.stride, spec.kernel // 2, groups=spec.groups, bias=False)
    return m.eval().requires_grad_(False)


def grouped_module(spec: LayerSpec) -> nn.Module:
    """A block-diagonal 1x1 layer lowered to a grouped conv (with the input gather when permuted)."""
    g = spec.blocks
    def groups(n: int) -> torch.Tensor:  # interleaved (i mod G) when permuted, else contiguous blocks
        return torch.arange(n) % g if spec.permuted else torch.arange(n) * g // n

    in_group, out_group = groups(spec.cin), groups(spec.cout)
    w = torch.randn(spec.cout, spec.cin) * (out_group[:, None] == in_group[None, :])
    return GroupedPointwise(w, in_group, out_group, g, spec.stride).eval()


@RUNTIMES.register("torch")
class TorchRuntime(Runtime):
    name = "torch"
    description = "PyTorch eager in process, sparse 1x1/linear layers on dense, torch CSR or scipy CSR kernels"
    artifact = "model.pt"
    sparsity_buys = ("time on large layers (CSR beats dense from ~90% sparsity on wide 1x1 convs), bytes with CSR; "
                     "at small inputs per-module call overhead dominates")

    @classmethod
    def version(cls) -> str:
        return str(torch.__version__)

    def default_choice(self) -> Chooser:
        """Torch's own timing of each sparse layer (it has several real kernels to pick from)."""
        return measured_choice

    def sparse_choice(self) -> Chooser:
        """Torch has several sparse kernels, and which one beats dense depends on the layer: its own timing."""
        return measured_choice

    def impls(self, spec: LayerSpec) -> tuple[str, ...]:
        base = tuple(KERNELS) if spec.sparse_capable and spec.sparsity > 0 else (NATIVE,)
        return (*base, GROUPED) if spec.blocks else base

    def time_kernels(self, spec: LayerSpec, impls: tuple[str, ...], settings: KernelSettings) -> dict[str, Timing]:
        w, x = kernel_inputs(spec)
        mods: dict[str, nn.Module] = {}
        for impl in impls:
            if impl == NATIVE:
                mods[impl] = native_module(spec)
            elif impl == GROUPED:
                mods[impl] = grouped_module(spec)
            else:
                mods[impl] = kernel_impl(impl).build(spec, w)
        with torch.inference_mode():
            fns = {i: (lambda m=m: m(x)) for i, m in mods.items()}
            return time_interleaved(fns, warmup=settings.warmup, repeats=settings.repeats, rounds=settings.rounds,
                                    threads=settings.threads)

    def prepare(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser) -> Runner:
        inf = to_inference(model.cpu().eval(), input_shape, choose=_kernel_choice(choose))
        x = torch.randn(1, *input_shape)
        return lambda: inf(x)  # callers time it under inference_mode

    def save(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser, path: Path) -> Path:
        from ..ops.kernels import frozen_weight
        from ..ops.sparse import SparseMixin

        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for name, m in model.named_modules():
            if isinstance(m, SparseMixin):
                state[f"{name}.weight" if name else "weight"] = frozen_weight(m)
        torch.save(state, path)
        return Path(path)

    def weight_bytes(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser,
                     layers: list[tuple[str, LayerSpec]] | None = None) -> dict[str, int]:
        """Dense tensors, except sparse layers held as CSR where their kernel is CSR (values + column
        indices + row pointers) and grouped layers, which hold only their diagonal blocks."""
        def held(chooser: Chooser) -> int:
            inf = to_inference(model.cpu().eval(), input_shape, choose=_kernel_choice(chooser))
            total = 0
            for m in inf.modules():
                own = [t for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)] if t.is_floating_point()]
                impl = getattr(m, "impl", None)
                if impl in CSR_INDEX_BYTES:
                    idx = CSR_INDEX_BYTES[impl]
                    total += m.nnz * (4 + idx) + (m.out_features + 1) * idx
                    own = [t for t in own if t.dim() == 2 and t.shape[1] == 1]  # the bias column
                total += sum(t.numel() * t.element_size() for t in own)
            return total

        return {"bytes": held(choose), "dense_bytes": held(lambda spec: "dense")}


def _kernel_choice(choose: Chooser) -> Chooser:
    """A profile's choice in ``to_inference``'s terms: its native op is the dense kernel."""
    return lambda spec: "dense" if (c := choose(spec)) == NATIVE else c
