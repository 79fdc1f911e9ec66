"""The speed anchor: how fast this machine runs *now* compared with when the profile was measured.

A profile's timings belong to the moment they were taken. On a shared VM the whole machine gets
faster or slower by 5-25% between runs minutes apart (other tenants on the host, frequency), and
it does so nearly uniformly: after the 10th-percentile statistic removed the per-call noise, one
factor measured in the same run took 50 random sparse_mbv2 networks from 18-98% to 100% within
+-10% of measured (four samples), while the calibrated model's Spearman was already 0.985-0.996.
So the table is anchored: a few of the profile's own calibration networks (stored with the
architecture and the time they took when profiled) are re-timed now, and the median ratio
now/then scales every calibrated prediction. The networks a search or a validation judges are
never among them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..arch import Arch
from ..task import Task
from ..timing import Timing
from .measure import Network, build_network, measure_networks

if TYPE_CHECKING:  # the table calls this module (LatencyTable.anchor); this module only reads a table
    from .table import LatencyTable

__all__ = ["Anchor", "anchor_networks", "speed_factor", "measure_anchor"]

ANCHOR_NETWORKS = 16


@dataclass(frozen=True)
class Anchor:
    """``speed``: time now / time when profiled (1.1 = the machine is 10% slower now)."""

    speed: float
    networks: int
    spread: float  # inter-quartile range of the per-network ratios: how uniform the change is

    def to_dict(self) -> dict[str, float]:
        return {"speed": self.speed, "networks": self.networks, "spread": self.spread}


def anchor_networks(table: LatencyTable, space: Any, task: Task, n: int = ANCHOR_NETWORKS
                    ) -> tuple[list[dict[str, Any]], list[Network]]:
    """The first ``n`` calibration networks of ``space`` at ``task``'s input, as stored and as built."""
    refs = table.calibration(space.name, task.input_shape).get("networks", [])[:n]
    nets = [build_network(space, space.upgrade(Arch.from_dict(r["arch"])), task, table.choose, table.runtime)
            for r in refs]
    return refs, nets


def speed_factor(table: LatencyTable, refs: Sequence[dict[str, Any]], timings: Sequence[Timing]) -> Anchor:
    """The anchor from re-timed calibration networks (``timings`` in the order of ``refs``)."""
    ratios = np.array([getattr(t, table.metric) / r["measured"][table.metric] for t, r in zip(timings, refs)])
    if not len(ratios):
        return Anchor(1.0, 0, 0.0)
    q1, med, q3 = np.percentile(ratios, [25, 50, 75])
    return Anchor(float(med), len(ratios), float(q3 - q1))


def measure_anchor(table: LatencyTable, space: Any, task: Task, n: int = ANCHOR_NETWORKS,
                   repeats: int = 100) -> Anchor:
    """Re-time ``n`` calibration networks now (interleaved, the profile's statistic) and return the anchor."""
    import torch

    with torch.random.fork_rng():  # building seeds torch; a search's own random stream must not notice
        refs, nets = anchor_networks(table, space, task, n)
    timings = measure_networks(nets, repeats=repeats, rounds=10, metric=table.metric)
    return speed_factor(table, refs, timings)
