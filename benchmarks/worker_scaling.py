"""Worker scaling and per-trial platform overhead of a multi-trial search.

Part 1 runs the same tiny search (sparse_mbv2 on 8x8 digits, 1 epoch, latency from the shipped
profile) with 1 and with 2 local workers (``search(workers=K)``) on a fresh sqlite study each, and
reports trials per minute side by side: over the whole call (process start-up included) and over
the trials themselves (first trial start to last trial end). Goal on 2 cores: >= 1.7x with 2 workers.

Part 2 trains the networks of the 1-worker study again in a bare loop (build + the same ``train``
call, nothing recorded) and reports the platform's overhead per trial: trial wall time minus the
bare loop's time for the same network, as a share of the trial. Goal: <= 3%.

    python benchmarks/worker_scaling.py [--trials N] [--json]

Other work on the machine changes both figures; run it on an otherwise idle machine.
With ``--json`` the last line of stdout is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table

import sparsenas
from sparsenas.data import load_dataset
from sparsenas.evaluators import TrainBudget, train
from sparsenas.search_spaces import get_space
from sparsenas.tracking import arch_of

SETTINGS = dict(space="sparse_mbv2", dataset="digits", input_size=8, strategy="random", epochs=1, limit=600,
                batch_size=32, lr=0.05, latency="table", hw_anchor=False, seed=0, progress=False)


def run_search(workers: int, trials: int, folder: str) -> tuple[dict, object]:
    url = f"sqlite:///{os.path.join(folder, f'w{workers}.db')}"
    t0 = time.perf_counter()
    study = sparsenas.search(**SETTINGS, trials=trials, workers=workers, threads=workers, storage=url,
                             study=f"scaling-{workers}")
    wall = time.perf_counter() - t0
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return {"workers": workers, "trials": len(done), "wall_s": round(wall, 2), "trials_span_s": round(span, 2),
            "trials_per_min": round(60 * len(done) / wall, 2),
            "trials_per_min_steady": round(60 * len(done) / span, 2)}, study


def bare_overhead(study) -> dict:
    """Trial wall time against build + train of the same network in a plain loop."""
    data = load_dataset(SETTINGS["dataset"], input_size=SETTINGS["input_size"], seed=SETTINGS["seed"],
                        limit=SETTINGS["limit"])
    space = get_space(SETTINGS["space"])
    budget = TrainBudget(epochs=SETTINGS["epochs"], batch_size=SETTINGS["batch_size"], lr=SETTINGS["lr"])
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name != "COMPLETE" or "duplicate_of" in t.user_attrs:  # a duplicate trains nothing
            continue
        t0 = time.perf_counter()
        torch.manual_seed(SETTINGS["seed"])
        model = space.build(arch_of(t), data.task)
        train(model, data, budget, seed=SETTINGS["seed"])
        bare = time.perf_counter() - t0
        trial = (t.datetime_complete - t.datetime_start).total_seconds()
        rows.append((trial, bare))
    total_trial, total_bare = sum(r[0] for r in rows), sum(r[1] for r in rows)
    return {"networks": len(rows), "trial_s_mean": round(total_trial / len(rows), 3),
            "bare_s_mean": round(total_bare / len(rows), 3),
            "overhead_ms_per_trial": round(1000 * (total_trial - total_bare) / len(rows), 1),
            "overhead_share": round((total_trial - total_bare) / total_trial, 4),
            "overhead_share_median": round(statistics.median((a - b) / a for a, b in rows), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=16, help="trials per search (default 16)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    console = Console(stderr=args.json)
    with tempfile.TemporaryDirectory() as folder:
        one, study1 = run_search(1, args.trials, folder)
        two, _ = run_search(2, args.trials, folder)
        overhead = bare_overhead(study1)
    speedup = round(two["trials_per_min"] / one["trials_per_min"], 2)
    steady = round(two["trials_per_min_steady"] / one["trials_per_min_steady"], 2)
    table = Table(title=f"{args.trials} trials of sparse_mbv2 on 8x8 digits, 1 epoch ({os.cpu_count()} cores)")
    for col in ("workers", "wall s", "trials/min", "trials/min (trials only)"):
        table.add_column(col, justify="right")
    for r in (one, two):
        table.add_row(str(r["workers"]), f"{r['wall_s']:.1f}", f"{r['trials_per_min']:.1f}",
                      f"{r['trials_per_min_steady']:.1f}")
    console.print(table)
    console.print(f"2 workers / 1 worker: {speedup:.2f}x over the whole call, {steady:.2f}x over the trials "
                  "(goal >= 1.7x on 2 cores)")
    console.print(f"platform overhead per trial: {overhead['overhead_ms_per_trial']:.0f} ms of "
                  f"{overhead['trial_s_mean'] * 1000:.0f} ms = {100 * overhead['overhead_share']:.1f}% "
                  f"(median {100 * overhead['overhead_share_median']:.1f}%; goal <= 3%), against a bare "
                  f"build+train loop over the same {overhead['networks']} networks")
    if args.json:
        print(json.dumps({"cores": os.cpu_count(), "one_worker": one, "two_workers": two, "speedup": speedup,
                          "speedup_trials_only": steady, "speedup_goal": 1.7, "overhead": overhead,
                          "overhead_goal": 0.03, "settings": {k: v for k, v in SETTINGS.items() if k != "progress"}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
