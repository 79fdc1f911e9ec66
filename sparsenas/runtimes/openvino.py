"""OpenVINO (CPU plugin, fp32) reading the same exported ONNX file: optional, ``sparsenas[openvino]``.

OpenVINO's sparse-weight decompression applies only to int8 fully-connected layers on CPUs with AMX,
never to convolutions, so in fp32 a masked layer is a dense one here too. With one inference thread,
one stream and the latency hint, a synchronous ``infer`` runs on the calling thread (thread CPU time
equals wall time within 1% here), so its profiles predict thread CPU time like the others.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..ops.spec import LayerSpec
from ..timing import Timing, time_interleaved
from . import RUNTIMES
from .base import GROUPED, NATIVE, Chooser, KernelSettings, Runner, Runtime, subtract
from .onnx_graph import identity_graph, layer_graph


def compile_onnx(model: bytes, threads: int = 1) -> Any:
    import openvino as ov

    core = ov.Core()
    net = core.read_model(model=model) if isinstance(model, bytes) else core.read_model(str(model))
    return core.compile_model(net, "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                           "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})


def runner(compiled: Any, shape: list[int], seed: int = 0) -> Runner:
    request = compiled.create_infer_request()
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return lambda: request.infer([x])


@RUNTIMES.register("openvino")
class OpenVinoRuntime(Runtime):
    name = "openvino"
    description = "OpenVINO CPU plugin (fp32) running the exported model.onnx (extra: sparsenas[openvino])"
    extra = "openvino"
    artifact = "model.onnx"
    sparsity_buys = "nothing in fp32: masked convs run dense; block-diagonal G2G layers run as grouped convs"

    @classmethod
    def version(cls) -> str:
        try:
            import onnx  # noqa: F401
            import openvino
        except ImportError as e:
            raise cls.missing(e.name or "openvino") from None
        return str(openvino.__version__)

    def impls(self, spec: LayerSpec) -> tuple[str, ...]:
        return (NATIVE, GROUPED) if spec.blocks else (NATIVE,)

    def timing_spec(self, spec: LayerSpec) -> LayerSpec:
        return dataclasses.replace(spec, sparsity=0.0)

    def time_kernels(self, spec: LayerSpec, impls: tuple[str, ...], settings: KernelSettings) -> dict[str, Timing]:
        shape = [spec.batch, spec.cin, *spec.in_hw] if spec.op == "conv2d" else [spec.batch, spec.cin]
        fns = {i: runner(compile_onnx(layer_graph(spec, grouped=i == GROUPED)), shape) for i in impls}
        fns["_empty"] = runner(compile_onnx(identity_graph(spec)), shape)
        t = time_interleaved(fns, warmup=settings.warmup, repeats=settings.repeats, rounds=settings.rounds,
                             threads=settings.threads)
        return {i: subtract(t[i], t["_empty"]) for i in impls}

    def _onnx(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser, dynamic_batch: bool) -> bytes:
        from . import get_runtime

        return get_runtime("onnxruntime", check=False).onnx(model, input_shape, choose, dynamic_batch)  # type: ignore[attr-defined]

    def prepare(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser) -> Runner:
        return runner(compile_onnx(self._onnx(model, input_shape, choose, False)), [1, *input_shape])

    def save(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser, path: Path) -> Path:
        Path(path).write_bytes(self._onnx(model, input_shape, choose, True))
        return Path(path)

    def weight_bytes(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser) -> dict[str, int]:
        """OpenVINO keeps fp32 weights dense: the exported graph's initializers, all dense."""
        from . import get_runtime

        b = get_runtime("onnxruntime", check=False).weight_bytes(model, input_shape, choose)
        return {"bytes": b["dense_bytes"], "dense_bytes": b["dense_bytes"]}
