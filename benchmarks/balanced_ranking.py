"""How well do supernets rank the downsampling placements of pooling_resnet20? Kendall tau between
the supernet estimates and standalone training, for a single supernet (M=1) and a balanced
mixture (M=4), trained with the same number of steps in one run.

The paper's setting, scaled to this CPU: the 36 max-pool placements; each of a fixed sample of
placements (every 3rd plus the default 4-3-3, 13 of 36; all 36 with --all) is trained standalone from scratch; the
supernets train over all 36 paths, then every (placement, model) pair is scored on the validation
split and a placement's estimate is its best model's accuracy (the strategy's rule).

    python benchmarks/balanced_ranking.py [--quick] [--all] [--json]

With ``--json`` the last line of stdout is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table
from scipy.stats import kendalltau, spearmanr

from sparsenas.data import load_dataset
from sparsenas.evaluators import TrainBudget, train
from sparsenas.search_spaces import get_space
from sparsenas.search_spaces.pooling_resnet20 import placements
from sparsenas.supernets.balanced import BalancedMixture, pooling_path_supernet, train_mixture


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8x8 digits, fewer epochs (about 10 minutes on a loaded 2-core box)")
    ap.add_argument("--all", action="store_true", help="train all 36 placements standalone, not every 3rd")
    ap.add_argument("--size", type=int, default=None, help="digits input size (default 8 quick, 16 otherwise)")
    ap.add_argument("--standalone-epochs", type=int, default=None)
    ap.add_argument("--search-epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    size = args.size or (8 if args.quick else 16)
    e_alone = args.standalone_epochs or (12 if args.quick else 30)
    e_search = args.search_epochs or (30 if args.quick else 80)
    console = Console(stderr=args.json)
    data = load_dataset("digits", input_size=size, seed=args.seed)
    space, task = get_space("pooling_resnet20"), data.task
    paths = [space.default_arch(task).replace(placement=p, downsample="max") for p in placements()]
    default = placements().index("4-3-3")  # the standard ResNet20 placement is always trained
    sample = list(range(len(paths))) if args.all else sorted(set(range(0, len(paths), 3)) | {default})
    t0 = time.perf_counter()

    standalone: dict[int, tuple[float, float]] = {}
    for i in track(sample, description="standalone placements", console=console):
        torch.manual_seed(args.seed)
        model = space.build(paths[i], task)
        r = train(model, data, TrainBudget(epochs=e_alone, batch_size=32, lr=0.1, weight_decay=5e-4), seed=args.seed)
        standalone[i] = (r.val_accuracy, r.test_accuracy)
    t_alone = time.perf_counter() - t0

    results = {}
    truth = [standalone[i][1] for i in sample]  # test accuracy: never used by the supernets
    for m in (1, 4):
        t1 = time.perf_counter()
        torch.manual_seed(args.seed)
        mix = BalancedMixture(lambda: pooling_path_supernet(space, task), paths, m)
        with console.status(f"training M={m} supernet(s) for {e_search} epochs"):
            rep = train_mixture(mix, data, epochs=e_search, batch_size=32, lr=0.1, seed=args.seed)
            x, y = data.val.tensors
            scores = mix.score(x, y)
        est = scores.max(1).values
        tau = kendalltau([float(est[i]) for i in sample], truth)
        rho = spearmanr([float(est[i]) for i in sample], truth)
        best = int(est.argmax())
        results[m] = {"kendall_tau": float(tau.statistic), "kendall_p": float(tau.pvalue),
                      "spearman": float(rho.statistic), "estimates": [round(float(v), 4) for v in est],
                      "best_placement": paths[best]["placement"], "best_in_sample": best in standalone,
                      "best_standalone_test": standalone[best][1] if best in standalone else None,
                      "model_steps": rep.model_steps, "assignment": rep.assignment,
                      "seconds": round(time.perf_counter() - t1, 1)}

    table = Table(title=f"supernet ranking of {len(sample)} placements (digits {size}x{size}, max pool)")
    for col in ("", "M=1", "M=4"):
        table.add_column(col, justify="right")
    table.add_row("Kendall tau", *(f"{results[m]['kendall_tau']:.3f}" for m in (1, 4)))
    table.add_row("Kendall p", *(f"{results[m]['kendall_p']:.3f}" for m in (1, 4)))
    table.add_row("Spearman", *(f"{results[m]['spearman']:.3f}" for m in (1, 4)))
    table.add_row("best placement", *(results[m]["best_placement"] for m in (1, 4)))
    table.add_row("its standalone test acc", *(f"{results[m]['best_standalone_test']:.4f}"
                                               if results[m]["best_standalone_test"] is not None else "not sampled"
                                               for m in (1, 4)))
    table.add_row("steps per supernet", *(str(results[m]["model_steps"]) for m in (1, 4)))
    table.add_row("seconds", *(str(results[m]["seconds"]) for m in (1, 4)))
    console.print(table)
    ranked = sorted(sample, key=lambda i: -standalone[i][1])
    console.print("standalone test accuracy: " + ", ".join(f"{paths[i]['placement']} {standalone[i][1]:.3f}"
                                                           for i in ranked))
    out = {"dataset": f"digits{size}", "sample": [paths[i]["placement"] for i in sample],
           "standalone": {paths[i]["placement"]: {"val": standalone[i][0], "test": standalone[i][1]} for i in sample},
           "standalone_epochs": e_alone, "search_epochs": e_search, "standalone_seconds": round(t_alone, 1),
           "default_4_3_3_test": standalone.get(default, (None, None))[1],
           "M1": results[1], "M4": results[4], "load": os.getloadavg()}
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
