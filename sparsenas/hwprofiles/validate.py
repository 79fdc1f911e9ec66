"""`nas profile --validate`: predicted vs measured end-to-end latency of random architectures.

The bar (issue 3, after nn-Meter): >= 95% of predictions within +-10% of the measured latency and
Spearman rho >= 0.95. Measured = the profile's metric (median thread CPU time by default) of the
exported network (the table's kernel choice), batch 1, 1 thread, >= 100 calls, all networks timed
interleaved (:mod:`.measure`).

A shared machine gets slower and faster as other work comes and goes. To tell that apart from a
model error, a few of the profile's own calibration networks are re-timed in the same run: the
median of (time now / time when profiled) is reported as ``drift``. The figures against the bar
are the raw ones; ``*_drift_adjusted`` (predictions times the drift) are shown beside them only as
a diagnosis.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..arch import Arch
from ..task import Task
from .measure import build_network, measure_networks, sample_archs
from .table import LatencyTable

__all__ = ["BAR_WITHIN_10", "BAR_SPEARMAN", "fidelity", "validate", "scatter_plot"]

BAR_WITHIN_10 = 0.95
BAR_SPEARMAN = 0.95


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
                 title: str, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 5.6), dpi=120)
    lo = 0.9 * min(measured.min(), predicted.min(), plain.min())
    hi = 1.1 * max(measured.max(), predicted.max(), plain.max())
    xs = np.linspace(lo, hi, 50)
    ax.fill_between(xs, 0.9 * xs, 1.1 * xs, color="tab:green", alpha=0.15, label="±10%")
    ax.plot(xs, xs, color="tab:green", lw=1)
    ax.scatter(measured, plain, s=14, color="tab:gray", marker="x", label="plain sum of kernel medians")
    ax.scatter(measured, predicted, s=16, color="tab:blue", label="calibrated table")
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
             rounds: int = 20, drift_networks: int = 16, plot: str | Path | None = None,
             log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Build ``n`` random architectures (none of the calibration ones), predict and measure them."""
    cal = table.calibration(space.name, task.input_shape)  # a clear error before any work
    metric = table.metric
    ref_nets = cal.get("networks", [])[:drift_networks]
    archs = sample_archs(space, task, n, seed=seed, exclude={r["digest"] for r in cal.get("networks", [])})
    log(f"building {len(archs)} random {space.name} networks (+{len(ref_nets)} calibration networks for drift)")
    nets = [build_network(space, a, task, table.choose) for a in archs]
    preds = [table.predict(net.layers, space.name, task.input_shape) for net in nets]
    refs = [build_network(space, Arch.from_dict(r["arch"]), task, table.choose) for r in ref_nets]
    log(f"timing {len(nets) + len(refs)} networks end to end, interleaved ({repeats} calls each)")
    timings = measure_networks([x.inference for x in nets + refs], task.input_shape, repeats=repeats, rounds=rounds)
    measured = np.array([getattr(t, metric) for t in timings[:len(nets)]])
    measured_wall = np.array([t.wall_ms for t in timings[:len(nets)]])
    predicted = np.array([p.ms for p in preds])
    plain = np.array([p.plain_sum_ms for p in preds])
    drift = float(np.median([getattr(t, metric) / r["measured"][metric]
                             for t, r in zip(timings[len(nets):], ref_nets)])) if refs else 1.0
    calibrated = fidelity(predicted, measured)
    report: dict[str, Any] = {
        "profile": table.name, "profile_path": table.path, "space": space.name, "input_shape": list(task.input_shape),
        "n": len(nets), "metric": metric, "repeats": repeats, "calibration": cal.get("date"),
        "calibrated": calibrated, "plain_sum": fidelity(plain, measured),
        "calibrated_vs_wall": fidelity(predicted, measured_wall),
        "drift": drift, "calibrated_drift_adjusted": fidelity(predicted * drift, measured),
        "bar": {"within_10": BAR_WITHIN_10, "spearman": BAR_SPEARMAN},
        "passed": bool(calibrated["within_10"] >= BAR_WITHIN_10 and calibrated["spearman"] >= BAR_SPEARMAN),
        "networks": [{"digest": a.digest(), "predicted_ms": float(p), "plain_sum_ms": float(s),
                      "measured_ms": float(m), "measured_wall_ms": float(w), "kernels": pr.kernels}
                     for a, p, s, m, w, pr in zip(archs, predicted, plain, measured, measured_wall, preds)],
    }
    if plot is not None:
        title = (f"{table.name}: {space.name} {'x'.join(map(str, task.input_shape))}, n={len(nets)}\n"
                 f"within ±10%: {calibrated['within_10']:.0%}, MAPE {calibrated['mape']:.1%}, "
                 f"Spearman {calibrated['spearman']:.3f} (plain sum: {report['plain_sum']['within_10']:.0%}, "
                 f"MAPE {report['plain_sum']['mape']:.1%})")
        scatter_plot(plot, measured, predicted, plain, title, metric)
        report["plot"] = str(plot)
    return report
