"""From a found architecture to a deployable model: arch.json, state_dict, ONNX, TorchScript, card.md.

An export folder holds:

- ``arch.json``: the architecture (space, version, choices) plus the Task it was built for and where
  it came from, so :func:`load` rebuilds the network without the study;
- ``model.pt``: the state_dict of that network (``torch.load(weights_only=True)``); sparse layers
  keep their masks, and their dense weights hold zeros where the mask is 0;
- ``model.onnx`` and ``model.ts``: a plain-PyTorch copy (sparse layers turned into ``nn.Conv2d`` /
  ``nn.Linear`` with the masked weights), checked against onnxruntime / ``torch.jit.load`` on random
  inputs before anything is written;
- ``weights_csr.pt`` (``sparse_format="csr"``): the sparse layers' masked weights in CSR form;
- ``card.md``: what the network is and how it scored.

Every folder is written into a temporary sibling and moved into place at the end, so a failed check
leaves nothing half-written.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from .arch import Arch
from .data.contract import GRAPH_INPUTS, InputContract, WithRawInput
from .errors import SparseNASError
from .ops.kernels import frozen_weight
from .ops.plain import to_plain, ungrouped
from .ops.sparse import SparseMixin
from .task import Task

__all__ = ["FORMATS", "ExportError", "ExportedModel", "normalize_formats", "to_plain", "layer_sparsity",
           "write_export", "export_trials", "select_trials", "retrain", "search_budget", "load", "read_arch", "load_csr"]

FORMATS = {"json": "arch.json", "pt": "model.pt", "onnx": "model.onnx", "torchscript": "model.ts", "mnn": "model.mnn"}
_ALIASES = {"ts": "torchscript", "state_dict": "pt", "arch": "json"}
ONNX_EXPORTERS = ("legacy", "dynamo")  # legacy first: the graph hardware profiles time (runtimes/onnx_graph.py)
ATOL = 1e-4


class ExportError(SparseNASError):
    """An export that cannot be made, or whose ONNX/TorchScript file does not reproduce the model."""


def normalize_formats(formats: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"json,pt,onnx"`` or a list -> canonical names; json is always included (load() needs it)."""
    if formats is None:
        return tuple(FORMATS)
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out: list[str] = []
    for raw in items:
        name = _ALIASES.get(raw.strip().lower(), raw.strip().lower())
        if not name:
            continue
        if name not in FORMATS:
            raise ExportError(f"unknown export format '{raw.strip()}'; allowed: {', '.join(FORMATS)} "
                              "(comma-separated, e.g. --format json,pt,onnx)")
        if name not in out:
            out.append(name)
    if "json" not in out:
        out.insert(0, "json")
    return tuple(out)


# ---------------------------------------------------------------- plain PyTorch
def layer_sparsity(model: nn.Module) -> list[dict[str, Any]]:
    """Per conv/linear layer: name, type, weight shape, parameters, non-zeros and sparsity of the
    weight it runs with (masked for sparse layers)."""
    rows = []
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        w = frozen_weight(m)
        nnz = int(torch.count_nonzero(w))
        kind = "sparse" if isinstance(m, SparseMixin) else "dense"
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            kind += " depthwise" if m.groups == m.in_channels else f" groups={m.groups}"
        rows.append({"layer": name, "type": type(m).__name__, "kind": kind, "shape": list(w.shape),
                     "params": w.numel(), "nnz": nnz, "sparsity": 1.0 - nnz / max(1, w.numel()),
                     "target_sparsity": getattr(m, "target_sparsity", None)})
    return rows


def _masked_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """state_dict with the pruned entries of every sparse weight set to zero (the mask stays too)."""
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    for name, m in model.named_modules():
        if isinstance(m, SparseMixin):
            sd[f"{name}.weight" if name else "weight"] = frozen_weight(m).cpu()
    return sd


def _csr_weights(model: nn.Module) -> dict[str, Any]:
    """The sparse layers' masked weights as CSR components of the (Cout, rest) matrix."""
    layers = {}
    for name, m in model.named_modules():
        if isinstance(m, SparseMixin):
            w = frozen_weight(m).cpu()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sparse CSR support is in beta": the layout is stable
                csr = w.reshape(w.shape[0], -1).to_sparse_csr()
            layers[name] = {"shape": list(w.shape), "crow_indices": csr.crow_indices().clone(),
                            "col_indices": csr.col_indices().clone(), "values": csr.values().clone()}
    return {"format": "csr", "layers": layers}


