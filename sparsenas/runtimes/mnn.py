"""MNN (Alibaba's inference engine, CPU backend, fp32): optional, ``sparsenas[mnn]``.

The one runtime here whose sparse convolutions buy time on an x86 CPU: a 1x1 conv can run dense,
sparse with 1-channel blocks (``sparse1``) or, when its zeros come in blocks of 4 output channels
(:data:`~sparsenas.ops.masks.OC_BLOCK`), sparse with 4-channel blocks (``sparse4``). MNN's converter
would make a conv sparse above a fixed sparsity threshold for every layer alike; here the hardware
profile chooses per layer, and :func:`convert` writes that choice into ``model.mnn``: the ONNX graph
is converted with its weights kept aside (``--saveExternalData``), dumped as MNN's JSON, and each conv
the table made sparse gets MNN's sparse encoding (non-zero values and their indices) and its
``sparseParameter`` (block size, non-zero count), the form MNN's own ``--detectSparseSpeedUp`` writes;
the JSON is then turned back into ``model.mnn``. Weights travel as exact float32 values throughout.

MNN's Python ``mnnconvert`` script imports ``MNN.tools.utils.log``, which pip-installs a logging SDK
and posts conversion logs; it is never imported here: the converter is the C extension ``_tools``
that script wraps, and ``import MNN`` (the inference API) does not pull in ``MNN.tools``.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import SparseNASError
from ..ops.masks import OC_BLOCK, block_magnitude_mask, magnitude_mask
from ..ops.plain import to_plain
from ..ops.spec import LayerSpec, trace_named_layers
from ..timing import Timing, time_interleaved
from . import RUNTIMES
from .base import NATIVE, Chooser, KernelSettings, Runner, Runtime, subtract
from .onnx_graph import export_onnx

__all__ = ["MnnRuntime", "SPARSE1", "SPARSE4", "MIN_SPARSITY", "convert", "conv_kernels", "model_kernels", "run_mnn"]

SPARSE1 = "sparse1"   # MNN's sparse conv, blocks of 1 output channel (any zero pattern)
SPARSE4 = "sparse4"   # MNN's sparse conv, blocks of 4 output channels (zeros in such blocks)
# MNN runs a conv marked sparse on its sparse kernel only when at least this share of the weights is
# zero (SPARSITY_THRESHOLD in SparseConvolutionTiledExecutor.hpp); below it, the dense kernel runs.
MIN_SPARSITY = 0.3
SESSION_COPIES = 2
_BLOCK = {SPARSE1: 1, SPARSE4: OC_BLOCK}
_CONV_TYPES = ("Convolution", "ConvolutionDepthwise")


class ConversionError(SparseNASError):
    """MNN's converter failed or produced a graph other than the network's."""


@contextmanager
def _quiet_fds() -> Iterator[Path]:
    """Send what MNN's C++ code prints (to fds 1 and 2) to a file, whose path is yielded, so a
    conversion neither clutters a progress bar nor loses its log when it fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd, log = tempfile.mkstemp(prefix="sparsenas-mnn-", suffix=".log")
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield Path(log)
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)
        Path(log).unlink(missing_ok=True)


def _converter() -> Any:
    """MNN's converter as the C extension (never the ``mnnconvert`` script: see the module docstring)."""
    with _quiet_fds():
        import _tools  # type: ignore[import-not-found]  # noqa: PLC0415  (prints the CPU's features on import)
    return _tools


def _mnnconvert(*argv: str, expect: Path) -> None:
    tools = _converter()
    with _quiet_fds() as log:
        tools.mnnconvert(["mnnconvert", *argv, "--bizCode", "sparsenas"])
        text = log.read_text(errors="replace")
    if not expect.exists():
        raise ConversionError(f"MNN's converter wrote no {expect.name} ({' '.join(argv[:2])}): {text[-800:]}")


def conv_kernels(model: nn.Module, input_shape: tuple[int, ...], choose: Chooser,
                 runtime: "MnnRuntime | None" = None) -> list[tuple[LayerSpec, str]]:
    """Every conv/linear layer of ``model`` in execution order with the kernel MNN runs it on:
    ``choose``'s pick where the layer has a choice, else the native (dense) op."""
    return [(spec, pick) for _, spec, pick in _named_kernels(model, input_shape, choose, runtime or MnnRuntime())]


