"""OpenVINO (CPU plugin, fp32) reading the same exported ONNX file: optional, ``sparsenas[openvino]``.

OpenVINO's sparse-weight decompression applies only to int8 fully-connected layers on CPUs with AMX,
never to convolutions, so in fp32 a masked layer is a dense one here too. With one inference thread,
one stream and the latency hint, a synchronous ``infer`` runs on the calling thread (thread CPU time
equals wall time within 1% here), so its profiles predict thread CPU time like the others.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from . import RUNTIMES, get_runtime
from ..ops.spec import LayerSpec
from .base import Chooser, Runner
from .onnx_file import OnnxFileRuntime


@RUNTIMES.register("openvino")
class OpenVinoRuntime(OnnxFileRuntime):
    name = "openvino"
    description = "OpenVINO CPU plugin (fp32) running the exported model.onnx (extra: sparsenas[openvino])"
    extra = "openvino"
    package = "openvino"
    sparsity_buys = "nothing in fp32: masked convs run dense; block-diagonal G2G layers run as grouped convs"


    @classmethod
    def load(cls, graph: bytes) -> Any:
        import openvino as ov

        core = ov.Core()
        return core.compile_model(core.read_model(model=graph), "CPU", {
            "INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32"})

    @classmethod
    def run_on(cls, loaded: Any, x: np.ndarray) -> Runner:
        request = loaded.create_infer_request()
        return lambda: request.infer([x])

    def weight_bytes(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser,
                     layers: list[tuple[str, LayerSpec]] | None = None) -> dict[str, int]:
        """OpenVINO keeps fp32 weights dense: the exported graph's initializers, all dense."""
        b = get_runtime("onnxruntime", check=False).weight_bytes(model, input_shape, choose, layers)
        return {"bytes": b["dense_bytes"], "dense_bytes": b["dense_bytes"]}
