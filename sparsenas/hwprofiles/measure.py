"""Whole networks built and timed end to end, as the search's ``measured`` latency does.

Each network is ``to_inference(model, input_shape, choose=table.choose)`` run at batch 1 with one
thread under ``inference_mode``: the protocol of
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
from torch import nn

from ..arch import Arch
from ..ops import to_inference, trace_layers
from ..ops.spec import LayerSpec
from ..task import Task
from ..timing import Timing, time_interleaved

__all__ = ["Network", "build_network", "measure_networks", "sample_archs"]


@dataclass
class Network:
    """One architecture as the table predicts it and as it runs."""

    arch: Arch
    layers: list[LayerSpec]        # of the training model (what space.layers gives the table)
    inference: nn.Module           # the exported network, kernels chosen by the table


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


def build_network(space: Any, arch: Arch, task: Task, choose: Callable[[LayerSpec], str], seed: int = 0) -> Network:
    torch.manual_seed(seed)  # the same weights, hence the same masks, every time
    model = space.build(arch, task).eval()
    layers = trace_layers(model, task.input_shape)
    return Network(arch, layers, to_inference(model, task.input_shape, choose=choose))


def measure_networks(nets: list[nn.Module], input_shape: tuple[int, ...], *, repeats: int = 100,
                     rounds: int = 20, warmup: int = 10) -> list[Timing]:
    """Median (and IQR) wall and thread-CPU time of one batch-1 call of each network, interleaved."""
    x = torch.randn(1, *input_shape)
    fns = {str(i): (lambda m=m: m(x)) for i, m in enumerate(nets)}
    with torch.inference_mode():
        t = time_interleaved(fns, warmup=warmup, repeats=repeats, rounds=rounds, threads=1)
    return [t[str(i)] for i in range(len(nets))]