def load_csr(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``weights_csr.pt`` -> {layer name: dense masked weight}, read with ``weights_only=True``."""
    try:
        data = torch.load(path, weights_only=True)
        out = {}
        for name, d in data["layers"].items():
            shape = tuple(d["shape"])
            cols = 1
            for n in shape[1:]:
                cols *= n
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                csr = torch.sparse_csr_tensor(d["crow_indices"], d["col_indices"], d["values"], (shape[0], cols))
                out[name] = csr.to_dense().reshape(shape)
    except OSError as e:
        raise SparseNASError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # a foreign or damaged file: torch.load's and the layout's many error types
        raise SparseNASError(f"{path} is not a sparsenas weights_csr.pt (the CSR weights `nas export` writes): "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return out


# ---------------------------------------------------------------- checks
def _example_inputs(shape: Sequence[int], batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *shape, generator=g)


def _export_onnx(plain: nn.Module, shape: Sequence[int], path: Path, exporter: str) -> None:
    from .runtimes.onnx_graph import export_onnx

    if exporter not in ONNX_EXPORTERS:
        raise ExportError(f"unknown ONNX exporter '{exporter}'; allowed: {', '.join(ONNX_EXPORTERS)}")
    path.write_bytes(export_onnx(plain, tuple(shape), exporter))


def check_onnx(path: Path, plain: nn.Module, shape: Sequence[int], *, atol: float = ATOL,
               batches: Sequence[int] = (1, 5), seed: int = 1) -> float:
    """Max |onnxruntime - torch| over random inputs of several batch sizes; raises when above ``atol``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("ONNX export needs onnxruntime to check the file: pip install 'sparsenas[onnx]', "
                          "or leave onnx out of --format") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    worst = 0.0
    for i, b in enumerate(batches):
        x = _example_inputs(shape, b, seed + i)
        with torch.no_grad():
            ref = plain(x).numpy()
        got = session.run(None, {name: x.numpy()})[0]
        if got.shape != ref.shape:
            raise ExportError(f"ONNX check failed: onnxruntime returned shape {got.shape} for batch {b}, torch {ref.shape}")
        worst = max(worst, float(abs(got - ref).max()))
    if not worst <= atol:  # also catches NaN
        raise ExportError(f"ONNX check failed: onnxruntime differs from the PyTorch model by up to {worst:.3g} "
                          f"(allowed {atol:g}) on random inputs; nothing was written")
    return worst


def write_mnn(model: nn.Module, input_shape: Sequence[int], graph: nn.Module, shape: Sequence[int], tmp: Path,
              choose: Callable[[Any], str] | None, exporter: str, *, atol: float = ATOL, seed: int = 3) -> float:
    """``model.mnn`` converted from the exported ONNX graph (``tmp/model.onnx`` when written, else
    ``graph``, taking ``shape``, exported the same way; a grouped G2G layer as the plain conv it
    computes, see :func:`~sparsenas.ops.plain.ungrouped`) with ``choose``'s kernel for each layer of
    ``model`` (taking ``input_shape``); checked against ``graph`` on random inputs like the ONNX file.
    Returns the max |MNN - torch|."""
    from .runtimes import get_runtime
    from .runtimes.mnn import run_mnn
    from .runtimes.onnx_graph import export_onnx

    onnx = tmp / "model.onnx"
    flat = ungrouped(graph)  # MNN would split a grouped G2G conv into ops no layer maps to; same function
    exported = onnx.read_bytes() if onnx.exists() and flat is graph else export_onnx(flat, tuple(shape), exporter)
    blob = get_runtime("mnn").mnn(model, tuple(input_shape), choose or (lambda spec: "dense"), onnx=exported)
    worst = 0.0
    for i in range(2):
        x = _example_inputs(shape, 1, seed + i)
        with torch.no_grad():
            ref = graph(x)
        got = torch.from_numpy(run_mnn(blob, x.numpy()))
        if got.shape != ref.shape:
            raise ExportError(f"MNN check failed: model.mnn returned shape {tuple(got.shape)}, torch {tuple(ref.shape)}")
        worst = max(worst, float((got - ref).abs().max()))
    if not worst <= atol:
        raise ExportError(f"MNN check failed: model.mnn differs from the PyTorch model by up to {worst:.3g} (> {atol})")
    (tmp / "model.mnn").write_bytes(blob)
    return worst


def check_torchscript(path: Path, plain: nn.Module, shape: Sequence[int], *, atol: float = ATOL, seed: int = 2) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, still loads everywhere
        ts = torch.jit.load(str(path))
    worst = 0.0
    for i, b in enumerate((1, 5)):
        x = _example_inputs(shape, b, seed + i)
        with torch.no_grad():
            worst = max(worst, float((ts(x) - plain(x)).abs().max()))
    if not worst <= atol:
        raise ExportError(f"TorchScript check failed: the scripted model differs from the PyTorch model by up to "
                          f"{worst:.3g} (allowed {atol:g}); nothing was written")
    return worst


# ---------------------------------------------------------------- writing
@dataclass
class ExportedModel:
    """What :func:`write_export` wrote and measured."""

    out: str
    files: list[str]
    onnx_max_abs_diff: float | None = None
    torchscript_max_abs_diff: float | None = None
    mnn_max_abs_diff: float | None = None
    params: int = 0
    nnz: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "files": self.files, "onnx_max_abs_diff": self.onnx_max_abs_diff,
                "torchscript_max_abs_diff": self.torchscript_max_abs_diff,
                "mnn_max_abs_diff": self.mnn_max_abs_diff, "params": self.params, "nnz": self.nnz,
                **{k: self.info.get(k) for k in ("trial", "accuracy", "latency_ms", "weights")}}


