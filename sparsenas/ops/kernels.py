"""Inference kernels: a frozen (masked) weight held in one format, run as a matrix product.

A linear layer and a 1x1 convolution are the same product ``Y(Cout x cols) = W(Cout x Cin) @
X(Cin x cols)``: for linear, cols are the rows of the input; for a 1x1 conv on NCHW input, cols are
N*H*W (at batch 1 ``X`` is a free view of the input, and torch.mm beats F.conv2d there). Each
implementation (dense, torch CSR via MKL, scipy CSR) only supplies ``matmul``; the layout classes
do the reshapes. :data:`KERNELS` is the registry, one entry per implementation.

CSR only applies to 1x1 convs with groups=1 (and linear): a kxk or grouped/depthwise conv is not one
matrix product without an im2col copy that costs more than sparsity saves, so such sparse convs run
densely with the masked weight (:class:`DenseConv2dKernel`).
"""
from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SparseNASError, UnknownName
from .spec import LayerSpec

__all__ = [
    "DenseLinearKernel", "CsrLinearKernel", "ScipyCsrLinearKernel",
    "DenseConv1x1Kernel", "CsrConv1x1Kernel", "ScipyCsrConv1x1Kernel", "DenseConv2dKernel",
    "KernelImpl", "KERNELS", "kernel_impl", "make_kernel", "frozen_weight", "is_pointwise",
]


def frozen_weight(module: nn.Module) -> Tensor:
    """The weight a module runs with (masked for sparse modules), detached and copied."""
    masked = getattr(module, "masked_weight", None)
    with torch.no_grad():
        w = masked() if callable(masked) else module.weight
    return w.detach().clone()


def is_pointwise(module: nn.Module) -> bool:
    """True for a Conv2d that is one matrix product: 1x1, groups=1, no padding, square stride."""
    return (
        isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1) and module.groups == 1
        and module.padding in ((0, 0), 0) and module.stride[0] == module.stride[1]
    )


