"""`nas profile`: time every kernel a space can emit on this machine and calibrate the table.

Two phases per (space, input shape):

1. **Kernels.** Every distinct layer of ``space.kernel_specs(task)`` is timed in isolation with
   each implementation the profile's runtime has for it (:meth:`~sparsenas.runtimes.Runtime.impls`:
   in ``torch`` the native op, or dense / torch CSR / scipy CSR for sparse 1x1 convs and linear
   layers; in ONNX Runtime one dense op whatever the sparsity, so each shape is timed once),
   interleaved, 1 thread, batch 1: median, IQR and 10th percentile of wall and thread CPU time.
2. **Calibration.** Random architectures are built with the table's kernel choice as the runtime's
   artifact (the exported ONNX graph for ONNX Runtime), timed end to end (interleaved, see
   :mod:`.measure`) and a non-negative linear model from the kernel sum to the measured latency is
   fitted (:mod:`.table`); the networks and their times are kept in the profile.

Work in progress is written atomically to ``OUT.partial`` every few seconds; re-running the same
command picks it up. An existing complete ``OUT`` is extended, not rewritten from scratch.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from ..ops.spec import LayerSpec
from ..runtimes import Runtime, get_runtime
from ..runtimes.base import KernelSettings
from ..task import Task
from ..timing import Timing
from .measure import build_network, measure_networks, sample_archs
from .profile import (FEATURES, ProfileError, calibration_key, machine_info, new_profile, now, profile_runtime,
                      read_profile, write_json_atomic)
from .table import LatencyTable

__all__ = ["KernelTimer", "time_specs", "fit_networks", "refit", "profile_space", "run_profile", "fit_calibration", "partial_path", "cuda_semi_structured"]

SAVE_EVERY_S = 10.0
# "layers" is left out: it is the sum of the per-implementation counts. The kernel sum is split by
# kind (1x1, depthwise, the rest): in ONNX Runtime a 1x1 conv in a network runs at ~0.87x its isolated
# time and a depthwise one at ~0.42x (fused activations, warm caches), which one coefficient on the
# plain sum cannot express (leave-one-out within +-10% 88% with it, 95% split, 8x8 inputs); the
# multiply-accumulates of each kind say how far from its isolated time a layer of that size runs
# (leave-one-out 94% -> 100% at 8x8 and 92% -> 99% at 16x16 in ONNX Runtime).
CALIBRATION_FEATURES = ("sum_pw_ms", "sum_grouped_ms", "sum_dw_ms", "sum_other_ms", "layers_native", "layers_dense",
                        "layers_torch_csr", "layers_scipy_csr", "layers_grouped", "act_melems", "dw_layers",
                        "dw_act_melems", "pw_mmacs", "dw_mmacs", "gather_melems", "sum_sparse_ms", "layers_sparse1",
                        "layers_sparse4", "one")


def partial_path(out: str | Path) -> Path:
    return Path(f"{out}.partial")


class KernelTimer:
    """Times one layer's candidate implementations side by side in a runtime (its ``time_kernels``)."""

    def __init__(self, warmup: int = 5, repeats: int = 100, rounds: int = 5, threads: int = 1,
                 runtime: str | Runtime | None = None) -> None:
        self.warmup, self.repeats, self.rounds, self.threads = warmup, repeats, rounds, threads
        self.runtime = get_runtime(runtime)  # None: the default runtime

    def settings(self) -> dict[str, Any]:
        return {"warmup": self.warmup, "repeats": self.repeats, "rounds": self.rounds}

    def __call__(self, spec: LayerSpec, impls: Iterable[str]) -> dict[str, Timing]:
        s = KernelSettings(self.warmup, self.repeats, self.rounds, self.threads)
        return self.runtime.time_kernels(spec, tuple(impls), s)


