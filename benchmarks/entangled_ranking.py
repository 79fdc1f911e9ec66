"""How well does the weight-entangled g2g_mlp supernet rank architectures on MNIST-1D?

Runs ``nas search --space g2g_mlp --strategy entangled --dataset mnist1d`` (gradient search, sandwich
training, NSGA-II over inherited weights, >= 10 architectures retrained standalone) on a temporary
sqlite study, then retrains the same architectures standalone with a second seed, and prints:

- tau(inherited, standalone seed 0): what the strategy stores on the study (``kendall_tau``);
- tau(inherited, standalone mean of 2 seeds): the ranking figure, against a less noisy reference;
- tau(seed 0, seed 1): the reference's own noise ceiling (how well standalone training ranks itself).

    python benchmarks/entangled_ranking.py [--quick] [--json]

Everything runs at 1 torch thread. With ``--json`` the last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import optuna
import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table
from scipy.stats import kendalltau

from sparsenas.api import search
from sparsenas.data import load_dataset
from sparsenas.evaluators import TrainBudget, train
from sparsenas.search_spaces import get_space
from sparsenas.tracking import arch_of, trial_record


def _tau(a: list[float], b: list[float]) -> dict[str, float | None]:
    res = kendalltau(a, b)
    nan = res.statistic != res.statistic
    return {"tau": None if nan else round(float(res.statistic), 4), "p": None if nan else float(res.pvalue)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter supernet training and retraining (a smoke run)")
    ap.add_argument("--trials", type=int, default=None, help="architectures evaluated with inherited weights")
    ap.add_argument("--tau-archs", type=int, default=12, help="architectures retrained standalone (>= 10)")
    ap.add_argument("--search-epochs", type=int, default=None)
    ap.add_argument("--sandwich-epochs", type=int, default=None)
    ap.add_argument("--retrain-epochs", type=int, default=None)
    ap.add_argument("--finetune-steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    console = Console(stderr=args.json)
    opts = {"search_epochs": args.search_epochs or (2 if args.quick else 10),
            "sandwich_epochs": args.sandwich_epochs or (3 if args.quick else 30),
            "retrain_epochs": args.retrain_epochs or (4 if args.quick else 20),
            "tau_archs": args.tau_archs, "retrain_top": 3}
    if args.finetune_steps is not None:
        opts["finetune_steps"] = args.finetune_steps
    trials = args.trials or max(30, args.tau_archs + 2)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        study = search(space="g2g_mlp", strategy="entangled", dataset="mnist1d", trials=trials, lr=args.lr,
                       seed=args.seed, storage=f"sqlite:///{tmp}/nas.db", study="ranking", progress=not args.json,
                       options=opts)
        search_s = time.perf_counter() - t0
        done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        retrained = [t for t in done if trial_record(t).stage == "retrained"]
        attrs = dict(study.user_attrs)
    data = load_dataset("mnist1d", seed=args.seed)  # the split the search used
    space, task = get_space("g2g_mlp"), data.task
    budget = TrainBudget(epochs=opts["retrain_epochs"], lr=args.lr)
    rows = []
    t1 = time.perf_counter()
    for t in track(retrained, description="standalone, second seed", console=console):
        arch = arch_of(t)
        torch.manual_seed(args.seed + 1)  # the evaluator seeds the build with its seed: a second one here
        r = train(space.build(arch, task), data, budget, seed=args.seed + 1)
        rows.append({"arch": dict(arch.choices), "inherited": t.user_attrs["inherited_accuracy"],
                     "seed0": t.user_attrs["standalone_accuracy"], "seed1": r.val_accuracy})
    second_s = time.perf_counter() - t1
    inh = [r["inherited"] for r in rows]
    s0, s1 = [r["seed0"] for r in rows], [r["seed1"] for r in rows]
    mean = [(a + b) / 2 for a, b in zip(s0, s1)]
    figures = {"tau_inherited_seed0": _tau(inh, s0), "tau_inherited_mean2": _tau(inh, mean),
               "tau_inherited_seed1": _tau(inh, s1), "tau_seed0_seed1": _tau(s0, s1)}
    table = Table(title=f"g2g_mlp on mnist1d: {len(rows)} architectures (validation accuracy)")
    for col in ("depth", "widths", "G", "p_inter", "graph", "grouping", "inherited", "seed 0", "seed 1"):
        table.add_column(col, justify="right")
    for r in sorted(rows, key=lambda r: -r["inherited"]):
        a = r["arch"]
        table.add_row(str(a["depth"]), "x".join(str(a[f"h{i}_width"]) for i in range(1, a["depth"] + 1)),
                      str(a["ensembles"]), f"{a['p_inter']:g}", a["graph"], a["grouping"], f"{r['inherited']:.3f}",
                      f"{r['seed0']:.3f}", f"{r['seed1']:.3f}")
    console.print(table)
    for k, v in figures.items():
        console.print(f"Kendall {k}: {v['tau']} (p={v['p']:.3g})" if v["tau"] is not None else f"{k}: n/a")
    console.print(f"search {search_s:.0f} s (timings {attrs.get('entangled_timings')}), second seed {second_s:.0f} s; "
                  f"load average before/after {load_before} / {os.getloadavg()}")
    if args.json:
        spread = statistics.pstdev([a - b for a, b in zip(s0, s1)]) if len(rows) > 1 else None
        print(json.dumps({"benchmark": "entangled_ranking", "n": len(rows), "options": opts, "trials": trials,
                          "lr": args.lr, "figures": figures, "study_kendall_tau": attrs.get("kendall_tau"),
                          "search_seconds": round(search_s, 1), "second_seed_seconds": round(second_s, 1),
                          "timings": attrs.get("entangled_timings"), "seed_diff_std": spread, "rows": rows,
                          "derived": attrs.get("entangled_derived_arch"), "load_before": load_before,
                          "load_after": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