class _MatmulKernel(nn.Module, ABC):
    """Linear layout: x (..., Cin) -> (..., Cout). Subclasses implement ``matmul``."""

    impl: ClassVar[str]
    op: ClassVar[str] = "linear"

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        w = weight.detach().reshape(weight.shape[0], -1).contiguous()  # (Cout, Cin); 1x1 conv too
        self.out_features, self.in_features = w.shape
        self.nnz = int(torch.count_nonzero(w))
        # Stored as a column (Cout, 1) so it broadcasts onto Y(Cout x cols) without a per-call view.
        self.register_buffer("bias", None if bias is None else bias.detach().reshape(-1, 1).clone())
        self._set_weight(w)

    @abstractmethod
    def _set_weight(self, w: Tensor) -> None:
        """Store the (Cout, Cin) weight in this kernel's own format."""

    @abstractmethod
    def matmul(self, x: Tensor) -> Tensor:
        """``X (Cin x cols) -> W @ X (Cout x cols)``, a new tensor."""

    def _product(self, x2: Tensor) -> Tensor:
        y = self.matmul(x2)
        bias = self._buffers["bias"]  # direct: Module.__getattr__ costs ~1 µs, a lot for 10 µs layers
        if bias is not None:
            y += bias
        return y

    def forward(self, x: Tensor) -> Tensor:
        y = self._product(x.reshape(-1, self.in_features).t())
        return y.t().reshape(*x.shape[:-1], self.out_features)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnz / (self.out_features * self.in_features)

    def layer_spec(self, x: Tensor) -> LayerSpec:
        return LayerSpec("linear", self.in_features, self.out_features, sparsity=self.sparsity,
                         batch=x.numel() // self.in_features)

    def extra_repr(self) -> str:
        return (f"impl={self.impl}, {self.op} {self.in_features}->{self.out_features}, "
                f"nnz={self.nnz}/{self.out_features * self.in_features}, bias={self.bias is not None}")


class _Conv1x1Layout:
    """1x1-conv layout: x (N, Cin, H, W) -> (N, Cout, H', W'), computed as W @ X(Cin x N*H'*W')."""

    op: ClassVar[str] = "conv1x1"
    in_features: int
    out_features: int

    def __init__(self, weight: Tensor, bias: Tensor | None = None, stride: int = 1) -> None:
        super().__init__(weight, bias)  # type: ignore[call-arg]
        self.stride = int(stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:  # a strided 1x1 conv reads every stride-th pixel
            x = x[:, :, :: self.stride, :: self.stride]
        n, c, h, w = x.shape
        if n == 1:  # a free view: X(Cin x HW), and Y(Cout x HW) is already NCHW
            return self._product(x.reshape(c, h * w)).view(1, self.out_features, h, w)  # type: ignore[attr-defined]
        y = self._product(x.transpose(0, 1).reshape(c, n * h * w))  # type: ignore[attr-defined]
        return y.view(self.out_features, n, h, w).transpose(0, 1).contiguous()

    def layer_spec(self, x: Tensor) -> LayerSpec:
        return LayerSpec("conv2d", self.in_features, self.out_features, kernel=1, stride=self.stride,
                         in_hw=tuple(x.shape[-2:]), sparsity=self.sparsity, batch=x.shape[0])  # type: ignore[attr-defined]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", stride={self.stride}"  # type: ignore[misc]


# ---------------------------------------------------------------- dense
class DenseLinearKernel(_MatmulKernel):
    """Dense matmul with the masked weight (zeros stored)."""

    impl = "dense"
    weight: Tensor

    def _set_weight(self, w: Tensor) -> None:
        self.register_buffer("weight", w)

    def matmul(self, x: Tensor) -> Tensor:
        return torch.mm(self._buffers["weight"], x)

    def forward(self, x: Tensor) -> Tensor:
        bias = self._buffers["bias"]
        return F.linear(x, self._buffers["weight"], None if bias is None else bias[:, 0])


class DenseConv1x1Kernel(_Conv1x1Layout, DenseLinearKernel):
    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] == 1:
            return super().forward(x)
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        n, c, h, w = x.shape  # batched: one broadcast matmul, no transposes
        y = torch.matmul(self._buffers["weight"], x.reshape(n, c, h * w))
        bias = self._buffers["bias"]
        if bias is not None:
            y += bias
        return y.view(n, self.out_features, h, w)


# ---------------------------------------------------------------- CSR (shared storage)
class _CsrStorage(_MatmulKernel):
    """Keeps the CSR arrays as buffers (state_dict, ``.to``) and the native matrix as a cache,
    rebuilt after a copy or ``.to`` (torch CSR tensors cannot be deep-copied)."""

    crow_indices: Tensor
    col_indices: Tensor
    values: Tensor

    def _set_weight(self, w: Tensor) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            csr = w.to_sparse_csr()
        self.register_buffer("crow_indices", csr.crow_indices().clone())
        self.register_buffer("col_indices", csr.col_indices().clone())
        self.register_buffer("values", csr.values().clone())
        self._native: Any = None

    @abstractmethod
    def _build(self) -> Any:
        """The library's own CSR object, built lazily from the stored buffers."""

    def native(self) -> Any:
        if self._native is None:
            self._native = self._build()
        return self._native

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_native"] = None
        return state

    def _apply(self, fn: Any, recurse: bool = True) -> nn.Module:
        out = super()._apply(fn, recurse)
        self._native = None
        return out


class CsrLinearKernel(_CsrStorage):
    """torch sparse CSR @ dense (MKL). Always runs with 1 thread: MKL sparse is 10-100x slower
    with 2 threads (docs/measurements.md), and the choice of this kernel was timed with 1 thread."""

    impl = "torch_csr"

    def _build(self) -> Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(self.crow_indices, self.col_indices, self.values,
                                           (self.out_features, self.in_features), check_invariants=False)

    def matmul(self, x: Tensor) -> Tensor:
        threads = torch.get_num_threads()
        if threads == 1:
            return torch.mm(self.native(), x)
        torch.set_num_threads(1)
        try:
            return torch.mm(self.native(), x)
        finally:
            torch.set_num_threads(threads)


class CsrConv1x1Kernel(_Conv1x1Layout, CsrLinearKernel):
    """torch CSR @ dense for a 1x1 conv (NCHW in and out)."""


class ScipyCsrLinearKernel(_CsrStorage):
    """scipy.sparse CSR @ numpy (single-threaded C++); tensors cross as zero-copy numpy views."""

    impl = "scipy_csr"

    def _build(self) -> scipy.sparse.csr_matrix:
        return scipy.sparse.csr_matrix(
            (self.values.numpy(), self.col_indices.numpy(), self.crow_indices.numpy()),
            shape=(self.out_features, self.in_features),
        )

    def matmul(self, x: Tensor) -> Tensor:
        # scipy returns a fresh C-ordered (Cout x cols) array; from_numpy shares it.
        y = self.native() @ x.detach().numpy()
        return torch.from_numpy(np.ascontiguousarray(y))


class ScipyCsrConv1x1Kernel(_Conv1x1Layout, ScipyCsrLinearKernel):
    """scipy CSR @ numpy for a 1x1 conv (NCHW in and out)."""


# ---------------------------------------------------------------- general conv
class DenseConv2dKernel(nn.Conv2d):
    """A kxk or grouped conv with its mask frozen into the weight; runs F.conv2d (CSR does not
    apply, see the module docstring)."""

    impl = "dense"

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, weight: Tensor | None = None) -> "DenseConv2dKernel":
        k = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                bias=conv.bias is not None, padding_mode=conv.padding_mode,
                device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            k.weight.copy_(frozen_weight(conv) if weight is None else weight)
            if conv.bias is not None:
                k.bias.copy_(conv.bias)
        k.requires_grad_(False)
        k.nnz = int(torch.count_nonzero(k.weight))
        return k

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnz / self.weight.numel()

    def layer_spec(self, x: Tensor) -> LayerSpec:
        return LayerSpec("conv2d", self.in_channels, self.out_channels, kernel=self.kernel_size[0],
                         stride=self.stride[0], groups=self.groups, in_hw=tuple(x.shape[-2:]),
                         sparsity=self.sparsity, batch=x.shape[0])

    def extra_repr(self) -> str:
        return f"impl={self.impl}, " + super().extra_repr() + f", nnz={self.nnz}/{self.weight.numel()}"


