"""Whole networks built and timed end to end, as the search's ``measured`` latency does.

Each network is the runtime's artifact built with the table's kernel choice
(``runtime.prepare(model, input_shape, table.choose)``: ``to_inference`` for torch, the exported
ONNX graph in a session for ONNX Runtime) run at batch 1 with one thread: the protocol of
:func:`sparsenas.evaluators.latency.measure_latency`, median of >= 100 calls with thread CPU time
beside wall time. The one difference: several networks are timed *interleaved*
(:func:`sparsenas.timing.time_interleaved`, blocks of a few calls in rotated rounds) so that they
all see the same load on a shared machine; timed one after another, the same network's median moved
by up to 2x between blocks a few seconds apart here (load average 3-9 on 2 cores).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..arch import Arch
from ..ops import trace_layers
from ..ops.spec import LayerSpec
from ..runtimes import Runtime, get_runtime
from ..runtimes.base import Runner
from ..task import Task
from ..timing import Timing, time_interleaved

__all__ = ["Network", "build_network", "measure_networks", "sample_archs"]


@dataclass
class Network:
    """One architecture as the table predicts it and as it runs."""

    arch: Arch
    layers: list[LayerSpec]        # of the training model (what space.layers gives the table)
    runs: list[Runner]             # batch-1 inference of the runtime's artifact (kernels chosen by the table),
                                   # one per loaded copy (Runtime.network_copies)


def sample_archs(space: Any, task: Task, n: int, seed: int, exclude: set[str] = frozenset()) -> list[Arch]:
    """``n`` distinct random architectures (none whose digest is in ``exclude``)."""
    rng = random.Random(seed)
    out: list[Arch] = []
    seen = set(exclude)
    for _ in range(100 * n):
        if len(out) == n:
            break
        a = space.sample(rng, task)
        if a.digest() not in seen:
            seen.add(a.digest())
            out.append(a)
    return out


def build_network(space: Any, arch: Arch, task: Task, choose: Callable[[LayerSpec], str],
                  runtime: Runtime | str, seed: int = 0) -> Network:
    rt = get_runtime(runtime)
    torch.manual_seed(seed)  # the same weights, hence the same masks, every time
    model = space.build(arch, task).eval()
    layers = trace_layers(model, task.input_shape)
    return Network(arch, layers, rt.prepare_copies(model, task.input_shape, choose))


def measure_networks(nets: list[Network], *, repeats: int = 100, rounds: int = 20, warmup: int = 10,
                     metric: str = "cpu_p10_ms") -> list[Timing]:
    """Median, IQR and 10th percentile of wall and thread-CPU time of one batch-1 call of each
    network, all copies of all networks interleaved; per network, its fastest copy by ``metric``."""
    fns = {f"{i}#{c}": r for i, n in enumerate(nets) for c, r in enumerate(n.runs)}
    with torch.inference_mode():
        t = time_interleaved(fns, warmup=warmup, repeats=repeats, rounds=rounds, threads=1)
    return [min((t[f"{i}#{c}"] for c in range(len(n.runs))), key=lambda x: getattr(x, metric))
            for i, n in enumerate(nets)]
