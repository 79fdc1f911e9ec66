"""Latency evaluators: how long the exported network takes for one input in the runtime it is
deployed in (:mod:`sparsenas.runtimes`; ONNX Runtime by default).

``measured`` times the runtime's artifact on this machine; the hardware-profile look-up table
registers itself here too, so the search picks either by name. Both record the runtime, and the
bytes of the artifact's weights in the smallest encoding that runtime loads (``model_bytes``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ..arch import Arch
from ..registry import Registry
from ..runtimes import Chooser, Runtime, get_runtime
from ..task import Task
from ..timing import time_callable

LATENCY: Registry = Registry("latency evaluator")


@dataclass
class LatencyResult:
    ms: float
    source: str                       # "measured" or "table:<profile name>"
    attrs: dict[str, Any] = field(default_factory=dict)


class LatencyEvaluator(Protocol):
    runtime: Runtime

    def prepare(self, space: Any, task: Task) -> None: ...  # before the first network (may time things once)

    def __call__(self, arch: Arch, model: nn.Module, task: Task) -> LatencyResult: ...


def _runtime_attrs(rt: Runtime, model: nn.Module, task: Task, choose: Chooser,
                   layers: list[tuple[str, Any]] | None = None) -> dict[str, Any]:
    size = rt.weight_bytes(model.cpu().eval(), task.input_shape, choose, layers)
    return {"runtime": rt.name, "runtime_version": rt.version(), "model_bytes": size["bytes"],
            "model_bytes_dense": size["dense_bytes"]}


def measure_latency(model: nn.Module, task: Task, *, runtime: Runtime | str | None = None,
                    choose: Chooser | None = None, warmup: int = 20, repeats: int = 100) -> dict[str, Any]:
    """The artifact of ``runtime`` (None: the default runtime) at batch 1, 1 thread, with ``choose``'s
    kernel per layer (default: the runtime's :meth:`~sparsenas.runtimes.Runtime.default_choice`); median of
    ``repeats`` calls with thread CPU time beside wall time (2 threads under load spread 48-146%
    per call), and the 10th percentiles that hardware profiles predict (``predicted_metric``)."""
    rt = get_runtime(runtime)
    choose = choose or rt.default_choice()
    run = rt.prepare(model.cpu().eval(), task.input_shape, choose)
    with torch.inference_mode():
        t = time_callable(run, warmup=warmup, repeats=repeats, threads=1)
    return {"measured_latency_ms": t.wall_ms, "measured_latency_cpu_ms": t.cpu_ms,
            "measured_latency_cpu_p10_ms": t.cpu_p10_ms, "measured_latency_wall_p10_ms": t.wall_p10_ms,
            "measured_latency_iqr_ms": t.wall_iqr_ms, "kernels": rt.kernels_in(model, task.input_shape, choose),
            "runtime": rt.name}


@LATENCY.register("measured")
class MeasuredLatency:
    def __init__(self, hw: str | None = None, repeats: int = 100, anchor: bool = True,
                 runtime: str | None = None) -> None:
        self.repeats, self.anchor = repeats, anchor
        self.runtime = get_runtime(runtime)  # None: the default runtime
        self.hw = hw  # a profile is not needed to measure; when one loads, its prediction is recorded beside
        self._table: "TableLatency | str | None" = None

    def prepare(self, space: Any, task: Task) -> None:
        """Nothing to prepare: every network is timed as it comes."""

    def __call__(self, arch: Arch, model: nn.Module, task: Task) -> LatencyResult:
        table = self._table.table.choose if isinstance(self._table, TableLatency) else None
        m = measure_latency(model, task, runtime=self.runtime, choose=table, repeats=self.repeats)
        m.update(self._prediction(arch, model, task))
        m.update(_runtime_attrs(self.runtime, model, task, table or (lambda spec: "dense")))
        return LatencyResult(m["measured_latency_ms"], f"measured:{self.runtime.name}", m)

    def _prediction(self, arch: Arch, model: nn.Module, task: Task) -> dict[str, Any]:
        """The table's prediction next to the measurement, or why there is none (not an error:
        measuring must not depend on a profile covering this space)."""
        from ..errors import SparseNASError

        try:
            if self._table is None:
                # the prediction beside an explicit measurement reads the profile cache, adds nothing to it
                self._table = TableLatency(self.hw, anchor=self.anchor, runtime=self.runtime.name, fill=False)
            if isinstance(self._table, str):
                return {"predicted_latency_error": self._table}
            t = self._table(arch, model, task)
        except SparseNASError as e:
            if self._table is None:
                self._table = str(e)
            return {"predicted_latency_error": str(e)}
        return {k: t.attrs[k] for k in ("predicted_latency_ms", "predicted_metric", "hw_profile", "hw_speed")}


@LATENCY.register("table")
class TableLatency:
    """Latency predicted from a hardware profile (:class:`sparsenas.hwprofiles.LatencyTable`): the
    kernels of the network, each with the implementation the profile finds fastest (the one
    ``to_inference(choose=table.choose)`` exports), through the profile's calibration for this
    space and input shape. ``hw``: a profile file; None: the profile shipped with sparsenas.

    With ``anchor`` (the default), the first prediction for a space and input shape re-times 16 of
    the profile's calibration networks (a second or two) and scales predictions by how much faster
    or slower this machine runs now than when it was profiled (:mod:`sparsenas.hwprofiles.anchor`).

    What the profile lacks (a calibration for this space and input, a network's kernels) is timed
    once on this machine, the profile's way, and kept in the per-user profile cache
    (:mod:`sparsenas.hwprofiles.cache`); with ``fill`` False the cache is only read, and a
    missing kernel is an error naming it."""

    def __init__(self, hw: str | None = None, anchor: bool = True, runtime: str | None = None,
                 fill: bool = True) -> None:
        from ..hwprofiles import LatencyTable
        from ..hwprofiles.cache import ProfileCache

        self.table = LatencyTable.load(hw, runtime=runtime)
        self.cache = ProfileCache(self.table, fill=fill)
        self.runtime = self.table.runtime
        self.anchor = anchor
        self._anchored: set[tuple[str, tuple[int, ...]]] = set()
        self._covered: set[tuple[str, tuple[int, ...]]] = set()

    def prepare(self, space: Any, task: Task) -> None:
        """Before the first network: time what the profile lacks to predict ``space`` at this input
        at all (its calibration), so a search's log says so before its trials start."""
        key = (space.name, tuple(task.input_shape))
        if key not in self._covered:
            self._covered.add(key)
            self.cache.cover(space, task)

    def _anchor(self, arch: Arch, task: Task) -> None:
        key = (arch.space, tuple(task.input_shape))
        if not self.anchor or key in self._anchored:
            return
        from ..search_spaces import get_space

        import time

        from ..log import logger

        self._anchored.add(key)
        self.runtime.require()  # re-timing needs the runtime installed
        started = time.perf_counter()
        a = self.table.anchor(get_space(arch.space), task)  # no calibration: a clear ProfileError, as predict() gives
        logger.info(f"set-up: speed anchor for profile {self.table.name}: {a.networks} calibration networks re-timed "
                    f"in {time.perf_counter() - started:.1f} s; this machine runs x{a.speed:.3f} the profile's times now")

    def __call__(self, arch: Arch, model: nn.Module, task: Task) -> LatencyResult:
        from ..ops import trace_named_layers

        from ..search_spaces import get_space

        space = get_space(arch.space)
        self.prepare(space, task)
        self._anchor(arch, task)
        named = trace_named_layers(model, task.input_shape)
        layers = [s for _, s in named]
        self.cache.add_layers(space, task, layers)
        p = self.table.predict(layers, arch.space, task.input_shape)
        cached = sorted({self.table.snap(s).key() for s in layers} & self.cache.supplied)
        attrs = {"predicted_latency_ms": p.ms, "predicted_metric": p.metric, "hw_profile": p.profile,
                 "hw_speed": p.speed, "hw_profile_path": self.table.path, "kernel_sum_ms": p.plain_sum_ms,
                 **({"hw_cache": str(self.cache.path), "hw_cache_kernels": len(cached)} if cached else {}),
                 "kernels": {name: impl for (name, _), impl in zip(named, p.kernels)},
                 **_runtime_attrs(self.runtime, model, task, self.table.choose, named)}
        return LatencyResult(p.ms, f"table:{p.profile}", attrs)


def profile_prediction(space: Any, arch: Arch, task: Task, runtime: str, hw: str | None = None) -> Any:
    """The hardware profile's prediction for ``arch`` in ``runtime`` as it stands now: calibrated
    when the profile covers this space and input shape, else the plain sum of its kernels; never
    scaled by a speed anchor (a search's figures are). The one prediction `nas inspect` and the
    export card print, so the two agree. Kernels the profile lacks: ProfileError."""
    from ..hwprofiles import LatencyTable, ProfileError

    table = LatencyTable.load(hw, runtime)
    layers = space.layers(arch, task)
    try:
        return table.predict(layers, space.name, task.input_shape)
    except ProfileError:
        if table.missing(layers):
            raise
        return table.predict(layers)  # covered kernels, no calibration for this space/input: isolated kernel times