# ---------------------------------------------------------------- registry
@dataclass(frozen=True)
class KernelImpl:
    """One implementation: its linear and 1x1-conv module classes."""

    name: str
    linear: type[_MatmulKernel]
    conv1x1: type[_MatmulKernel]

    def build(self, spec: LayerSpec, weight: Tensor, bias: Tensor | None = None) -> nn.Module:
        """Kernel for a sparse-capable spec from a weight of shape (Cout, Cin[, 1, 1])."""
        if spec.op == "linear":
            return self.linear(weight, bias)
        if not spec.sparse_capable:
            raise SparseNASError(f"kernel '{self.name}' cannot run {spec.key()}: only linear and 1x1 convs")
        return self.conv1x1(weight, bias, stride=spec.stride)  # type: ignore[call-arg]


KERNELS: dict[str, KernelImpl] = {
    k.name: k for k in (
        KernelImpl("dense", DenseLinearKernel, DenseConv1x1Kernel),
        KernelImpl("torch_csr", CsrLinearKernel, CsrConv1x1Kernel),
        KernelImpl("scipy_csr", ScipyCsrLinearKernel, ScipyCsrConv1x1Kernel),
    )
}


def kernel_impl(impl: str) -> KernelImpl:
    try:
        return KERNELS[impl]
    except KeyError:
        raise UnknownName(f"unknown kernel implementation '{impl}'; available: {', '.join(KERNELS)}") from None


def make_kernel(module: nn.Module, impl: str = "dense") -> nn.Module:
    """Inference module for a Linear/Conv2d (sparse or not) with its current mask frozen in."""
    entry = kernel_impl(impl)
    bias = module.bias.detach() if getattr(module, "bias", None) is not None else None
    if isinstance(module, nn.Linear):
        return entry.linear(frozen_weight(module), bias)
    if is_pointwise(module):
        return entry.conv1x1(frozen_weight(module), bias, stride=module.stride[0])  # type: ignore[call-arg]
    if isinstance(module, nn.Conv2d):
        if impl != "dense":
            raise SparseNASError(
                f"kernel '{impl}' needs a linear layer or a 1x1 conv with groups=1 and no padding; this conv has "
                f"kernel {tuple(module.kernel_size)}, groups {module.groups}, padding {module.padding}: use 'dense'"
            )
        return DenseConv2dKernel.from_conv(module)
    raise TypeError(f"make_kernel: expected nn.Linear or nn.Conv2d, got {type(module).__name__}")
