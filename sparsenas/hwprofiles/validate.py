"""`nas profile --validate`: predicted vs measured end-to-end latency of random architectures.

The bar (issue 3, after nn-Meter): >= 95% of predictions within +-10% of the measured latency and
Spearman rho >= 0.95. Measured = the profile's metric (10th percentile of thread CPU time per call
for profiles written now, see :mod:`sparsenas.timing`) of the
exported network (the table's kernel choice), batch 1, 1 thread, >= 100 calls, all networks timed
interleaved (:mod:`.measure`).

The prediction is anchored the way a search anchors it (:mod:`.anchor`): 16 of the profile's own
calibration networks, never among the N judged, are re-timed in the same interleaved run, and the
median ratio now/then (``speed``) scales the calibrated predictions. The figures against the bar are
those anchored predictions; the unanchored ones (the machine's speed when profiled) and the plain
kernel sum are reported beside them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..arch import Arch
from ..task import Task
from .measure import build_network, measure_networks, sample_archs
from .profile import calibration_key
from .table import LatencyTable

__all__ = ["BAR_WITHIN_10", "BAR_SPEARMAN", "fidelity", "validate", "scatter_plot", "report_rows"]

BAR_WITHIN_10 = 0.95
BAR_SPEARMAN = 0.95


_DENSE_KERNELS = ("native", "dense", "grouped")


def fidelity(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """MAPE, share within +-10%, Spearman rho, median ratio predicted/measured."""
    from scipy.stats import spearmanr

    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    err = predicted / measured - 1.0
    varied = len(measured) > 1 and np.ptp(predicted) > 0 and np.ptp(measured) > 0
    rho = float(spearmanr(predicted, measured)[0]) if varied else float("nan")  # undefined for constant inputs
    return {"mape": float(np.mean(np.abs(err))), "within_10": float(np.mean(np.abs(err) <= 0.10)),
            "spearman": rho, "median_ratio": float(np.median(predicted / measured)),
            "max_abs_error": float(np.max(np.abs(err)))}


def scatter_plot(path: str | Path, measured: np.ndarray, predicted: np.ndarray, plain: np.ndarray,
                 title: str, metric: str, unanchored: np.ndarray | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 5.6), dpi=120)
    lo = 0.9 * min(measured.min(), predicted.min(), plain.min())
    hi = 1.1 * max(measured.max(), predicted.max(), plain.max())
    xs = np.linspace(lo, hi, 50)
    ax.fill_between(xs, 0.9 * xs, 1.1 * xs, color="tab:green", alpha=0.15, label="±10%")
    ax.plot(xs, xs, color="tab:green", lw=1)
    ax.scatter(measured, plain, s=14, color="tab:gray", marker="x", label="plain sum of kernel timings")
    if unanchored is not None:
        ax.scatter(measured, unanchored, s=10, color="tab:orange", alpha=0.6, label="calibrated, unanchored")
    ax.scatter(measured, predicted, s=16, color="tab:blue", label="calibrated table, anchored")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"measured end to end, ms ({metric})")
    ax.set_ylabel("predicted, ms")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def validate(table: LatencyTable, space: Any, task: Task, *, n: int = 50, seed: int = 1, repeats: int = 200,
             rounds: int = 20, anchor_networks: int = 16, plot: str | Path | None = None,
             log: Callable[[str], None] = lambda s: None, archs: list[Arch] | None = None) -> dict[str, Any]:
    """Build ``n`` random architectures (none of the calibration ones), or ``archs``, predict them
    and measure them in the profile's runtime (its exported artifact)."""
    from .anchor import anchor_networks as _anchor_networks
    from .anchor import speed_factor

    cal = table.calibration(space.name, task.input_shape)  # a clear error before any work
    metric = table.metric
    if archs is None:
        archs = sample_archs(space, task, n, seed=seed,
                             exclude={space.upgrade(Arch.from_dict(r["arch"])).digest() for r in cal.get("networks", [])})
    log(f"building {len(archs)} random {space.name} networks (+{anchor_networks} calibration networks as the "
        "speed anchor)")
    nets = [build_network(space, a, task, table.choose, table.runtime) for a in archs]
    table.speed.pop(calibration_key(space.name, task.input_shape), None)  # unanchored first; scaled below
    preds = [table.predict(net.layers, space.name, task.input_shape) for net in nets]
    ref_nets, refs = _anchor_networks(table, space, task, anchor_networks)
    log(f"timing {len(nets) + len(refs)} networks end to end, interleaved ({repeats} calls each)")
    timings = measure_networks(nets + refs, repeats=repeats, rounds=rounds, metric=metric)
    anchor = speed_factor(table, ref_nets, timings[len(nets):])
    measured = np.array([getattr(t, metric) for t in timings[:len(nets)]])
    measured_wall = np.array([t.wall_ms for t in timings[:len(nets)]])
    unanchored = np.array([p.ms for p in preds])
    predicted = unanchored * anchor.speed
    plain = np.array([p.plain_sum_ms for p in preds])
    anchored = fidelity(predicted, measured)
    report: dict[str, Any] = {
        "profile": table.name, "profile_path": table.path, "runtime": table.runtime.info(), "space": space.name, "input_shape": list(task.input_shape),
        "n": len(nets), "metric": metric, "repeats": repeats, "calibration": cal.get("date"),
        "anchored": anchored, "unanchored": fidelity(unanchored, measured), "plain_sum": fidelity(plain, measured),
        "anchored_vs_wall_median": fidelity(predicted, measured_wall),
        "speed": anchor.speed, "anchor": anchor.to_dict(),
        # networks that run at least one layer on a sparse kernel (the table's choice): where the profile's
        # sparse timings are put to the test
        "with_sparse_kernels": float(np.mean([any(k not in _DENSE_KERNELS for k in p.kernels) for p in preds])),
        "bar": {"within_10": BAR_WITHIN_10, "spearman": BAR_SPEARMAN},
        "passed": bool(anchored["within_10"] >= BAR_WITHIN_10 and anchored["spearman"] >= BAR_SPEARMAN),
        "networks": [{"digest": a.digest(), "predicted_ms": float(p), "unanchored_ms": float(u),
                      "plain_sum_ms": float(s), "measured_ms": float(m), "measured_wall_ms": float(w),
                      "kernels": pr.kernels}
                     for a, p, u, s, m, w, pr in zip(archs, predicted, unanchored, plain, measured, measured_wall,
                                                     preds)],
    }
    if plot is not None:
        title = (f"{table.name} ({table.runtime_name}): {space.name} {'x'.join(map(str, task.input_shape))}, n={len(nets)}, {metric}\n"
                 f"anchored (x{anchor.speed:.2f}): within ±10% {anchored['within_10']:.0%}, MAPE {anchored['mape']:.1%},"
                 f" Spearman {anchored['spearman']:.3f}\nwithin ±10%: unanchored {report['unanchored']['within_10']:.0%},"
                 f" plain kernel sum {report['plain_sum']['within_10']:.0%}")
        scatter_plot(plot, measured, predicted, plain, title, metric, unanchored)
        report["plot"] = str(plot)
    return report


def report_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """(label, figures) of each predictor in a :func:`validate` report, the one judged first: the
    calibrated table anchored to the machine's speed now, the same unanchored, the plain kernel sum."""
    return [(f"anchored (x{report['speed']:.2f})", report["anchored"]), ("unanchored", report["unanchored"]),
            ("plain kernel sum", report["plain_sum"]), ("anchored vs wall median", report["anchored_vs_wall_median"])]
