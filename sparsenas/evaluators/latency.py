"""Latency evaluators: how long the exported (inference) network takes for one input.

``measured`` times the real network on this machine; the hardware-profile look-up table registers
itself here too, so the search picks either by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ..arch import Arch
from ..ops import kernel_choices, to_inference
from ..registry import Registry
from ..task import Task
from ..timing import time_callable

LATENCY: Registry = Registry("latency evaluator")


@dataclass
class LatencyResult:
    ms: float
    source: str                       # "measured" or "table:<profile name>"
    attrs: dict[str, Any] = field(default_factory=dict)


class LatencyEvaluator(Protocol):
    def __call__(self, arch: Arch, model: nn.Module, task: Task) -> LatencyResult: ...


def measure_latency(model: nn.Module, task: Task, *, warmup: int = 20, repeats: int = 100) -> dict[str, Any]:
    """Batch 1, 1 thread, inference mode, sparse kernels in place; median of ``repeats`` calls with
    thread CPU time beside wall time (kernels.md: 2 threads under load spread 48-146% per call)."""
    inf = to_inference(model.cpu().eval(), task.input_shape)
    x = torch.randn(1, *task.input_shape)
    with torch.inference_mode():
        t = time_callable(lambda: inf(x), warmup=warmup, repeats=repeats, threads=1)
    return {"measured_latency_ms": t.wall_ms, "measured_latency_cpu_ms": t.cpu_ms,
            "measured_latency_iqr_ms": t.wall_iqr_ms, "kernels": kernel_choices(inf)}


@LATENCY.register("measured")
class MeasuredLatency:
    def __init__(self, hw: str | None = None, repeats: int = 100) -> None:
        self.repeats = repeats  # hw: a profile is not needed to measure

    def __call__(self, arch: Arch, model: nn.Module, task: Task) -> LatencyResult:
        m = measure_latency(model, task, repeats=self.repeats)
        return LatencyResult(m["measured_latency_ms"], "measured", m)
