"""ONNX Runtime, CPU execution provider: the runtime most users deploy ``model.onnx`` in.

What it has for a sparse network: nothing sparse. A masked conv is a dense ``Conv`` (sparse
initializers are densified when the session loads), so a layer costs the same at every sparsity:
the profile times each shape once and the table predicts no gain from zeros. What does buy time is
structure: a block-diagonal G2G 1x1 layer exported as a grouped ``Conv`` (``grouped``). What
sparsity does buy is bytes: ONNX sparse initializers (COO, int64 indices) are smaller than the dense
weight below 1/3 density.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import RUNTIMES
from .base import Chooser, Runner, coo_bytes
from .onnx_file import OnnxFileRuntime


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


@RUNTIMES.register("onnxruntime")
class OnnxRuntime(OnnxFileRuntime):
    name = "onnxruntime"
    description = "ONNX Runtime CPU provider running the exported model.onnx (the default)"
    extra = "onnx"
    package = "onnxruntime"
    sparsity_buys = ("bytes only: masked convs run as dense Conv at every sparsity; block-diagonal G2G layers "
                     "run as grouped Conv")


    @classmethod
    def load(cls, graph: bytes) -> Any:
        return session(graph)

    @classmethod
    def run_on(cls, loaded: Any, x: np.ndarray) -> Runner:
        feed = {loaded.get_inputs()[0].name: x}
        return lambda: loaded.run(None, feed)

    def weight_bytes(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser) -> dict[str, int]:
        """The initializers of the exported graph, each stored densely or as an ONNX sparse initializer
        (COO), whichever is smaller. Counted on the plain network the way the exporter writes it
        (BatchNorm folded into the preceding conv: a bias per output channel) rather than by
        exporting, which would cost ~0.2 s a trial; on random sparse_mbv2 networks this count is
        0.5-2% above the exported file's initializers (the exporter drops a few biases it folds)."""
        from ..ops.plain import GroupedPointwise, to_plain

        plain = to_plain(model, input_shape, choose)
        dense = sparse = 0
        for m in plain.modules():
            tensors: list[torch.Tensor] = []
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                tensors.append(m.weight.detach())
                bias = m.weight.shape[0] * 4  # its own bias, or the folded BatchNorm's
                dense, sparse = dense + bias, sparse + bias
            elif isinstance(m, GroupedPointwise):  # its channel permutations are int64 initializers
                tensors += [t for t in (m.perm_in, m.unperm_out) if t is not None]
            for t in tensors:
                b = t.numel() * t.element_size()
                dense += b
                sparse += min(b, coo_bytes(t)) if t.dim() > 1 else b
        return {"bytes": sparse, "dense_bytes": dense}


def run_file(path: str | Path, x: torch.Tensor) -> np.ndarray:
    """Outputs of an ONNX file on ``x`` (a check that an artifact runs and matches)."""
    sess = session(str(path))
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


__all__ = ["OnnxRuntime", "run_file", "session"]