def write_export(model: nn.Module, arch: Arch, task: Task, out: str | os.PathLike, *,
                 formats: str | Iterable[str] | None = None, sparse_format: str | None = None,
                 info: dict[str, Any] | None = None, onnx_exporter: str = "legacy", atol: float = ATOL,
                 runtime: str | None = None, choose: Callable[[Any], str] | None = None,
                 contract: InputContract | None = None, graph_input: str = "raw") -> ExportedModel:
    """Write the export of a built, trained ``model`` into ``out`` (created, or updated file by file).

    ``info``: what the card reports beside the model itself (trial, accuracies, latencies, weights
    provenance...). ``runtime`` (default: none recorded) is the runtime the export is for: its
    artifact is always written, with ``choose``'s kernel per layer (the hardware profile's choice, so
    the exported network is the one whose latency was predicted: e.g. a block-diagonal G2G layer as
    a grouped conv in model.onnx). ``contract``: the data's input contract, recorded in arch.json
    and the card; with ``graph_input="raw"`` (the default) the ONNX and TorchScript graphs take the
    dataset's raw values and resize/normalise inside, ``"normalised"`` keeps the network's own input.
    Raises :class:`ExportError` (and writes nothing) when a check fails.
    """
    formats = normalize_formats(formats)
    if graph_input not in GRAPH_INPUTS:
        raise ExportError(f"unknown graph input '{graph_input}'; allowed: {', '.join(GRAPH_INPUTS)}")
    if contract is None:
        graph_input = "normalised"  # nothing says how raw data looks: the graph takes what the network takes
    if sparse_format not in (None, "csr"):
        raise ExportError(f"unknown sparse format '{sparse_format}'; allowed: csr")
    info = dict(info or {})
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; pass a folder")
    model = model.cpu().eval()
    rt = None
    if runtime is not None:
        from .runtimes import get_runtime

        rt = get_runtime(runtime)
        artifact_format = next(f for f, name in FORMATS.items() if name == rt.artifact)
        if artifact_format not in formats:
            formats = (*formats, artifact_format)
    plain = to_plain(model, task.input_shape, choose)
    graph, shape = plain, task.input_shape
    if graph_input == "raw" and contract is not None:
        graph, shape = WithRawInput(contract, plain).eval(), contract.raw_shape
    layers = layer_sparsity(model)
    anchor = out.parent
    while not anchor.exists():  # the temporary folder must sit on the same disk as the target
        anchor = anchor.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name or 'export'}.tmp-", dir=anchor))
    result = ExportedModel(str(out), [], info=info)
    try:
        doc = {**arch.to_dict(), "task": task.to_dict(), "graph_input": graph_input, **_plugin_refs(arch, task),
               **({"input": contract.to_dict()} if contract is not None else {}),
               **{k: info[k] for k in ("source", "weights") if k in info}}
        info["graph_input"], info["contract"] = graph_input, contract
        if rt is not None:
            doc["runtime"] = {**rt.info(), "artifact": rt.artifact,
                              "kernels": rt.kernels_in(model, task.input_shape, choose or (lambda spec: "dense")),
                              **rt.weight_bytes(model, task.input_shape, choose or (lambda spec: "dense"))}
            info["runtime"] = doc["runtime"]
        (tmp / "arch.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        if "pt" in formats:
            torch.save(_masked_state_dict(model), tmp / "model.pt")
        if sparse_format == "csr":
            torch.save(_csr_weights(model), tmp / "weights_csr.pt")
        if "onnx" in formats:
            _export_onnx(graph, shape, tmp / "model.onnx", onnx_exporter)
            result.onnx_max_abs_diff = check_onnx(tmp / "model.onnx", graph, shape, atol=atol)
        if "mnn" in formats:  # converted from the same graph, so it takes the same input
            result.mnn_max_abs_diff = write_mnn(model, task.input_shape, graph, shape, tmp, choose,
                                                onnx_exporter, atol=atol)
        if "torchscript" in formats:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, still loads everywhere
                traced = torch.jit.trace(graph, _example_inputs(shape, 2, 0))
                torch.jit.save(traced, str(tmp / "model.ts"))
            result.torchscript_max_abs_diff = check_torchscript(tmp / "model.ts", graph, shape, atol=atol)
        total_params = sum(p.numel() for n, p in plain.named_parameters())
        nnz = sum(int(torch.count_nonzero(p)) for p in plain.parameters())
        result.params, result.nnz = total_params, nnz
        (tmp / "card.md").write_text(_card(arch, task, info, layers, total_params, nnz, result, sorted(
            p.name for p in tmp.iterdir())))
        result.files = sorted(p.name for p in tmp.iterdir())
        _move_into(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _plugin_refs(arch: Arch, task: Task) -> dict[str, Any]:
    """``{"plugins": {"space": "module:Class", "dataset": "module:loader"}}`` for the components
    that come from outside sparsenas: another process imports them by these names (:func:`read_arch`)."""
    from .data import DATASETS
    from .search_spaces import SPACES

    refs = {}
    for kind, registry, name in (("space", SPACES, arch.space), ("dataset", DATASETS, task.dataset)):
        with contextlib.suppress(SparseNASError):  # not registered here: nothing to record
            if ref := registry.ref_of(name):
                refs[kind] = ref
    return {"plugins": refs} if refs else {}


def resolve_plugin(doc: dict[str, Any], kind: str, where: str = "arch.json") -> str | None:
    """Make the plug-in ``kind`` ("space" or "dataset") an ``arch.json`` document records
    findable by its own name, importing it by its recorded ``module:Class``; returns that name
    (None when nothing is recorded). Not importable: a one-paragraph error naming the module."""
    from .data import DATASETS
    from .search_spaces import SPACES

    ref = (doc.get("plugins") or {}).get(kind)
    if not isinstance(ref, str):
        return None
    registry = SPACES if kind == "space" else DATASETS
    try:
        registry.get(ref)
    except SparseNASError as e:
        raise type(e)(f"{where} was made with the plug-in {registry.kind} '{ref}', which cannot be loaded here: "
                      f"{e}") from None
    return ref


def _move_into(tmp: Path, out: Path) -> None:
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
        return
    for f in sorted(tmp.iterdir()):
        os.replace(f, out / f.name)


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def _card(arch: Arch, task: Task, info: dict[str, Any], layers: list[dict], params: int, nnz: int,
          result: ExportedModel, files: list[str]) -> str:
    src = info.get("source") or {}
    title = f"trial {src['trial']} of study `{src['study']}`" if "trial" in src else "retrained architecture"
    lines = [f"# {arch.space} architecture `{arch.digest()}`: {title}", ""]
    lines += ["## Where it comes from", ""]
    if src:
        lines += [f"- storage: `{src.get('storage')}`", f"- study: `{src.get('study')}`, trial {src.get('trial')}",
                  f"- strategy: {src.get('strategy', '-')}"]
    lines += [f"- weights: {info.get('weights', '-')}",
              f"- task: dataset `{task.dataset}`, input {tuple(task.input_shape)}, {task.num_classes} classes", ""]
    lines += ["## Scores", "", "| figure | value |", "|---|---|"]
    rows = [("validation accuracy (search)", _fmt(info.get("accuracy"), ".4f")),
            ("test accuracy (search)", _fmt(info.get("test_accuracy"), ".4f"))]
    if info.get("retrained"):
        r = info["retrained"]
        rows += [(f"validation accuracy (retrained, {r.get('epochs')} epochs)", _fmt(r.get("accuracy"), ".4f")),
                 ("test accuracy (retrained)", _fmt(r.get("test_accuracy"), ".4f"))]
    rt = info.get("runtime") or {}
    if rt:
        rows.append(("runtime (artifact)", f"{rt['name']} {rt['version']} ({rt['artifact']})"))
        rows.append(("weights, bytes (smallest encoding the runtime loads / dense)",
                     f"{rt['bytes']:,} / {rt['dense_bytes']:,}"))
    rows += _latency_rows(info, rt.get("name") if rt else info.get("latency_runtime"))
    rows += [("hardware profile", _fmt(info.get("hw_profile"))),
             ("parameters (exported network)", f"{params:,}"), ("non-zeros", f"{nnz:,}"),
             ("overall sparsity", f"{1 - nnz / max(1, params):.3f}"),
             ("MACs dense / effective", f"{_fmt(info.get('flops'), ',.0f')} / {_fmt(info.get('effective_flops'), ',.0f')}")]
    if result.onnx_max_abs_diff is not None:
        rows.append(("ONNX vs PyTorch, max abs diff", f"{result.onnx_max_abs_diff:.3g}"))
    if result.torchscript_max_abs_diff is not None:
        rows.append(("TorchScript vs PyTorch, max abs diff", f"{result.torchscript_max_abs_diff:.3g}"))
    if result.mnn_max_abs_diff is not None:
        rows.append(("MNN vs PyTorch, max abs diff", f"{result.mnn_max_abs_diff:.3g}"))
    lines += [f"| {k} | {v} |" for k, v in rows] + [""]
    lines += _input_section(info.get("contract"), info.get("graph_input", "normalised"), task)
    lines += ["## Choices", "", "| choice | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in arch.choices.items()] + [""]
    kernels = info.get("kernels") or {}
    lines += ["## Layers", "", "Sparsity of the weight each layer runs with (sparse layers: masked).", "",
              "| layer | kind | weight shape | params | non-zeros | sparsity | kernel |", "|---|---|---|---|---|---|---|"]
    for r in layers:
        lines.append(f"| {r['layer']} | {r['kind']} | {'x'.join(map(str, r['shape']))} | {r['params']:,} | "
                     f"{r['nnz']:,} | {r['sparsity']:.3f} | {kernels.get(r['layer'], '-')} |")
    lines += ["", "## Files", ""]
    described = {"arch.json": "architecture + task (`sparsenas.load(DIR)` rebuilds the network)",
                 "model.pt": "state_dict, `torch.load(path, weights_only=True)`; sparse layers keep masks",
                 "model.onnx": "plain network, checked against onnxruntime (its input: see Input)",
                 "model.ts": "TorchScript (`torch.jit.load`; its input: see Input)",
                 "model.mnn": "MNN model converted from the ONNX graph, the profile's kernel per layer, checked against "
                              "MNN's runtime (its input: see Input)",
                 "weights_csr.pt": "sparse layers' masked weights in CSR (`sparsenas.export.load_csr`)",
                 "card.md": "this card"}
    lines += [f"- `{f}`: {described.get(f, '')}" for f in files + ["card.md"] if f in described]
    return "\n".join(lines) + "\n"


def _latency_rows(info: dict[str, Any], runtime: str | None) -> list[tuple[str, str]]:
    """Every latency figure with what it is: the search's (with the speed anchor's factor when the
    profile's table gave it), measured then, and the profile's prediction now (what `nas inspect
    --runtime` prints for this file)."""
    where = f"batch 1, {runtime}" if runtime else "batch 1"
    speed = info.get("hw_speed")
    anchored = f" x speed anchor {speed:.3f}" if isinstance(speed, (int, float)) and speed != 1.0 else ""
    source = str(info.get("latency_source") or "")
    when = info.get("latency_timed", "at search time")  # `nas train` times the network it retrained
    rows = [(f"latency {when} (ms, {where}; {source or 'source not recorded'}"
             f"{anchored if source.startswith('table') else ''})", _fmt(info.get("latency_ms"), ".4f"))]
    if info.get("predicted_latency_ms") is not None and not source.startswith("table"):
        rows.append((f"profile prediction {when} (ms{anchored})", _fmt(info["predicted_latency_ms"], ".4f")))
    if info.get("measured_latency_ms") is not None:
        rows.append((f"measured {when} (ms, {where}, wall / thread CPU)",
                     f"{_fmt(info.get('measured_latency_ms'), '.4f')} / {_fmt(info.get('measured_latency_cpu_ms'), '.4f')}"))
    now = info.get("predicted_now")
    if isinstance(now, dict):
        how = "calibrated" if now.get("calibration") else "sum of isolated kernels, no calibration for this input"
        rows.append((f"predicted now by profile {now['profile']} (ms, {now['metric']}, {how}, no speed anchor; "
                     f"= `nas inspect --runtime {runtime}`)", f"{now['ms']:.4f}"))
    elif isinstance(now, str):
        rows.append(("predicted now by the profile", f"- ({now})"))
    return rows


def _input_section(contract: InputContract | None, graph_input: str, task: Task) -> list[str]:
    lines = ["## Input", ""]
    if contract is None:
        return lines + [f"- network input: {tuple(task.input_shape)}, normalised as in training (the data's "
                        "mean/std were not recorded with this export)", ""]
    lines += contract.describe()
    if graph_input == "raw":
        lines += [f"- `model.onnx` / `model.ts` take the raw input ({'x'.join(map(str, contract.raw_shape))} per "
                  "sample, values as above) and prepare it inside the graph: feed the dataset's values as they are"]
    else:
        lines += ["- `model.onnx` / `model.ts` take the prepared (resized, normalised) input: apply the preparation "
                  "above first"]
    lines += ["- PyTorch: `m = sparsenas.load(DIR); m(m.preprocess(raw_batch))`", ""]
    return lines


# ---------------------------------------------------------------- reading back
def read_arch(path: str | os.PathLike) -> tuple[Arch, Task | None, dict[str, Any]]:
    """``arch.json`` (or the folder holding it) -> (Arch, Task or None, the whole document). A
    plug-in space it records (``plugins.space``) is imported, so ``get_space(arch.space)`` finds it."""
    p = Path(path)
    if p.is_dir():
        p = p / "arch.json"
    if not p.is_file():
        raise SparseNASError(f"no architecture file at {p}; pass an arch.json written by `nas export` or a folder holding one")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SparseNASError(f"{p} is not an architecture file: it is not UTF-8 text ({e.reason} at byte {e.start})") from None
    from .search_spaces import SPACES

    arch = Arch.from_json(text)
    doc = json.loads(text)
    if arch.space not in SPACES:
        resolve_plugin(doc, "space", str(p))
    task = None
    if "task" in doc:
        try:
            task = Task.from_dict(doc["task"])
        except (KeyError, TypeError, ValueError):
            raise SparseNASError(f"malformed 'task' in {p}: expected dataset, input_shape and num_classes") from None
    return arch, task, doc


def read_contract(doc: dict[str, Any]) -> InputContract | None:
    """The input contract an ``arch.json`` document records (None for exports made before contracts)."""
    if not isinstance(doc.get("input"), dict):
        return None
    try:
        return InputContract.from_dict(doc["input"])
    except (KeyError, TypeError, ValueError):
        raise SparseNASError("malformed 'input' in arch.json: expected the input contract `nas export` writes "
                             "(dataset, raw_shape, input_shape, mean, std, ...)") from None


def _no_contract(x: Any) -> torch.Tensor:
    raise SparseNASError("this export records no input contract (it predates them): prepare inputs as the search "
                         "did (resize, then normalise with the training split's mean/std), or re-export it")


def load(path: str | os.PathLike, *, plain: bool = False) -> nn.Module:
    """The exported network in eval mode: rebuilt from ``arch.json`` and loaded from ``model.pt``.

    ``plain=True`` returns the plain-PyTorch copy (sparse layers as nn.Conv2d/nn.Linear). The network
    takes prepared inputs; ``model.preprocess(raw)`` prepares raw samples as the dataset provides
    them (resize, normalise: ``model.input_contract`` says how), so ``model(model.preprocess(x))``.
    """
    from .search_spaces import get_space

    folder = Path(path)
    arch, task, doc = read_arch(folder)
    contract = read_contract(doc)
    if task is None:
        raise SparseNASError(f"{folder / 'arch.json'} has no 'task'; it was not written by `nas export`/`nas train`")
    weights = folder / "model.pt"
    if not weights.is_file():
        raise SparseNASError(f"no model.pt in {folder}; export with --format including pt")
    model = get_space(arch.space).build(arch, task)
    try:
        state = torch.load(weights, weights_only=True)
    except Exception as e:  # a damaged zip, a pickle weights_only refuses: the file's fault, not a bug
        raise SparseNASError(f"cannot read {weights}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; "
                             "export it again") from None
    if not isinstance(state, dict):
        raise SparseNASError(f"{weights} holds a {type(state).__name__}, not a state_dict; export it again")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise SparseNASError(f"model.pt in {folder} does not fit the architecture in arch.json: {str(e).splitlines()[0]}") from None
    model.eval()
    model = to_plain(model) if plain else model
    # plain attributes, not submodules: the state_dict stays that of model.pt
    model.input_contract = contract
    model.preprocess = contract.preprocess if contract is not None else _no_contract
    return model


# ---------------------------------------------------------------- from a study
def select_trials(study: Any, *, trial: int | None = None, best: bool = False, pareto: bool = False) -> list[Any]:
    """The trials to export: number ``trial``, the most accurate of the front (``best``), or the front."""
    from optuna.trial import TrialState

    from .tracking import pareto_front, trial_record

    if sum((trial is not None, best, pareto)) != 1:
        raise SparseNASError("say which trial to export: exactly one of --trial N, --best or --pareto")
    if trial is not None:
        trials = study.get_trials(deepcopy=False)
        found = [t for t in trials if t.number == trial]
        if not found:
            last = f"0..{trials[-1].number}" if trials else "none"
            raise SparseNASError(f"study '{study.study_name}' has no trial {trial} (trial numbers there: {last})")
        t = found[0]
        if t.state != TrialState.COMPLETE:
            why = trial_record(t).reason
            raise SparseNASError(
                f"trial {trial} of study '{study.study_name}' is {t.state.name}, not COMPLETE"
                + (f" ({why})" if why else "") + "; only completed trials have a trained network to export. "
                "Pick one from `--best`, `--pareto` or the search summary")
        return [t]
    front = pareto_front(study)
    if not front:
        raise SparseNASError(f"study '{study.study_name}' has no completed trial to export")
    return front[:1] if best else front


def _load_plug_ins(study: Any) -> None:
    """A study searched with ``--space module:Class`` (or such a dataset) records the plug-in's own
    name in its architectures; importing it by the path the search used registers that name too."""
    from .data import DATASETS
    from .search_spaces import SPACES
    from .tracking import study_record

    config = study_record(study).config
    for registry, name in ((SPACES, config.get("space")), (DATASETS, config.get("dataset"))):
        if isinstance(name, str) and ":" in name:
            # not importable here: the later lookup by the plug-in's own name gives the error
            with contextlib.suppress(SparseNASError):
                registry.get(name)


def trial_info(storage: str, study: Any, t: Any) -> dict[str, Any]:
    """What the card reports about a trial, from its user attrs and the study's."""
    from .tracking import mask_url, study_record, trial_record

    r, s = trial_record(t), study_record(study)
    source = r.latency_source or ""
    hw = r.hw_profile or s.config.get("hw") or (source.split(":", 1)[1] if ":" in source else None)
    return {"source": {"storage": mask_url(storage), "study": study.study_name, "trial": t.number,
                       "strategy": r.strategy or s.strategy},
            "trial": t.number, "accuracy": r.accuracy, "test_accuracy": r.test_accuracy,
            "latency_ms": r.latency_ms, "latency_source": r.latency_source,
            "predicted_latency_ms": r.predicted_latency_ms, "measured_latency_ms": r.measured_latency_ms,
            "measured_latency_cpu_ms": r.measured_latency_cpu_ms, "hw_profile": hw, "hw_speed": r.hw_speed,
            "flops": r.flops, "effective_flops": r.effective_flops, "kernels": r.kernels}


def search_budget(config: dict[str, Any], epochs: int | None = None) -> dict[str, Any]:
    """The training budget of a search (its ``config`` study attr) as :func:`retrain` keywords;
    ``epochs`` replaces it by a plain epoch count."""
    from .config import DEFAULT_EPOCHS

    seconds = None if epochs else config.get("time_budget")
    n = epochs or config.get("epochs") or (10_000 if seconds else DEFAULT_EPOCHS)
    return {"epochs": int(n), "seconds": seconds, "batch_size": int(config.get("batch_size") or 32),
            "lr": float(config.get("lr") or 0.05), "seed": int(config.get("seed") or 0),
            "data_dir": config.get("data_dir"), "input_size": config.get("input_size"), "limit": config.get("limit")}


def retrain(arch: Arch, *, dataset: str, data_dir: str | None = None, input_size: int | None = None,
            epochs: int = 6, seconds: float | None = None, batch_size: int = 32, lr: float = 0.05, seed: int = 0,
            limit: int | None = None, device: str = "cpu", measure: bool = True, runtime: str | None = None,
            on_step: Callable[[float], None] | None = None) -> tuple[nn.Module, Task, dict[str, Any]]:
    """Train ``arch`` from scratch on ``dataset``; returns (model, task, figures for the card). With
    ``measure``, its latency is measured here in ``runtime`` (None: the default runtime)."""
    from .data import load_dataset
    from .evaluators import Evaluator, LatencyResult, MeasuredLatency, TrainBudget
    from .search_spaces import get_space

    space = get_space(arch.space)
    data = load_dataset(dataset, data_dir=data_dir, input_size=input_size, seed=seed, limit=limit)
    space.check_task(data.task)
    space.validate(arch, data.task)
    budget = TrainBudget(epochs=epochs, seconds=seconds, batch_size=batch_size, lr=lr)
    # no speed anchor: it re-times 16 networks (seconds) for the prediction beside the measurement, which
    # no figure here uses
    latency = (MeasuredLatency(runtime=runtime, anchor=False) if measure
               else (lambda a, m, t: LatencyResult(float("nan"), "not measured")))
    ev = Evaluator(space, data, budget, latency, seed=seed, device=device)
    model = ev.build(arch)
    trained = ev.train(model, on_step=on_step)
    lat = ev.latency(arch, model)
    res = ev.result(arch, model, trained, lat)
    figures = {"accuracy": res.accuracy, "test_accuracy": res.test_accuracy, "epochs": trained.epochs,
               "history": trained.history, "dataset": data.task.dataset, "seed": seed,
               "flops": res.flops, "effective_flops": res.effective_flops, "contract": data.contract}
    if measure:
        figures.update(latency_ms=lat.ms, latency_source=lat.source, latency_runtime=lat.attrs["runtime"],
                       measured_latency_ms=lat.attrs["measured_latency_ms"],
                       measured_latency_cpu_ms=lat.attrs["measured_latency_cpu_ms"], kernels=lat.attrs.get("kernels"))
    return model, data.task, figures


def _predicted_now(space: Any, arch: Arch, task: Task, runtime: str, hw: str | None) -> dict[str, Any] | str:
    """The profile's prediction now (as `nas inspect --runtime` makes it), or why there is none."""
    from .evaluators.latency import profile_prediction

    try:
        p = profile_prediction(space, arch, task, runtime, hw)
    except SparseNASError as e:
        return str(e).split(";")[0]
    return {"ms": p.ms, "profile": p.profile, "metric": p.metric, "calibration": p.calibration}


def _study_contract(study: Any, config: dict[str, Any]) -> InputContract:
    """The input contract the search recorded; for studies from before contracts, the one its
    data settings give again (loading is seeded, so the split and its mean/std are the same)."""
    from .data import load_dataset
    from .tracking import study_record

    rec = study_record(study)
    if isinstance(rec.input, dict):
        return InputContract.from_dict(rec.input)
    searched = config.get("dataset")  # a plug-in by its import path, else the dataset's own name
    data = load_dataset(searched if isinstance(searched, str) and ":" in searched else str(rec.dataset),
                        data_dir=config.get("data_dir"), input_size=config.get("input_size"),
                        seed=int(config.get("seed") or 0), limit=config.get("limit"))
    assert data.contract is not None
    return data.contract


def _study_choice(config: dict[str, Any], runtime: str) -> Callable[[Any], str] | None:
    """The kernel choice of the search's hardware profile for ``runtime`` (None: no profile to ask,
    every layer exported as its runtime's native op)."""
    from .hwprofiles import LatencyTable, ProfileError

    try:
        table = LatencyTable.load(config.get("hw"), runtime)
    except ProfileError:
        return None

    def choose(spec: Any) -> str:
        try:
            return table.choose(spec)
        except ProfileError:  # a layer the profile never timed: the runtime's native op
            return "dense"

    return choose


def export_trials(storage: str, study_name: str | None, out: str | os.PathLike, *, trial: int | None = None,
                  best: bool = False, pareto: bool = False, formats: str | Iterable[str] | None = None,
                  sparse_format: str | None = None, train: bool = False, epochs: int | None = None,
                  artifact_dir: str | None = None, onnx_exporter: str = "legacy", graph_input: str = "raw",
                  log: Callable[[str], None] | None = None) -> list[ExportedModel]:
    """Export trials of a study: one folder ``out`` (``--trial``/``--best``) or ``out/trial-N`` per
    front trial (``--pareto``). Weights come from the trial's artifact when it has one; otherwise
    ``train=True`` retrains the architecture with the search's budget (``epochs`` overrides it)."""
    from .search_spaces import get_space
    from .tracking import arch_of, load_study, load_weights, study_record, trial_record

    formats = normalize_formats(formats)
    if onnx_exporter not in ONNX_EXPORTERS:
        raise ExportError(f"unknown ONNX exporter '{onnx_exporter}'; allowed: {', '.join(ONNX_EXPORTERS)}")
    study = load_study(storage, study_name)
    trials = select_trials(study, trial=trial, best=best, pareto=pareto)
    _load_plug_ins(study)
    rec = study_record(study)
    if rec.task is None or rec.space is None:
        raise SparseNASError(f"study '{study.study_name}' was not made by sparsenas (no 'space'/'task' attrs)")
    task = Task.from_dict(rec.task)
    config = rec.config
    contract = _study_contract(study, config)
    runtime = rec.timed_in
    choose = _study_choice(config, runtime)
    results = []
    for t in trials:
        arch = arch_of(t)
        space = get_space(arch.space)
        info = trial_info(storage, study, t)
        state = load_weights(storage, study, t, artifact_dir)
        if state is not None:
            model = space.build(arch, task)
            model.load_state_dict(state)
            info["weights"] = f"trained in the search (Optuna artifact {trial_record(t).weights_artifact} of trial {t.number})"
        elif train:
            budget = search_budget(config, epochs)
            if log:
                what = f"{budget['seconds']} s" if budget["seconds"] else f"{budget['epochs']} epochs"
                log(f"trial {t.number} has no saved weights; retraining it for {what} on {rec.dataset}")
            model, task2, figures = retrain(arch, dataset=str(rec.dataset), measure=False, **budget)
            info["retrained"] = figures
            info["weights"] = f"retrained from scratch for {figures['epochs']} epochs on {task2.dataset} (seed {figures['seed']})"
        else:
            raise SparseNASError(
                f"trial {t.number} of study '{study.study_name}' has no saved weights (searches save them as Optuna "
                "artifacts beside file storages, or in --artifact-dir); pass --train to retrain the architecture "
                "(with the search's training budget; --epochs to change it)")
        info["predicted_now"] = _predicted_now(space, arch, task, runtime, config.get("hw"))
        target = Path(out) / f"trial-{t.number}" if pareto else Path(out)
        res = write_export(model, arch, task, target, formats=formats, sparse_format=sparse_format, info=info,
                           onnx_exporter=onnx_exporter, runtime=runtime, choose=choose, contract=contract,
                           graph_input=graph_input)
        results.append(res)
    return results
