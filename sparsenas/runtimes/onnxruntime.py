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
from ..errors import SparseNASError
from ..ops.kernels import frozen_weight
from ..ops.plain import NOT_BLOCK_DIAGONAL, GroupedPointwise, no_plain_equivalent
from ..ops.spec import LayerSpec, block_groups, trace_named_layers
from ..ops.sparse import SparseMixin
from .base import GROUPED, Chooser, Runner, coo_bytes
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

    def weight_bytes(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser,
                     layers: list[tuple[str, LayerSpec]] | None = None) -> dict[str, int]:
        """The initializers of the exported graph, each stored densely or as an ONNX sparse initializer
        (COO), whichever is smaller. Counted on the network's own tensors the way the exporter writes
        them (:func:`sparsenas.ops.plain.to_plain`'s layers, BatchNorm folded into the preceding conv:
        a bias per output channel) rather than by exporting (~0.2 s a trial) or converting a copy
        (~23 ms); on random sparse_mbv2 networks this count is 0.5-2% above the exported file's
        initializers (the exporter drops a few biases it folds)."""

        dense = sparse = 0

        def add(t: torch.Tensor, nnz: int | None = None, numel: int | None = None) -> None:
            nonlocal dense, sparse
            b = (t.numel() if numel is None else numel) * t.element_size()
            dense, sparse = dense + b, sparse + min(b, coo_bytes(t, nnz=nnz))

        def bias(rows: int) -> None:  # a layer's own bias, or the folded BatchNorm's: 4 bytes per output
            nonlocal dense, sparse
            dense, sparse = dense + rows * 4, sparse + rows * 4

        def index(n: int) -> None:  # an int64 channel permutation, stored densely
            nonlocal dense, sparse
            dense, sparse = dense + n * 8, sparse + n * 8

        grouped = _grouped_layers(model, input_shape, choose, layers)
        inside: list[str] = []  # sparse layers' submodules: the plain layer replacing them has none
        for name, m in model.named_modules():
            if any(name.startswith(p) for p in inside):
                continue
            if isinstance(m, SparseMixin):
                inside.append(f"{name}." if name else "")
                w = frozen_weight(m)
                if name in grouped:  # GroupedPointwise: the diagonal blocks, two permutations when not identity
                    groups = grouped[name]
                    nnz = _block_diagonal_nonzeros(w, m.in_group, m.out_group)
                    add(w, nnz, w.numel() // groups)
                    bias(w.shape[0])
                    index(w.shape[1] if bool((torch.diff(m.in_group) < 0).any()) else 0)
                    index(w.shape[0] if bool((torch.diff(m.out_group) < 0).any()) else 0)
                elif isinstance(m, (nn.Conv2d, nn.Linear)):
                    add(w)
                    bias(w.shape[0])
                else:
                    raise no_plain_equivalent(name, m)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                add(m.weight.detach())
                bias(m.weight.shape[0])
            elif isinstance(m, GroupedPointwise):  # an already plain network
                for t in (m.perm_in, m.unperm_out):
                    if t is not None:
                        index(t.numel())
        return {"bytes": sparse, "dense_bytes": dense}


def _grouped_layers(model: nn.Module, input_shape: tuple[int, ...], choose: Chooser,
                    layers: list[tuple[str, LayerSpec]] | None = None) -> dict[str, int]:
    """``{name: groups}`` of the block-diagonal G2G layers ``choose`` runs as a grouped conv (as
    :func:`sparsenas.ops.plain.to_plain` decides it, on each layer's first call); traced (unless
    ``layers`` is the trace) only when the network has such a layer."""
    if not any(isinstance(m, SparseMixin) and block_groups(m) for m in model.modules()):
        return {}
    specs: dict[str, LayerSpec] = {}
    for name, spec in layers if layers is not None else trace_named_layers(model, input_shape):
        specs.setdefault(name, spec)
    mods = dict(model.named_modules())
    return {name: spec.blocks for name, spec in specs.items()
            if spec.blocks and isinstance(mods[name], SparseMixin) and choose(spec) == GROUPED}


def _block_diagonal_nonzeros(w: torch.Tensor, in_group: torch.Tensor, out_group: torch.Tensor) -> int:
    """Non-zeros of a 1x1 weight that has none between groups (what GroupedPointwise refuses otherwise)."""
    off_block = w.reshape(w.shape[0], w.shape[1]) * (out_group[:, None] != in_group[None, :])
    if torch.count_nonzero(off_block):
        raise SparseNASError(NOT_BLOCK_DIAGONAL)
    return int(torch.count_nonzero(w))


def run_file(path: str | Path, x: torch.Tensor) -> np.ndarray:
    """Outputs of an ONNX file on ``x`` (a check that an artifact runs and matches)."""
    sess = session(str(path))
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


__all__ = ["OnnxRuntime", "run_file", "session"]