def _named_kernels(model: nn.Module, input_shape: tuple[int, ...], choose: Chooser,
                   rt: "MnnRuntime") -> list[tuple[str, LayerSpec, str]]:
    """``(layer name, spec, kernel)`` of :func:`conv_kernels`: a pick MNN has no kernel for (another
    runtime's ``grouped``: model.mnn holds that layer as the plain masked conv) is the dense op."""
    out = []
    for name, spec in trace_named_layers(model, input_shape):
        impls = rt.impls(spec)
        pick = choose(spec) if len(impls) > 1 else NATIVE
        out.append((name, spec, NATIVE if pick in ("dense", NATIVE) or pick not in impls else pick))
    return out


def _sparse_encoding(w: np.ndarray, cout: int, block: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """MNN's sparse float weight (``quanParameter``: non-zero values and flat indices) and its
    ``sparseParameter`` for blocks of ``block`` output channels (MNN counts a block with any
    non-zero as ``block`` non-zeros; channels past the last whole block count one by one)."""
    nz = np.flatnonzero(w)
    rows = w.reshape(cout, -1)
    full = cout // block * block
    blocks = int((rows[:full].reshape(full // block, block, -1) != 0).any(axis=1).sum()) if full else 0
    tail = int(np.count_nonzero(rows[full:]))
    quan = {"type": 0, "alpha": w[nz].tolist(), "index": nz.tolist(), "weightSize": int(w.size),
            "scaleStorage": "FP32"}
    args = [("NNZElement", blocks * block + tail), ("blockNumber", blocks + tail), ("sparseBlockKernel", 1),
            ("sparseBlockOC", block)]  # MNN looks these up by key: they must stay sorted by key
    sparse = {"method": "RANDOM" if block == 1 else "SIMD_OC", "args": [{"key": k, "i": int(v)} for k, v in args]}
    return quan, sparse


def convert(onnx: bytes, kernels: Sequence[tuple[LayerSpec, str]] | None = None) -> bytes:
    """``model.mnn`` (bytes) of an ONNX graph, each conv on its kernel: ``kernels`` lists every
    conv/linear layer of the graph in execution order with its pick (see :func:`conv_kernels`;
    None: all dense). Raises :class:`ConversionError` when the converted graph's convs are not those
    layers (then the picks could not be placed)."""
    net, blob = _converted(onnx)
    return _with_kernels(net, blob, kernels)


def _converted(onnx: bytes) -> tuple[dict[str, Any], np.ndarray]:
    """MNN's graph of ``onnx`` as its JSON (a dict) and the weights its convs keep aside (bytes)."""
    with tempfile.TemporaryDirectory(prefix="sparsenas-mnn-") as d:
        tmp = Path(d)
        (tmp / "in.onnx").write_bytes(onnx)
        _mnnconvert("-f", "ONNX", "--modelFile", str(tmp / "in.onnx"), "--MNNModel", str(tmp / "ext.mnn"),
                    "--saveExternalData", expect=tmp / "ext.mnn")
        _mnnconvert("-f", "MNN", "--modelFile", str(tmp / "ext.mnn"), "--JsonFile", str(tmp / "net.json"),
                    expect=tmp / "net.json")
        weights = tmp / "ext.mnn.weight"
        blob = np.fromfile(weights, dtype=np.uint8) if weights.exists() else np.zeros(0, np.uint8)
        return json.loads((tmp / "net.json").read_text()), blob


def _with_kernels(net: dict[str, Any], blob: np.ndarray, kernels: Sequence[tuple[LayerSpec, str]] | None) -> bytes:
    """``model.mnn`` from :func:`_converted`'s graph (left as it is) with each conv's weights inlined
    on its kernel."""
    net = copy.deepcopy(net)
    convs = [op for op in net["oplists"] if op.get("type") in _CONV_TYPES and op.get("main_type") == "Convolution2D"]
    for op, pick in zip(convs, _place(convs, kernels)):
        _inline(op, blob, pick)
    if any(isinstance(op.get("main"), dict) and "external" in op["main"] for op in net["oplists"]):
        raise ConversionError("MNN's converter kept weights of an operator other than a convolution aside; "
                              "this graph cannot be given per-layer kernels")
    with tempfile.TemporaryDirectory(prefix="sparsenas-mnn-") as d:
        tmp = Path(d)
        (tmp / "net.json").write_text(json.dumps(net))
        _mnnconvert("-f", "JSON", "--modelFile", str(tmp / "net.json"), "--MNNModel", str(tmp / "out.mnn"),
                    expect=tmp / "out.mnn")
        return (tmp / "out.mnn").read_bytes()


def _place(convs: list[dict[str, Any]], kernels: Sequence[tuple[LayerSpec, str]] | None) -> list[str]:
    """Each of MNN's convs' kernel: the network's layers matched one to one, in order, to MNN's
    convs (a grouped conv other than a depthwise one would be rewritten by MNN's converter into
    several ops, which is why graphs for MNN keep no G2G layer grouped: see :func:`~sparsenas.ops.plain.ungrouped`)."""
    if kernels is None:
        return [NATIVE] * len(convs)
    found = [(c["main"]["common"]["outputCount"], c["main"]["common"]["inputCount"], c["main"]["common"]["kernelX"],
              c["main"]["common"].get("group", 1)) for c in convs]
    for n, (spec, _) in enumerate(kernels):
        if found[n:n + 1] != [(spec.cout, spec.cin, spec.kernel, spec.groups)]:
            raise ConversionError(
                f"MNN's graph does not match the network: layer {n} of {len(kernels)} (out {spec.cout}, in "
                f"{spec.cin}, kernel {spec.kernel}, groups {spec.groups}) is not MNN's convolution {n} of "
                f"{len(found)} {found[n:n + 1]}; per-layer kernels cannot be placed, no model.mnn was written")
    if len(found) != len(kernels):
        raise ConversionError(f"MNN's graph has {len(found)} convolutions, the network {len(kernels)} layers (extra: "
                              f"{found[len(kernels):len(kernels) + 3]}); per-layer kernels cannot be placed, no "
                              "model.mnn was written")
    return [pick for _, pick in kernels]


def _inline(op: dict[str, Any], blob: np.ndarray, pick: str) -> None:
    """Put a conv's weights (kept aside by the converter) back into the op, as exact float32, in
    the dense or sparse encoding ``pick`` names."""
    main = op["main"]
    if "external" not in main:
        raise ConversionError(f"MNN's converter kept the weights of '{op.get('name')}' inline, as rounded text")
    offset, wbytes, bbytes = (int(v) for v in main.pop("external")[:3])
    w = blob[offset:offset + wbytes].view(np.float32)
    main["bias"] = blob[offset + wbytes:offset + wbytes + bbytes].view(np.float32).tolist()
    if pick in _BLOCK:
        main.pop("weight", None)
        main["quanParameter"], main["sparseParameter"] = _sparse_encoding(w, main["common"]["outputCount"],
                                                                           _BLOCK[pick])
    else:
        main["weight"] = w.tolist()


def model_kernels(model: bytes) -> list[str]:
    """The kernel of every convolution of an MNN model, in graph order, as MNN will run it
    (``native``, ``sparse1`` or ``sparse4``): read off the model itself, dumped by MNN's converter."""
    with tempfile.TemporaryDirectory(prefix="sparsenas-mnn-") as d:
        tmp = Path(d)
        (tmp / "m.mnn").write_bytes(model)
        _mnnconvert("-f", "MNN", "--modelFile", str(tmp / "m.mnn"), "--JsonFile", str(tmp / "m.json"),
                    expect=tmp / "m.json")
        net = json.loads((tmp / "m.json").read_text())
    out = []
    for op in net["oplists"]:
        if op.get("type") not in _CONV_TYPES or op.get("main_type") != "Convolution2D":
            continue
        main = op["main"]
        args = {a["key"]: a.get("i", 0) for a in (main.get("sparseParameter") or {}).get("args", [])}
        total = len(main.get("weight") or []) or (main.get("quanParameter") or {}).get("weightSize", 0)
        runs_sparse = args and total - args.get("NNZElement", total) >= total * MIN_SPARSITY
        out.append(f"sparse{args['sparseBlockOC']}" if runs_sparse else NATIVE)
    return out


# ---------------------------------------------------------------------------- running
def _session(model: bytes | str | Path) -> tuple[Any, Any]:
    import MNN  # the inference API only (not MNN.tools: see the module docstring)

    with tempfile.TemporaryDirectory(prefix="sparsenas-mnn-") as d:
        path = model
        if isinstance(model, bytes):
            path = Path(d) / "m.mnn"
            path.write_bytes(model)
        with _quiet_fds():
            interp = MNN.Interpreter(str(path))
            session = interp.createSession({"numThread": 1, "backend": "CPU", "precision": "high"})
    return interp, session


def _runner(model: bytes, x: np.ndarray) -> Runner:
    """One inference of ``model`` on ``x`` per call, on the calling thread."""
    import MNN

    interp, session = _session(model)
    inp = interp.getSessionInput(session)
    if tuple(inp.getShape()) != x.shape:
        interp.resizeTensor(inp, x.shape)
        interp.resizeSession(session)
    host = MNN.Tensor(x.shape, MNN.Halide_Type_Float, x, MNN.Tensor_DimensionType_Caffe)

    def run() -> None:
        inp.copyFrom(host)
        interp.runSession(session)

    run.interp, run.session = interp, session  # type: ignore[attr-defined]  # kept alive with the runner
    return run


def run_mnn(model: bytes | str | Path, x: np.ndarray) -> np.ndarray:
    """Outputs of an MNN model on ``x`` (a check that an artifact runs and matches)."""
    import MNN

    if not isinstance(model, bytes):
        model = Path(model).read_bytes()
    run = _runner(model, np.ascontiguousarray(x, dtype=np.float32))
    run()
    out = run.interp.getSessionOutput(run.session)  # type: ignore[attr-defined]
    shape = tuple(out.getShape())
    host = MNN.Tensor(shape, MNN.Halide_Type_Float, np.zeros(shape, np.float32), MNN.Tensor_DimensionType_Caffe)
    out.copyToHostTensor(host)
    return np.array(host.getData(), dtype=np.float32).reshape(shape)


# ---------------------------------------------------------------------------- one-layer graphs
def _layer_onnx(spec: LayerSpec, seed: int = 0) -> bytes:
    """One layer as an ONNX graph with random weights zeroed as the layer's mask would (unstructured,
    or in blocks of output channels when the spec says so): a sparse kernel's speed depends on them."""
    from onnx import TensorProto, helper, numpy_helper

    from .onnx_graph import _io, _model

    torch.manual_seed(seed)
    cin = spec.cin // spec.groups
    w = torch.randn(spec.cout, cin, spec.kernel, spec.kernel)
    if spec.sparsity > 0:
        w = w * (block_magnitude_mask(w, spec.sparsity) if spec.oc_block else magnitude_mask(w, spec.sparsity))
    b = torch.randn(spec.cout)
    in_shape, out_shape = _io(spec)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    inits = [numpy_helper.from_array(b.numpy(), "b")]
    if spec.op == "linear":
        inits.append(numpy_helper.from_array(w.reshape(spec.cout, spec.cin).numpy(), "w"))
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    else:
        inits.append(numpy_helper.from_array(w.numpy(), "w"))
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[spec.kernel] * 2,
                                strides=[spec.stride] * 2, pads=[spec.kernel // 2] * 4, group=spec.groups)
    return _model([node], [x], [y], inits)


@functools.lru_cache(maxsize=64)
def _empty_model(in_shape: tuple[int, ...]) -> bytes:
    """What one call costs with (nearly) no kernel in it: a ReLU on the layer's input (MNN's
    converter removes an Identity graph's only node); the same model for every layer of a shape."""
    from onnx import TensorProto, helper

    from .onnx_graph import _model

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, in_shape)
    return convert(_model([helper.make_node("Relu", ["x"], ["y"])], [x], [y], []), [])


@RUNTIMES.register("mnn")
class MnnRuntime(Runtime):
    name = "mnn"
    description = ("MNN CPU backend (fp32) running model.mnn converted from the exported ONNX graph, sparse 1x1 "
                   "convs on MNN's sparse kernels (extra: sparsenas[mnn])")
    extra = "mnn"
    artifact = "model.mnn"
    network_copies = 2
    sparsity_buys = ("time and bytes: 1x1 convs from ~70-80% sparsity run on MNN's sparse kernels (1-channel "
                     "blocks, or 4-output-channel blocks for block masks), chosen per layer by the profile")

    @classmethod
    def version(cls) -> str:
        try:
            import MNN  # noqa: PLC0415
            import onnx  # noqa: F401, PLC0415  (the graphs are exported and built with it)
        except ImportError as e:
            raise cls.missing(e.name or "MNN") from None
        return str(MNN.version())

    # ------------------------------------------------------------------ kernels
    def impls(self, spec: LayerSpec) -> tuple[str, ...]:
        if spec.op != "conv2d" or spec.kernel != 1 or spec.groups != 1 or spec.sparsity < MIN_SPARSITY:
            return (NATIVE,)
        return (NATIVE, SPARSE1, SPARSE4) if spec.oc_block == OC_BLOCK else (NATIVE, SPARSE1)

    def table_spec(self, spec: LayerSpec) -> LayerSpec:
        return spec  # blocks of 4 output channels have a kernel of their own

    def timing_spec(self, spec: LayerSpec) -> LayerSpec:
        # a layer whose only kernel is the dense one costs the same at every sparsity
        return dataclasses.replace(spec, sparsity=0.0, oc_block=0) if self.impls(spec) == (NATIVE,) else spec

    def time_kernels(self, spec: LayerSpec, impls: tuple[str, ...], settings: KernelSettings) -> dict[str, Timing]:
        """Each implementation as a one-layer model (the layer's weights zeroed as its mask would),
        timed interleaved with a near-empty model on the same input, whose cost is subtracted; the
        fastest of :data:`SESSION_COPIES` loaded copies of each is kept."""
        shape = [spec.batch, spec.cin, *spec.in_hw] if spec.op == "conv2d" else [spec.batch, spec.cin]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        net, blob = _converted(_layer_onnx(spec))  # converted once, written once per kernel
        models = {i: _with_kernels(net, blob, [(spec, i)]) for i in impls}
        models["_empty"] = _empty_model(tuple(shape))
        fns = {f"{name}#{c}": _runner(m, x) for name, m in models.items() for c in range(SESSION_COPIES)}
        t = time_interleaved(fns, warmup=settings.warmup, repeats=settings.repeats, rounds=settings.rounds,
                             threads=settings.threads)
        best = {name: min((t[f"{name}#{c}"] for c in range(SESSION_COPIES)), key=lambda v: v.cpu_p10_ms)
                for name in models}
        return {i: subtract(best[i], best["_empty"]) for i in impls}

    # ------------------------------------------------------------------ networks
    def onnx(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser) -> bytes:
        # no grouped G2G lowering (another runtime's kernel): MNN runs a masked conv, one op per layer
        return export_onnx(to_plain(model, input_shape), input_shape, "legacy", dynamic_batch=False)

    def mnn(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser, onnx: bytes | None = None) -> bytes:
        """``model.mnn`` with ``choose``'s kernel per layer, converted from ``onnx`` (the exported
        graph; default: exported here)."""
        graph = onnx if onnx is not None else self.onnx(model, input_shape, choose)
        return convert(graph, conv_kernels(model, input_shape, choose, self))

    def kernels_in(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser) -> dict[str, str]:
        """The kernels model.mnn runs, the ones :func:`convert` places (:func:`model_kernels` reads
        the same back from the file): a layer ``choose`` would run grouped elsewhere is dense here."""
        return {name: pick for name, _, pick in _named_kernels(model, input_shape, choose, self)}

    def prepare(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser) -> Runner:
        return self.prepare_copies(model, input_shape, choose)[0]

    def prepare_copies(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser) -> list[Runner]:
        blob = self.mnn(model, input_shape, choose)  # convert once, load each copy
        x = np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)
        return [_runner(blob, x) for _ in range(self.network_copies)]

    def save(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser, path: Path) -> Path:
        Path(path).write_bytes(self.mnn(model, input_shape, choose))
        return Path(path)

    def weight_bytes(self, model: nn.Module, input_shape: tuple[int, ...], choose: Chooser,
                     layers: list[tuple[str, LayerSpec]] | None = None) -> dict[str, int]:
        """fp32 weights as model.mnn holds them: a conv on a sparse kernel keeps its non-zeros and a
        4-byte index each, every other layer its dense weight; a bias per output channel (its own or
        the folded BatchNorm's). Counted on the network, not by converting it (~0.1 s)."""
        plain = to_plain(model, input_shape, None)
        mods = {n: m for n, m in plain.named_modules()}
        dense = held = 0
        seen: set[str] = set()
        for name, spec, pick in _named_kernels(model, input_shape, choose, self):
            if name in seen:
                continue
            seen.add(name)
            w = mods[name].weight.detach()
            bias = spec.cout * 4
            dense += w.numel() * 4 + bias
            held += (int(torch.count_nonzero(w)) * 8 if pick in _BLOCK else w.numel() * 4) + bias
        return {"bytes": held, "dense_bytes": dense}
