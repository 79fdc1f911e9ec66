"""Latency-table fidelity: predicted vs measured end-to-end latency of random architectures.

Builds N random architectures of a space (none of the profile's calibration networks), exports each
with the profile's kernel choice, times them end to end interleaved (batch 1, 1 thread, median of
>= 100 calls in the profile's statistic, 10th percentile of thread CPU time for profiles written now)
and compares the predictors side by side:

- **plain sum**: the sum of the isolated per-kernel timings of the profile;
- **calibrated, unanchored**: the profile's calibration for the space and input shape, at the speed
  the machine had when profiled;
- **calibrated, anchored**: the same times the speed anchor, 16 calibration networks re-timed in the
  same run (what a search uses; the one judged).

Figures: MAPE, share within +-10%, Spearman rho, median predicted/measured; the bar is >= 95%
within +-10% and rho >= 0.95. Also prints the load average before/after, since the machine is shared.

    python benchmarks/latency_fidelity.py [--hw PROFILE.json | --runtime torch] [--space sparse_mbv2]
                                          [--input-size 16] [--n 50] [--plot fidelity.png] [--json]

With ``--json`` the last line of stdout is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import time

from rich.console import Console
from rich.table import Table

from sparsenas.data import load_dataset
from sparsenas.hwprofiles import LatencyTable
from sparsenas.hwprofiles.validate import report_rows, validate
from sparsenas.search_spaces import get_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hw", default=None, help="profile (default: the one shipped with sparsenas for --runtime)")
    ap.add_argument("--runtime", default=None, help="the profile's runtime (default: the default runtime, or --hw's)")
    ap.add_argument("--space", default="sparse_mbv2")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--n", type=int, default=50, help="random architectures (default 50)")
    ap.add_argument("--repeats", type=int, default=200, help="timed calls per network (default 200)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--plot", default="latency_fidelity.png", help="scatter plot path")
    ap.add_argument("--json", action="store_true", help="print all figures as one JSON object on the last line")
    args = ap.parse_args()

    table = LatencyTable.load(args.hw, args.runtime)
    space = get_space(args.space)
    task = load_dataset(args.dataset or space.default_dataset, input_size=args.input_size, limit=1).task
    load_before = os.getloadavg()
    t0 = time.monotonic()
    r = validate(table, space, task, n=args.n, seed=args.seed, repeats=args.repeats, plot=args.plot)
    seconds = time.monotonic() - t0
    load_after = os.getloadavg()
    cal = table.calibration(space.name, task.input_shape)

    console = Console()
    t = Table(title=f"latency fidelity: {table.name} ({table.runtime_name}), {space.name} {task.input_shape}, "
                    f"{r['n']} random networks, measured = {r['metric']}")
    for col in ("predictor", "MAPE", "within ±10%", "Spearman", "pred/meas (median)", "max |err|"):
        t.add_column(col, justify="right")
    for label, f in report_rows(r):
        t.add_row(label, f"{f['mape']:.1%}", f"{f['within_10']:.0%}", f"{f['spearman']:.3f}",
                  f"{f['median_ratio']:.2f}", f"{f['max_abs_error']:.0%}")
    console.print(t)
    loo = cal.get("leave_one_out", {})
    console.print(f"calibration ({cal.get('date')}, {len(cal.get('networks', []))} networks, load {cal.get('load_avg')}): "
                  f"leave-one-out within ±10% {loo.get('within_10', float('nan')):.0%}, MAPE {loo.get('mape', float('nan')):.1%}")
    console.print(f"bar (>= 95% within ±10%, Spearman >= 0.95): {'met' if r['passed'] else 'missed'}; "
                  f"load average {load_before[0]:.1f} -> {load_after[0]:.1f}; {seconds:.0f} s; plot {args.plot}")
    if args.json:
        out = {k: v for k, v in r.items() if k != "networks"}
        out.update({"seconds": round(seconds, 1), "load_avg_before": load_before, "load_avg_after": load_after,
                    "calibration_leave_one_out": loo})
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
