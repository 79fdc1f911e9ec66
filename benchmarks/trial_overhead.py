"""Platform overhead per trial of a multi-trial search: everything but training and evaluation.

Runs one in-process search (sparse_mbv2 on 8x8 digits, 1 epoch, latency from the shipped profile,
random sampler, a fresh sqlite study) and times, around the sampler strategy's loop, the whole loop
and the parts of each trial: building and training the network with its validation and test
evaluation (``Evaluator.build``, ``Evaluator.train``: the work a trial is for), and the platform's parts: the sampler and the storage writes of the
choices (``SearchSpace.suggest``), latency prediction, recording the architecture and the result,
cost counting, weight upload, and the rest (trial creation, tell, callbacks). Overhead = loop time
minus training, as a share of the loop, in wall time and in process CPU time (the CPU figure is the
one to read on a loaded machine). Goal: <= 5%.

    python benchmarks/trial_overhead.py [--trials N] [--storage sqlite|journal] [--json]

Before/after: run it with ``PYTHONPATH`` pointing at another checkout of sparsenas (parts that
checkout lacks are left out; they fall in "other").

With ``--json`` the last line of stdout is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any, Iterator

import optuna
import torch
from optuna.study import _optimize as optuna_optimize

import sparsenas
from sparsenas.evaluators import Evaluator
from sparsenas.search_spaces import get_space
from sparsenas.strategies.samplers import SamplerStrategy
from sparsenas.tracking import records
from sparsenas.tracking import Tracker

SETTINGS = dict(space="sparse_mbv2", dataset="digits", input_size=8, strategy="random", epochs=1, limit=600,
                batch_size=32, lr=0.05, latency="table", hw_anchor=False, seed=0, progress=False)

# (label, owner, attribute): the parts of a trial that are timed
PARTS = [("training", Evaluator, "train"), ("network build", Evaluator, "build"), ("sampling and choice writes", None, "suggest"),
         ("latency prediction", Evaluator, "latency"), ("cost counting", Evaluator, "result"),
         ("recording arch", Tracker, "record_arch"), ("recording latency", Tracker, "record_latency"),
         ("recording epochs", Tracker, "record_epoch"), ("recording result", Tracker, "record_result"),
         ("weight upload", Tracker, "save_weights"), ("batched storage writes", records, "write_buffered"),
         ("trial creation (ask)", optuna.Study, "ask"), ("tell", optuna_optimize, "_tell_with_warning"),
         ("worker record", Tracker, "record_worker"), ("target checks", Tracker, "surplus"),
         ("duplicate check", Tracker, "twin"), ("waiting for a slot", Tracker, "wait_for_slot"),
         ("loop", SamplerStrategy, "run")]


WORK = ("training", "network build")  # what a trial is for: the rest is the platform's


@contextlib.contextmanager
def timed(owner: Any, attr: str, label: str, totals: dict[str, list[float]]) -> Iterator[None]:
    original = getattr(owner, attr, None)
    if original is None:  # an older sparsenas (a before/after run) lacks some parts
        yield
        return

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        w, c = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            totals[label][0] += time.perf_counter() - w
            totals[label][1] += time.process_time() - c
            totals[label][2] += 1

    setattr(owner, attr, wrapper)
    try:
        yield
    finally:
        setattr(owner, attr, original)


def run(trials: int, storage: str) -> dict[str, Any]:
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    space_cls = type(get_space(SETTINGS["space"]))
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        for label, owner, attr in PARTS:
            stack.enter_context(timed(owner or space_cls, attr, label, totals))
        url = (f"sqlite:///{os.path.join(folder, 'o.db')}" if storage == "sqlite"
               else f"journal:///{os.path.join(folder, 'o.log')}")
        study = sparsenas.search(**SETTINGS, trials=trials, storage=url, study="overhead")
        done = sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))
    loop_w, loop_c, _ = totals["loop"]
    # per-epoch recording runs inside training (its on_epoch callback): it is the platform's
    train_w = sum(totals[k][0] for k in WORK) - totals["recording epochs"][0]
    train_c = sum(totals[k][1] for k in WORK) - totals["recording epochs"][1]
    parts = {label: {"wall_ms_per_trial": round(1000 * v[0] / done, 1), "cpu_ms_per_trial": round(1000 * v[1] / done, 1)}
             for label, v in totals.items() if label not in ("loop", *WORK)}
    named_w = sum(v[0] for k, v in totals.items() if k not in ("loop", *WORK))
    named_c = sum(v[1] for k, v in totals.items() if k not in ("loop", *WORK))
    parts["other"] = {
        "wall_ms_per_trial": round(1000 * (loop_w - train_w - named_w) / done, 1),
        "cpu_ms_per_trial": round(1000 * (loop_c - train_c - named_c) / done, 1)}
    return {"trials": done, "storage": storage,
            "trial_wall_ms": round(1000 * loop_w / done, 1), "trial_cpu_ms": round(1000 * loop_c / done, 1),
            "sparsenas": os.path.dirname(os.path.dirname(sparsenas.__file__)),
            "training_wall_ms": round(1000 * train_w / done, 1), "training_cpu_ms": round(1000 * train_c / done, 1),
            "overhead_wall_ms": round(1000 * (loop_w - train_w) / done, 1),
            "overhead_cpu_ms": round(1000 * (loop_c - train_c) / done, 1),
            "overhead_share_wall": round((loop_w - train_w) / loop_w, 4),
            "overhead_share_cpu": round((loop_c - train_c) / loop_c, 4), "parts": parts}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20, help="trials of the search (default 20)")
    ap.add_argument("--storage", choices=["sqlite", "journal"], default="sqlite")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    r = run(args.trials, args.storage)
    out = sys.stderr if args.json else sys.stdout
    print(f"{r['trials']} trials of sparse_mbv2 on 8x8 digits, 1 epoch, {args.storage} "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)", file=out)
    print(f"sparsenas from {os.path.dirname(os.path.dirname(sparsenas.__file__))}", file=out)
    print(f"per trial: {r['trial_wall_ms']:.0f} ms wall / {r['trial_cpu_ms']:.0f} ms CPU, of which building, training and "
          f"evaluating the network {r['training_wall_ms']:.0f} / {r['training_cpu_ms']:.0f} ms", file=out)
    for label, v in sorted(r["parts"].items(), key=lambda kv: -kv[1]["cpu_ms_per_trial"]):
        print(f"  {label:<55} {v['wall_ms_per_trial']:7.1f} ms wall {v['cpu_ms_per_trial']:7.1f} ms CPU", file=out)
    print(f"platform overhead: {r['overhead_wall_ms']:.0f} ms wall = {100 * r['overhead_share_wall']:.1f}%, "
          f"{r['overhead_cpu_ms']:.0f} ms CPU = {100 * r['overhead_share_cpu']:.1f}% (goal <= 5%)", file=out)
    if args.json:
        print(json.dumps({**r, "goal": 0.05, "load_average": round(os.getloadavg()[0], 2), "cores": os.cpu_count(),
                          "settings": {k: v for k, v in SETTINGS.items() if k != "progress"}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
