"""ONNX graphs for the runtimes that read ONNX (ONNX Runtime, OpenVINO): a whole network exported
from its plain-PyTorch form, and one layer built directly as a graph to time it as a kernel.

Whole networks go through the TorchScript-based exporter (``dynamo=False``, opset 18): it takes
0.2-0.5 s a network here against ~5 s for the dynamo exporter, which matters when a profile
calibrates on 80 networks, and ``nas export`` writes the very graph the profile measured.
"""
from __future__ import annotations

import io
import logging
import warnings

import numpy as np
import torch
from torch import nn

from ..ops.spec import LayerSpec

__all__ = ["OPSET", "EXPORTERS", "export_onnx", "layer_graph", "identity_graph"]

OPSET = 18
EXPORTERS = ("legacy", "dynamo")


def export_onnx(plain: nn.Module, input_shape: tuple[int, ...], exporter: str = "legacy",
                dynamic_batch: bool = True) -> bytes:
    """The ONNX file (bytes) of a plain network taking ``(N, *input_shape)`` (input ``input``, output ``logits``)."""
    x = torch.zeros(2 if dynamic_batch else 1, *input_shape)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter deprecation chatter; callers check the result numerically
        if exporter == "dynamo":
            logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
            dims = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
            prog = torch.onnx.export(plain, (x,), None, dynamo=True, input_names=["input"], output_names=["logits"],
                                     dynamic_shapes=dims, verbose=False, external_data=False)
            prog.save(buf)  # type: ignore[union-attr]
        else:
            axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
            torch.onnx.export(plain, (x,), buf, dynamo=False, input_names=["input"], output_names=["logits"],
                              dynamic_axes=axes, opset_version=OPSET)
    return buf.getvalue()


def _model(nodes: list, inputs: list, outputs: list, inits: list) -> bytes:
    from onnx import helper

    graph = helper.make_graph(nodes, "layer", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # what every supported runtime version reads
    return model.SerializeToString()


def _io(spec: LayerSpec) -> tuple[list[int], list[int]]:
    if spec.op == "linear":
        return [spec.batch, spec.cin], [spec.batch, spec.cout]
    return [spec.batch, spec.cin, *spec.in_hw], [spec.batch, spec.cout, *spec.out_hw]


def layer_graph(spec: LayerSpec, grouped: bool = False, seed: int = 0) -> bytes:
    """One layer as an ONNX model: ``Gemm`` (linear), ``Conv`` (with the spec's groups), or with
    ``grouped`` a block-diagonal 1x1 layer as ``Conv(group=blocks)`` between channel ``Gather``s when
    its channels are permuted. Weights are random: a dense kernel's speed does not depend on them."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    in_shape, out_shape = _io(spec)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    if spec.op == "linear":
        w = numpy_helper.from_array(rng.standard_normal((spec.cout, spec.cin)).astype(np.float32), "w")
        b = numpy_helper.from_array(rng.standard_normal(spec.cout).astype(np.float32), "b")
        return _model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], [x], [y], [w, b])
    groups = spec.blocks if grouped else spec.groups
    w = numpy_helper.from_array(
        rng.standard_normal((spec.cout, spec.cin // groups, spec.kernel, spec.kernel)).astype(np.float32), "w")
    pad = spec.kernel // 2
    nodes, inits, src, dst = [], [w], "x", "y"
    if grouped and spec.permuted:  # interleaved channels (i mod G) gathered into blocks, and back after
        perm_in = np.arange(spec.cin).reshape(-1, spec.blocks).T.reshape(-1).astype(np.int64)
        perm_out = np.arange(spec.cout).reshape(-1, spec.blocks).T.reshape(-1).astype(np.int64)
        inits += [numpy_helper.from_array(perm_in, "perm_in"),
                  numpy_helper.from_array(np.argsort(perm_out).astype(np.int64), "unperm_out")]
        nodes.append(helper.make_node("Gather", ["x", "perm_in"], ["xp"], axis=1))
        src, dst = "xp", "yp"
    nodes.append(helper.make_node("Conv", [src, "w"], [dst], kernel_shape=[spec.kernel] * 2, strides=[spec.stride] * 2,
                                  pads=[pad] * 4, group=groups))
    if dst != "y":
        nodes.append(helper.make_node("Gather", ["yp", "unperm_out"], ["y"], axis=1))
    return _model(nodes, [x], [y], inits)


def identity_graph(spec: LayerSpec) -> bytes:
    """The empty model on the layer's input: what one ``run`` call costs with no kernel in it."""
    from onnx import TensorProto, helper

    in_shape, _ = _io(spec)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, in_shape)
    return _model([helper.make_node("Identity", ["x"], ["y"])], [x], [y], [])
