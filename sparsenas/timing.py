"""The one timing utility of the project (kernel choice, measured latency, profiler, benchmarks).

Measured facts behind the defaults (docs/measurements.md): MKL sparse kernels
collapse with more than one thread, so timings run with ``threads=1`` unless told otherwise; thread
CPU time is 3x less noisy than wall time on a shared machine, so both are recorded; candidates must
be compared in interleaved rounds, since absolute times drift by up to 1.7x between runs while
ratios measured side by side are reproducible to about 5%.

Besides the median, every timing keeps its 10th percentile (``*_p10_ms``). On this shared VM other
tenants' work only ever *adds* time to a call, and it comes in bursts, so per-call times are a
mixture of undisturbed and disturbed calls and their median jumps between the two: two copies of
the same 40 networks timed interleaved in one run agreed within +-10% on only 55% of networks by
median, but on 100% by 10th percentile (88% within +-5%). The lower tail is the machine's own
speed; hardware profiles use it (``cpu_p10_ms``) so that kernels and whole networks are compared
on the same undisturbed footing.
"""
from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

__all__ = ["Timing", "num_threads", "time_callable", "time_interleaved"]


@dataclass(frozen=True)
class Timing:
    """Medians, inter-quartile ranges and 10th percentiles of per-call times, in milliseconds.

    ``cpu_ms`` is the calling thread's CPU time (``time.thread_time_ns``); with ``threads > 1`` it
    does not include the work of torch's worker threads.
    """

    wall_ms: float
    cpu_ms: float
    wall_iqr_ms: float
    cpu_iqr_ms: float
    repeats: int
    threads: int
    wall_p10_ms: float = float("nan")
    cpu_p10_ms: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def num_threads(threads: int | None) -> Iterator[int]:
    """Run a block with ``torch.set_num_threads(threads)`` (None: leave as is), then restore."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextmanager
def _gc_paused() -> Iterator[None]:
    # A collection in the middle of a timed call adds milliseconds to one sample (as timeit does).
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _record(fn: Callable[[], Any], calls: int, wall: list[int], cpu: list[int]) -> None:
    perf, thread = time.perf_counter_ns, time.thread_time_ns
    for _ in range(calls):
        c0, w0 = thread(), perf()
        fn()
        w1, c1 = perf(), thread()
        wall.append(w1 - w0)
        cpu.append(c1 - c0)


def _summarise(wall_ns: list[int], cpu_ns: list[int], threads: int) -> Timing:
    w = np.asarray(wall_ns, dtype=np.float64) / 1e6
    c = np.asarray(cpu_ns, dtype=np.float64) / 1e6
    wq = np.percentile(w, [10, 25, 50, 75])
    cq = np.percentile(c, [10, 25, 50, 75])
    return Timing(
        wall_ms=float(wq[2]), cpu_ms=float(cq[2]),
        wall_iqr_ms=float(wq[3] - wq[1]), cpu_iqr_ms=float(cq[3] - cq[1]),
        repeats=len(w), threads=threads, wall_p10_ms=float(wq[0]), cpu_p10_ms=float(cq[0]),
    )


def time_callable(
    fn: Callable[[], Any], *, warmup: int = 10, repeats: int = 100, threads: int | None = 1
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed calls; medians and IQRs.

    ``threads`` is set with ``torch.set_num_threads`` for the duration (None: unchanged) and
    restored afterwards. Autograd/inference mode is the caller's choice.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    wall: list[int] = []
    cpu: list[int] = []
    with num_threads(threads) as used, _gc_paused():
        for _ in range(warmup):
            fn()
        _record(fn, repeats, wall, cpu)
    return _summarise(wall, cpu, used)


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    *,
    warmup: int = 10,
    repeats: int = 100,
    threads: int | None = 1,
    rounds: int = 5,
) -> dict[str, Timing]:
    """Time several candidates under the same machine conditions.

    Each candidate is warmed up ``warmup`` times, then ``repeats`` calls per candidate are split
    over ``rounds`` rounds; in each round every candidate runs its block of calls, in an order
    rotated by one per round (so no candidate is always first after another's cache footprint).
    The first call of each block is untimed, to re-warm what the previous candidate evicted.
    Medians are over all timed calls of a candidate. Returns ``{name: Timing}`` in input order.
    """
    if not fns:
        return {}
    if repeats < 1 or rounds < 1:
        raise ValueError(f"repeats and rounds must be >= 1, got {repeats}, {rounds}")
    names = list(fns)
    rounds = min(rounds, repeats)
    per_round = [repeats // rounds + (r < repeats % rounds) for r in range(rounds)]
    wall: dict[str, list[int]] = {n: [] for n in names}
    cpu: dict[str, list[int]] = {n: [] for n in names}
    with num_threads(threads) as used, _gc_paused():
        for n in names:
            for _ in range(warmup):
                fns[n]()
        for r, calls in enumerate(per_round):
            shift = r % len(names)
            for n in names[shift:] + names[:shift]:
                fns[n]()
                _record(fns[n], calls, wall[n], cpu[n])
    return {n: _summarise(wall[n], cpu[n], used) for n in names}
