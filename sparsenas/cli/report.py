"""`nas report`: Pareto front, search progress, alpha evolution and latency plots in one HTML page."""
from __future__ import annotations

import argparse
import sys

from .common import DEFAULT_STORAGE, print_json


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="plots of a search (Pareto front, progress, ...) and one HTML page",
                       description="Write pareto.png, progress.png (and alpha.png / latency.png when the study has "
                                   "the data) plus a self-contained report.html into --out.")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    p.add_argument("--study", default=None, help="study name (may be left out when the storage holds one study)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--baseline", choices=["auto", "train", "latency", "none"], default="auto",
                   help="how to mark the space's reference network (dense MobileNetV2 for sparse_mbv2): auto = its "
                        "trial when the study holds it, else its latency only; train = train it with the search's "
                        "budget and plot its point; latency = its latency only; none")
    p.add_argument("--latency-axis", choices=["objective", "cpu"], default="objective",
                   help="x axis of the Pareto plot: the search's latency objective (default), or the measured "
                        "thread CPU time, which stays comparable when other work loads the machine")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from ..api import report

    rep = report(args.storage, args.study, args.out, baseline=args.baseline,
                      latency_axis=args.latency_axis, log=lambda m: print(m, file=sys.stderr))
    print(f"report of study '{rep.figures['study']}' ({rep.figures['completed']} completed trials, front "
          f"{rep.figures['front']}): {args.out}/report.html with {', '.join(f for f in rep.files if f.endswith('.png'))}")
    for n in rep.notes:
        print(f"  {n}")
    if args.json:
        print_json(rep.to_dict())
    return 0
