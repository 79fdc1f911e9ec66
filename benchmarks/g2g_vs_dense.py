"""G2G MLP vs the dense MLP of the same widths on MNIST-1D, and the best g2g_mlp a search finds.

Part 1 trains, on the same data, seeds and budget: the dense MLP, the G2G MLP at G2GNet's
setting (G=8, p_inter=0.15: 74% of the hidden weights zero), and the same with dynamic sparse
training (SET prune, Hebbian regrow). Part 2 runs a TPE search over the whole g2g_mlp space
(accuracy objective, validation split) and reports the test accuracy of the architecture it
picks. Reference: the MNIST-1D paper's MLP gets 68% test accuracy.

    python benchmarks/g2g_vs_dense.py [--quick] [--json]

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

from sparsenas.data import load_dataset
from sparsenas.evaluators import TrainBudget, count_params, train
from sparsenas.ops import sparse_modules
from sparsenas.search_spaces import get_space
from sparsenas.search_spaces._g2g_mlp_modules import dense_twin

PAPER_MLP = 0.68


def hidden_sparsity(model: torch.nn.Module) -> float:
    layers = sparse_modules(model)
    total = sum(m.weight.numel() for m in layers)
    return 1.0 - sum(m.nnz() for m in layers) / total if total else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, 4 search trials")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--width", type=int, default=256, help="hidden width of the two layers compared")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--search-trials", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    seeds = args.seeds or (2 if args.quick else 3)
    trials = args.search_trials if args.search_trials is not None else (4 if args.quick else 10)
    console = Console(stderr=args.json)
    data = load_dataset("mnist1d", seed=0)
    space, task = get_space("g2g_mlp"), data.task
    base = space.default_arch(task).replace(h1_width=args.width, h2_width=args.width)
    variants = {"dense": None, "g2g": base, "g2g+dst": base.replace(dst="magnitude-hebbian")}
    budget = TrainBudget(epochs=args.epochs, batch_size=32, lr=args.lr)
    rows: dict[str, dict] = {}
    with console.status("training dense and G2G MLPs") as status:
        for name, arch in variants.items():
            accs, spars, nnzs = [], [], []
            for seed in range(seeds):
                status.update(f"training {name}, seed {seed}")
                torch.manual_seed(seed)
                model = space.build(base, task)
                if arch is None:
                    torch.manual_seed(seed)
                    model = dense_twin(model)
                else:
                    torch.manual_seed(seed)
                    model = space.build(arch, task)
                r = train(model, data, budget, seed=seed)
                accs.append(r.test_accuracy)
                spars.append(hidden_sparsity(model))
                nnzs.append(count_params(model)[1])
            rows[name] = {"test_accuracy": accs, "mean": statistics.mean(accs),
                          "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                          "hidden_sparsity": statistics.mean(spars), "nnz": int(statistics.mean(nnzs))}

    search_out: dict = {"trials": trials}
    if trials:
        from sparsenas.api import search

        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            study = search(space="g2g_mlp", strategy="tpe", dataset="mnist1d", trials=trials, epochs=args.epochs,
                           lr=args.lr, objective="accuracy", storage=f"sqlite:///{tmp}/g2g.db", study="g2g",
                           progress=not args.json)
            import optuna

            # pruned trials stopped early (MedianPruner): only finished ones compete
            done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
            best = max(done, key=lambda t: t.values[0])  # chosen on validation accuracy
            search_out.update(best_val=best.values[0], best_test=best.user_attrs.get("test_accuracy"),
                              best_params=best.params, best_nnz=best.user_attrs.get("nnz"),
                              best_params_total=best.user_attrs.get("params"),
                              all_test=[t.user_attrs.get("test_accuracy") for t in done],
                              pruned=len(study.trials) - len(done),
                              seconds=round(time.perf_counter() - t0, 1))

    table = Table(title=f"MNIST-1D test accuracy, 2 hidden layers of {args.width}, {args.epochs} epochs, {seeds} seeds")
    for col in ("network", "hidden sparsity", "non-zeros", "test acc (mean ± sd)", "per seed"):
        table.add_column(col, justify="right")
    for name, r in rows.items():
        table.add_row(name, f"{r['hidden_sparsity']:.1%}", f"{r['nnz']:,}", f"{r['mean']:.4f} ± {r['std']:.4f}",
                      " ".join(f"{a:.3f}" for a in r["test_accuracy"]))
    console.print(table)
    if trials:
        console.print(f"TPE search, {trials} trials: best (by validation) val {search_out['best_val']:.4f}, "
                      f"test {search_out['best_test']:.4f} vs the MNIST-1D paper's MLP {PAPER_MLP:.2f}; "
                      f"{search_out['best_params']}")
    out = {"epochs": args.epochs, "lr": args.lr, "width": args.width, "seeds": seeds, "variants": rows,
           "g2g_minus_dense": rows["g2g"]["mean"] - rows["dense"]["mean"],
           "g2g_dst_minus_dense": rows["g2g+dst"]["mean"] - rows["dense"]["mean"],
           "search": search_out, "paper_mlp": PAPER_MLP, "load": os.getloadavg()}
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
