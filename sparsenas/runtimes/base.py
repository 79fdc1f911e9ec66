"""The contract of an inference runtime: which kernels it really has, how to time one in context,
how to turn a network into its artifact and run it, and how many bytes its weights take.

A hardware profile belongs to one (machine, runtime) pair; the latency a search optimises is the
latency of the exported artifact in the runtime named by the profile. Each runtime is one module
of this package registered in :data:`RUNTIMES` (``@RUNTIMES.register("onnxruntime")``).
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..errors import SparseNASError
from ..ops.spec import LayerSpec
from ..timing import Timing

__all__ = ["Runtime", "RuntimeNotInstalled", "Runner", "NATIVE", "GROUPED", "Chooser", "KernelSettings", "subtract",
           "coo_bytes"]

NATIVE = "native"     # the layer as the runtime's own dense op (conv / gemm) with the masked weight
GROUPED = "grouped"   # a block-diagonal 1x1 layer as a grouped conv (plus channel gathers)
Chooser = Callable[[LayerSpec], str]
Runner = Callable[[], Any]   # one batch-1 inference of a prepared network on a fixed input


class RuntimeNotInstalled(SparseNASError):
    """The runtime's Python package is missing; the message names the extra that installs it."""


@dataclass(frozen=True)
class KernelSettings:
    warmup: int = 5
    repeats: int = 100
    rounds: int = 5
    threads: int = 1


class Runtime(ABC):
    """One inference runtime. Stateless apart from caches; one instance per process is enough."""

    name: ClassVar[str]
    description: ClassVar[str]
    extra: ClassVar[str | None] = None        # pip extra that installs it (None: always present)
    artifact: ClassVar[str]                   # file name ``nas export`` writes for it
    sparsity_buys: ClassVar[str]              # one line: what unstructured sparsity buys in this runtime
    metric: ClassVar[str] = "cpu_p10_ms"      # the timing statistic its profiles predict (see sparsenas.timing)
    network_copies: ClassVar[int] = 1         # sessions per network when timing (see prepare_copies)

    # ------------------------------------------------------------------ identity
    @classmethod
    @abstractmethod
    def version(cls) -> str:
        """The installed version; raises :class:`RuntimeNotInstalled` when missing."""

    @classmethod
    def require(cls) -> str:
        return cls.version()

    @classmethod
    def missing(cls, package: str) -> RuntimeNotInstalled:
        return RuntimeNotInstalled(
            f"runtime '{cls.name}' needs the Python package '{package}', which is not installed here. Install it "
            f"with: pip install 'sparsenas[{cls.extra}]' (or pick another runtime with --runtime; available: "
            "torch, onnxruntime, openvino, mnn)")

    def info(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version()}

    # ------------------------------------------------------------------ kernels
    @abstractmethod
    def impls(self, spec: LayerSpec) -> tuple[str, ...]:
        """The implementations this runtime really has for a layer (what the profile times and the
        table chooses among). A runtime without sparse kernels returns ``(NATIVE,)`` for a masked
        layer: its sparsity buys no time there."""

    def table_spec(self, spec: LayerSpec) -> LayerSpec:
        """The spec under which this runtime's profiles file a layer: a runtime with no kernel for
        zeros in blocks of output channels (``oc_block``) runs such a layer as any other at its
        sparsity, so its profiles need no separate entry for it."""
        return dataclasses.replace(spec, oc_block=0) if spec.oc_block else spec

    def timing_spec(self, spec: LayerSpec) -> LayerSpec:
        """The spec whose timing stands for ``spec``: a runtime that ignores zeros in weights times
        a layer once for every sparsity level."""
        return spec

    @abstractmethod
    def time_kernels(self, spec: LayerSpec, impls: tuple[str, ...], settings: KernelSettings) -> dict[str, Timing]:
        """Time each implementation of one layer, batch 1, interleaved."""

    # ------------------------------------------------------------------ networks
    @abstractmethod
    def prepare(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser) -> Runner:
        """Turn a (masked, eval-mode) network into this runtime's artifact with ``choose``'s kernel
        per layer, load it, and return a zero-argument callable running one batch-1 inference."""

    def prepare_copies(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser) -> list[Runner]:
        """``network_copies`` independently loaded copies of the artifact (their fastest is the
        network's time, see :func:`sparsenas.hwprofiles.measure.measure_networks`)."""
        return [self.prepare(model, input_shape, choose) for _ in range(self.network_copies)]

    @abstractmethod
    def save(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser, path: Path) -> Path:
        """Write the artifact (the file a user deploys) to ``path``."""

    @abstractmethod
    def weight_bytes(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser,
                     layers: list[tuple[str, LayerSpec]] | None = None) -> dict[str, int]:
        """``{"bytes": smallest encoding this runtime loads, "dense_bytes": all weights dense}``.
        ``layers``: the network's :func:`~sparsenas.ops.spec.trace_named_layers`, when the caller has
        traced it already (a runtime that needs the trace then skips its own)."""

    def default_choice(self) -> Chooser:
        """The kernel of each layer when no hardware profile chooses: the runtime's native op."""
        return lambda spec: "dense"

    def sparse_choice(self) -> Chooser:
        """Without a profile, the kernel that makes most of a layer's zeros: the last one :meth:`impls`
        lists (a block-diagonal layer as a grouped conv, MNN's sparse kernel)."""
        return lambda spec: self.impls(spec)[-1]

    def kernels_in(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser) -> dict[str, str]:
        """``{layer name: impl}`` as the artifact runs them, in the profile's terms (for records and
        the check that the exported network is the predicted one)."""
        from ..ops.spec import trace_named_layers

        out = {}
        for name, spec in trace_named_layers(model, input_shape):
            impls = self.impls(spec)
            pick = choose(spec) if impls != (NATIVE,) else NATIVE
            out[name] = NATIVE if pick == "dense" and "dense" not in impls else pick  # to_inference says "dense"
        return out


def subtract(t: Timing, base: Timing) -> Timing:
    """``t`` minus a base cost measured in the same run (e.g. an empty call's overhead), floored at 1 ns."""
    def d(a: float, b: float) -> float:
        return max(a - b, 1e-6)

    return Timing(wall_ms=d(t.wall_ms, base.wall_ms), cpu_ms=d(t.cpu_ms, base.cpu_ms), wall_iqr_ms=t.wall_iqr_ms,
                  cpu_iqr_ms=t.cpu_iqr_ms, repeats=t.repeats, threads=t.threads,
                  wall_p10_ms=d(t.wall_p10_ms, base.wall_p10_ms), cpu_p10_ms=d(t.cpu_p10_ms, base.cpu_p10_ms))


def coo_bytes(t: torch.Tensor, index_bytes: int = 8, nnz: int | None = None) -> int:
    """ONNX sparse-initializer (COO, linearised int64 indices) size of a tensor (holding ``nnz``
    non-zeros when given: counted already)."""
    nnz = int(torch.count_nonzero(t)) if nnz is None else nnz
    return nnz * (t.element_size() + index_bytes)
