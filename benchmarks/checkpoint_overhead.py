"""What a supernet's checkpoints cost per epoch: written after every epoch (as before), as often as
writes stay ~5% of the training (``_CheckpointWriter``, now), and not at all.

The entangled supernet of g2g_mlp on mnist1d (96 training samples, batch 32: epochs of ~20 ms, where
a 6.6 MB checkpoint written and fsync'd after each would weigh most), a fixed number of epochs, the
three ways interleaved for ``--rounds`` rounds in one process; the ratios are of median ms per epoch.

    python benchmarks/checkpoint_overhead.py [--rounds 3] [--epochs 400] [--json]

With ``--json`` the last line of stdout is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import sparsenas
import sparsenas.strategies.entangled as entangled
import sparsenas.strategies.supernet as supernet

MODES = ("every epoch", "throttled", "none")


def epoch_ms(mode: str, storage: str, epochs: int) -> float:
    """One run: the supernet's training time per epoch, in ms."""
    real_save, real_train, share = supernet.save_checkpoint, supernet.train_supernet, supernet._CheckpointWriter.WRITE_SHARE
    timed: dict[str, float] = {}

    def train(*args, **kwargs):
        t0 = time.perf_counter()
        history = real_train(*args, **kwargs)
        timed["ms"] = (time.perf_counter() - t0) * 1000 / len(history)
        return history

    supernet._CheckpointWriter.WRITE_SHARE = 1e9 if mode == "every epoch" else share  # 1e9: every epoch is due
    if mode == "none":
        supernet.save_checkpoint = lambda path, state: None
    entangled.train_supernet = train
    try:
        gradient = epochs // 4
        sparsenas.search(space="g2g_mlp", strategy="entangled", dataset="mnist1d", trials=1, limit=96, batch_size=32,
                         storage=storage, study="c", progress=False,
                         options={"search_epochs": gradient, "sandwich_epochs": epochs - gradient, "sandwich_random": 1,
                                  "retrain_epochs": 0, "tau_archs": 0, "finetune_steps": 0})
    finally:
        supernet.save_checkpoint, entangled.train_supernet = real_save, real_train
        supernet._CheckpointWriter.WRITE_SHARE = share
    return timed["ms"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args()
    runs: dict[str, list[float]] = {m: [] for m in MODES}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ckpt-bench-") as d:
        n = 0
        for _ in range(args.rounds):
            for mode in MODES:
                n += 1
                runs[mode].append(epoch_ms(mode, f"sqlite:///{d}/{n}.db", args.epochs))
    median = {m: statistics.median(v) for m, v in runs.items()}
    for m in MODES:
        print(f"{m:12s} {median[m]:6.1f} ms/epoch  x{median[m] / median['none']:.2f} of no checkpoint  "
              f"({', '.join(f'{v:.1f}' for v in runs[m])})")
    if args.json:
        print(json.dumps({"benchmark": "checkpoint_overhead", "epochs": args.epochs, "rounds": args.rounds,
                          "ms_per_epoch": runs, "median_ms_per_epoch": median,
                          "ratio_to_none": {m: median[m] / median["none"] for m in MODES},
                          "write_share": supernet._CheckpointWriter.WRITE_SHARE,
                          "load_before": load_before, "load_after": os.getloadavg()}))


if __name__ == "__main__":
    main()
