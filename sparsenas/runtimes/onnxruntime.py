"""ONNX Runtime, CPU execution provider: the runtime most users deploy ``model.onnx`` in.

What it has for a sparse network: nothing sparse. A masked conv is a dense ``Conv`` (sparse
initializers are densified when the session loads), so a layer costs the same at every sparsity:
the profile times each shape once and the table predicts no gain from zeros. What does buy time is
structure: a block-diagonal G2G 1x1 layer exported as a grouped ``Conv`` (``grouped``). What
sparsity does buy is bytes: ONNX sparse initializers (COO, int64 indices) are smaller than the dense
weight below 1/3 density.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..ops.plain import to_plain
from ..ops.spec import LayerSpec
from ..timing import Timing, time_interleaved
from . import RUNTIMES
from .base import GROUPED, NATIVE, Chooser, KernelSettings, Runner, Runtime, coo_bytes, subtract
from .onnx_graph import export_onnx, identity_graph, layer_graph


SESSION_COPIES = 3


def session(model: bytes | str, threads: int = 1) -> Any:
    """A CPU session running on the calling thread (``threads=1``: no pool, no spinning), so thread CPU
    time measures the inference and one core is all it takes."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def runner(sess: Any, shape: list[int], seed: int = 0) -> Runner:
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    feed = {name: x}
    return lambda: sess.run(None, feed)


@RUNTIMES.register("onnxruntime")
class OnnxRuntime(Runtime):
    name = "onnxruntime"
    description = "ONNX Runtime CPU provider running the exported model.onnx (the default)"
    extra = "onnx"
    artifact = "model.onnx"
    network_copies = 2  # a session now and then runs slower for its whole life (see time_kernels)
    sparsity_buys = ("bytes only: masked convs run as dense Conv at every sparsity; block-diagonal G2G layers "
                     "run as grouped Conv")

    @classmethod
    def version(cls) -> str:
        try:
            import onnx  # noqa: F401  (the graphs are built with it)
            import onnxruntime
        except ImportError as e:
            raise cls.missing(e.name or "onnxruntime") from None
        return str(onnxruntime.__version__)

    def impls(self, spec: LayerSpec) -> tuple[str, ...]:
        return (NATIVE, GROUPED) if spec.blocks else (NATIVE,)

    def timing_spec(self, spec: LayerSpec) -> LayerSpec:
        return dataclasses.replace(spec, sparsity=0.0)  # zeros in a dense Conv cost the same

    def time_kernels(self, spec: LayerSpec, impls: tuple[str, ...], settings: KernelSettings) -> dict[str, Timing]:
        """Each implementation as a one-layer session, timed interleaved with an empty session on the
        same input; the empty call's cost (feeding, output allocation) is subtracted, and the
        profile's calibration adds back what a layer costs in a whole network.

        Every session is built ``SESSION_COPIES`` times and the fastest copy kept: now and then one
        session of the very same graph runs a few microseconds slower for its whole life (seen here:
        1 in ~15 one-layer sessions at +2-3 us on 2-6 us kernels), which a percentile over its
        calls cannot remove."""
        shape = [spec.batch, spec.cin, *spec.in_hw] if spec.op == "conv2d" else [spec.batch, spec.cin]
        graphs = {i: layer_graph(spec, grouped=i == GROUPED) for i in impls}
        graphs["_empty"] = identity_graph(spec)
        fns = {f"{name}#{c}": runner(session(g), shape) for name, g in graphs.items() for c in range(SESSION_COPIES)}
        t = time_interleaved(fns, warmup=settings.warmup, repeats=settings.repeats, rounds=settings.rounds,
                             threads=settings.threads)
        best = {name: min((t[f"{name}#{c}"] for c in range(SESSION_COPIES)), key=lambda x: x.cpu_p10_ms)
                for name in graphs}
        return {i: subtract(best[i], best["_empty"]) for i in impls}

    def onnx(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser, dynamic_batch: bool = True,
             exporter: str = "legacy") -> bytes:
        return export_onnx(to_plain(model, input_shape, choose), input_shape, exporter, dynamic_batch)

    def prepare(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser) -> Runner:
        return runner(session(self.onnx(model, input_shape, choose, dynamic_batch=False)), [1, *input_shape])

    def prepare_copies(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser) -> list[Runner]:
        graph = self.onnx(model, input_shape, choose, dynamic_batch=False)  # export once, load twice
        return [runner(session(graph), [1, *input_shape]) for _ in range(self.network_copies)]

    def save(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser, path: Path) -> Path:
        Path(path).write_bytes(self.onnx(model, input_shape, choose))
        return Path(path)

    def weight_bytes(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser) -> dict[str, int]:
        """Read off the exported graph's initializers (BN folded, as deployed): each stored densely or
        as an ONNX sparse initializer, whichever is smaller."""
        import onnx
        from onnx import numpy_helper

        graph = onnx.load_from_string(self.onnx(model, input_shape, choose)).graph
        dense = sparse = 0
        for init in graph.initializer:
            t = torch.from_numpy(numpy_helper.to_array(init).copy())
            b = t.numel() * t.element_size()
            dense += b
            sparse += min(b, coo_bytes(t)) if t.dim() > 1 else b
        return {"bytes": sparse, "dense_bytes": dense}


def run_file(path: str | Path, x: torch.Tensor) -> np.ndarray:
    """Outputs of an ONNX file on ``x`` (a check that an artifact runs and matches)."""
    sess = session(str(path))
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