def cuda_semi_structured(spec: LayerSpec, repeats: int = 100) -> dict[str, dict[str, float]]:
    """On a CUDA device: dense fp16 vs 2:4 semi-structured (``to_sparse_semi_structured``) for a
    linear/1x1 layer, as CUDA-event medians; ``{}`` without CUDA or for shapes 2:4 cannot take
    (both weight dims must be multiples of 64). Stored beside the CPU implementations; the CPU
    kernel choice ignores them."""
    if not torch.cuda.is_available() or not spec.sparse_capable or spec.cin % 64 or spec.cout % 64:
        return {}
    from torch.sparse import to_sparse_semi_structured

    from ..ops.masks import nm_mask

    w = torch.randn(spec.cout, spec.cin, device="cuda", dtype=torch.float16)
    w = w * nm_mask(w, 2, 4).to(w.dtype)
    cols = spec.batch * int(np.prod(spec.in_hw or (1,)))
    x = torch.randn(max(cols, 16), spec.cin, device="cuda", dtype=torch.float16)  # >= 16 rows for the kernel
    out: dict[str, dict[str, float]] = {}
    for name, weight in (("cuda_dense", w), ("cuda_semi_2:4", to_sparse_semi_structured(w))):
        times = []
        with torch.inference_mode():
            for i in range(repeats + 10):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                torch.nn.functional.linear(x, weight)
                b.record()
                torch.cuda.synchronize()
                if i >= 10:
                    times.append(a.elapsed_time(b))
        q = np.percentile(times, [10, 25, 50, 75])
        out[name] = {"wall_ms": float(q[2]), "cpu_ms": float(q[2]), "wall_iqr_ms": float(q[3] - q[1]),
                     "cpu_iqr_ms": float(q[3] - q[1]), "wall_p10_ms": float(q[0]), "cpu_p10_ms": float(q[0]),
                     "repeats": repeats}
    return out


def fit_calibration(features: np.ndarray, measured: np.ndarray) -> list[float]:
    """Non-negative least squares on relative error (rows weighted by 1/measured), so a 1 ms and a
    4 ms network count alike: the bar is relative (share within +-10%)."""
    from scipy.optimize import nnls

    w = 1.0 / measured
    coef, _ = nnls(features * w[:, None], measured * w)
    return [float(c) for c in coef]


