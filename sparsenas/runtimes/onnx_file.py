"""What every runtime that reads the exported ONNX file shares (ONNX Runtime, OpenVINO).

Neither has a sparse convolution on x86 CPUs, so a masked layer is its dense op at every sparsity:
each shape is timed once (``timing_spec``), and the only alternative kernel is the structural one,
a block-diagonal layer as a grouped ``Conv`` (``grouped``). A subclass says how to load a graph and
run it (:meth:`OnnxFileRuntime.load`).
"""
from __future__ import annotations

import dataclasses
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..ops.plain import to_plain
from ..ops.spec import LayerSpec
from ..timing import Timing, time_interleaved
from .base import GROUPED, NATIVE, Chooser, KernelSettings, Runner, Runtime, subtract
from .onnx_graph import export_onnx, identity_graph, layer_graph

__all__ = ["OnnxFileRuntime", "SESSION_COPIES"]

# Now and then one session of the very same graph runs a few microseconds slower for its whole life
# (seen here: 1 in ~15 one-layer sessions at +2-3 us on 2-6 us kernels), which a percentile over its
# calls cannot remove: kernels keep the fastest of 3 sessions, networks of ``network_copies``.
SESSION_COPIES = 3


class OnnxFileRuntime(Runtime):
    artifact = "model.onnx"
    network_copies = 2
    package: str  # the Python package that runs the graphs

    @classmethod
    def version(cls) -> str:
        import importlib

        try:
            importlib.import_module("onnx")  # the graphs are built with it
            module = importlib.import_module(cls.package)
        except ImportError as e:
            raise cls.missing(e.name or cls.package) from None
        return str(module.__version__)

    @classmethod
    @abstractmethod
    def load(cls, graph: bytes) -> Any:
        """The graph loaded for 1-thread, batch-1 inference on the calling thread."""

    @classmethod
    @abstractmethod
    def run_on(cls, loaded: Any, x: np.ndarray) -> Runner:
        """A zero-argument call running ``loaded`` on ``x``."""

    def runner(self, graph: bytes, shape: list[int], seed: int = 0) -> Runner:
        x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
        return self.run_on(self.load(graph), x)

    def impls(self, spec: LayerSpec) -> tuple[str, ...]:
        return (NATIVE, GROUPED) if spec.blocks else (NATIVE,)

    def timing_spec(self, spec: LayerSpec) -> LayerSpec:
        return dataclasses.replace(spec, sparsity=0.0)  # zeros in a dense Conv cost the same

    def time_kernels(self, spec: LayerSpec, impls: tuple[str, ...], settings: KernelSettings) -> dict[str, Timing]:
        """Each implementation as a one-layer graph, timed interleaved with an empty graph on the
        same input; the empty call's cost (feeding, output allocation) is subtracted, and the
        profile's calibration adds back what a layer costs in a whole network. The fastest of
        :data:`SESSION_COPIES` loaded copies of each graph is kept."""
        shape = [spec.batch, spec.cin, *spec.in_hw] if spec.op == "conv2d" else [spec.batch, spec.cin]
        graphs = {i: layer_graph(spec, grouped=i == GROUPED) for i in impls}
        graphs["_empty"] = identity_graph(spec)
        fns = {f"{name}#{c}": self.runner(g, shape) for name, g in graphs.items() for c in range(SESSION_COPIES)}
        t = time_interleaved(fns, warmup=settings.warmup, repeats=settings.repeats, rounds=settings.rounds,
                             threads=settings.threads)
        best = {name: min((t[f"{name}#{c}"] for c in range(SESSION_COPIES)), key=lambda x: x.cpu_p10_ms)
                for name in graphs}
        return {i: subtract(best[i], best["_empty"]) for i in impls}

    def onnx(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser, dynamic_batch: bool = True,
             exporter: str = "legacy") -> bytes:
        """The ONNX file of ``model`` with ``choose``'s lowering (what ``nas export`` writes)."""
        return export_onnx(to_plain(model, input_shape, choose), input_shape, exporter, dynamic_batch)

    def prepare(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser) -> Runner:
        return self.prepare_copies(model, input_shape, choose)[0]

    def prepare_copies(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser) -> list[Runner]:
        graph = self.onnx(model, input_shape, choose, dynamic_batch=False)  # export once, load each copy
        return [self.runner(graph, [1, *input_shape]) for _ in range(self.network_copies)]

    def save(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser, path: Path) -> Path:
        Path(path).write_bytes(self.onnx(model, input_shape, choose))
        return Path(path)