def _fit_report(pred: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    err = pred / measured - 1.0
    return {"mape": float(np.mean(np.abs(err))), "within_10": float(np.mean(np.abs(err) <= 0.10)),
            "max_abs_error": float(np.max(np.abs(err)))}


class _Saver:
    """Writes the work in progress to OUT.partial at most every SAVE_EVERY_S seconds."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data, self.last = path, data, time.monotonic()

    def maybe(self) -> None:
        if time.monotonic() - self.last >= SAVE_EVERY_S:
            self.now()

    def now(self) -> None:
        self.data["updated"] = now()
        write_json_atomic(self.path, self.data)
        self.last = time.monotonic()


def _start(out: Path, name: str | None, timer: KernelTimer, log: Callable[[str], None]) -> dict[str, Any]:
    part = partial_path(out)
    if part.exists():
        data = read_profile(part)
        log(f"resuming from {part} ({len(data['entries'])} kernels already timed)")
    elif out.exists():
        data = read_profile(out)
        log(f"extending {out} ({len(data['entries'])} kernels, calibrations: {', '.join(data['calibrations']) or 'none'})")
    else:
        return new_profile(name or out.stem, timer.threads, timer.settings(), timer.runtime.info(),
                           timer.runtime.metric)
    data.setdefault("runtime", {"name": profile_runtime(data), "version": data["machine"].get("torch", "?")})
    if profile_runtime(data) != timer.runtime.name:
        raise ProfileError(f"'{out}' is a profile of runtime '{profile_runtime(data)}'; this run times "
                           f"'{timer.runtime.name}'. Timings of two runtimes do not mix: write to another --out file")
    here = machine_info(timer.threads)
    if data["machine"].get("cpu_model") != here["cpu_model"] or data["timing"].get("threads") != timer.threads:
        raise ProfileError(f"'{out}' was measured on '{data['machine'].get('cpu_model')}' with "
                           f"{data['timing'].get('threads')} thread(s); this is '{here['cpu_model']}' with "
                           f"{timer.threads}. Timings from two machines do not mix: write to another --out file")
    return data


def profile_space(data: dict[str, Any], space: Any, task: Task, *, timer: KernelTimer, saver: _Saver,
                  calibration_networks: int = 80, calibration_repeats: int = 200, seed: int = 0,
                  cuda: bool = False, progress: Any = None) -> dict[str, Any]:
    """Add ``space``'s kernels for ``task`` and its calibration to ``data`` (a profile dict)."""
    t0 = time.monotonic()
    specs = sorted({timer.runtime.table_spec(s) for s in space.kernel_specs(task)}, key=lambda s: s.key())
    # a block-diagonal layer's sparsity (1 - 1/G) is exact, never a level other layers snap to
    levels = set(data["sparsity_levels"]) | {s.sparsity for s in specs if not s.blocks}
    data["sparsity_levels"] = sorted(levels)
    todo = [s for s in specs if s.key() not in data["entries"]]
    bar = progress.add_task(f"{space.name} {task.input_shape}: kernels", total=len(specs),
                            completed=len(specs) - len(todo)) if progress else None

    def step() -> None:
        saver.maybe()
        if bar is not None:
            progress.advance(bar)

    time_specs(data, todo, timer, cuda, step)
    saver.now()
    key = calibration_key(space.name, task.input_shape)
    if key not in data["calibrations"] and calibration_networks > 0:
        data["calibrations"][key] = _calibrate(data, space, task, calibration_networks, calibration_repeats, seed,
                                               progress, timer, cuda)
        saver.now()
    data["profiled"] = [p for p in data["profiled"] if p.get("key") != key] + [{
        "key": key, "space": space.name, "input_shape": list(task.input_shape), "num_classes": task.num_classes,
        "dataset": task.dataset, "kernels": len(specs), "timed_now": len(todo),
        "seconds": round(time.monotonic() - t0, 1), "date": now(), "load_avg_end": machine_info(1)["load_avg"]}]
    return data


def time_specs(data: dict[str, Any], specs: Iterable[LayerSpec], timer: KernelTimer, cuda: bool = False,
               step: Callable[[], None] = lambda: None) -> None:
    """Time ``specs`` (at nominal sparsity) with each implementation the timer's runtime has for them
    and add them to ``data``'s entries; layers the runtime times alike are timed once."""
    rt = timer.runtime
    timed: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}  # one timing per layer the runtime tells apart
    for spec in specs:
        impl_names = rt.impls(spec)
        same = (rt.timing_spec(spec).key(), impl_names)
        if same not in timed:
            timings = timer(spec, impl_names)
            timed[same] = {i: {k: v for k, v in t.to_dict().items() if k != "threads"} for i, t in timings.items()}
        impls = dict(timed[same])
        if cuda:
            impls.update(cuda_semi_structured(spec))
        data["entries"][spec.key()] = {"spec": spec.to_dict(), "impls": impls}
        step()


def _calibrate(data: dict[str, Any], space: Any, task: Task, n: int, repeats: int, seed: int,
               progress: Any, timer: KernelTimer | None = None, cuda: bool = False) -> dict[str, Any]:
    table = LatencyTable(data, "<profile in progress>")
    archs = sample_archs(space, task, n, seed=10_000 + seed)
    if timer is not None:  # a space whose kernel list is sampled (kernel_specs) may have missed one these run
        missed = {table.snap(s).key(): table.snap(s) for a in archs for s in space.layers(a, task)
                  if table.timings(s) is None}
        time_specs(data, sorted(missed.values(), key=lambda s: s.key()), timer, cuda)
    bar = progress.add_task(f"{space.name} {task.input_shape}: build {n} networks", total=n) if progress else None
    nets = []
    for a in archs:
        nets.append(build_network(space, a, task, table.choose, table.runtime))
        if bar is not None:
            progress.advance(bar)
    if progress:
        progress.update(bar, description=f"{space.name} {task.input_shape}: time {n} networks end to end")
    timings = measure_networks(nets, repeats=repeats, metric=data["timing"]["metric"])
    measured = [t.to_dict() for t in timings]
    return fit_networks(data, space, task, archs, [n.layers for n in nets], measured, repeats)


def fit_networks(data: dict[str, Any], space: Any, task: Task, archs: list[Any], layers: list[list[LayerSpec]],
                 measured: list[dict[str, Any]], repeats: int) -> dict[str, Any]:
    """The calibration of ``space`` at ``task``'s input from networks measured end to end (their
    ``Timing.to_dict()``s): coefficients, fit and leave-one-out figures, the networks themselves."""
    table = LatencyTable(data, "<profile in progress>")
    preds = [table.predict(ls) for ls in layers]
    cols = [FEATURES.index(f) for f in CALIBRATION_FEATURES]
    feats = np.array([p.features for p in preds])[:, cols]
    metric = data["timing"]["metric"]
    y = np.array([m[metric] for m in measured])
    coef = fit_calibration(feats, y)
    fitted = feats @ np.array(coef)
    loo = np.empty(len(y))
    for i in range(len(y)):  # leave-one-out: how well the model predicts a network it was not fitted on
        keep = np.arange(len(y)) != i
        loo[i] = feats[i] @ np.array(fit_calibration(feats[keep], y[keep]))
    networks = [{"arch": a.to_dict(), "digest": a.digest(), "features": dict(zip(FEATURES, p.features)),
                 "kernels": p.kernels, "measured": dict(m), "predicted_ms": float(f)}
                for a, p, m, f in zip(archs, preds, measured, fitted)]
    return {"space": space.name, "input_shape": list(task.input_shape), "num_classes": task.num_classes,
            "features": list(CALIBRATION_FEATURES), "coef": coef, "metric": metric, "model": "nnls-relative",
            "fit": _fit_report(fitted, y), "leave_one_out": _fit_report(loo, y),
            "plain_sum": _fit_report(np.array([p.plain_sum_ms for p in preds]), y), "repeats": repeats,
            "load_avg": machine_info(1)["load_avg"], "date": now(), "networks": networks}


def refit(data: dict[str, Any], space: Any, task: Task) -> dict[str, Any]:
    """Fit ``space``'s calibration again on the networks already measured for it (after a change of
    the calibration's features): nothing is re-timed."""
    import torch

    from ..arch import Arch
    from ..ops import trace_layers

    old = data["calibrations"][calibration_key(space.name, task.input_shape)]
    archs = [space.upgrade(Arch.from_dict(n["arch"])) for n in old["networks"]]
    layers = []
    for a in archs:
        torch.manual_seed(0)  # build_network's seed: the same masks as when measured
        layers.append(trace_layers(space.build(a, task).eval(), task.input_shape))
    return {**fit_networks(data, space, task, archs, layers, [n["measured"] for n in old["networks"]],
                           old.get("repeats", 0)), "date": old.get("date"), "load_avg": old.get("load_avg")}


def run_profile(jobs: list[tuple[Any, Task]], out: str | Path, *, name: str | None = None,
                timer: KernelTimer | None = None, calibration_networks: int = 80, calibration_repeats: int = 200,
                seed: int = 0, cuda: bool = False, progress: bool = True,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Profile every (space, task) of ``jobs`` into ``out`` (resuming ``out.partial``, extending ``out``)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out = Path(out).expanduser()
    timer = timer or KernelTimer()
    data = _start(out, name, timer, log)
    saver = _Saver(partial_path(out), data)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
        try:
            for space, task in jobs:
                profile_space(data, space, task, timer=timer, saver=saver, calibration_networks=calibration_networks,
                              calibration_repeats=calibration_repeats, seed=seed, cuda=cuda, progress=bar)
        except BaseException:  # Ctrl-C or a crash: keep what was timed for the next run
            saver.now()
            raise
    data["machine"]["load_avg_end"] = machine_info(timer.threads)["load_avg"]
    data["updated"] = now()
    write_json_atomic(out, data)
    partial_path(out).unlink(missing_ok=True)
    return data
