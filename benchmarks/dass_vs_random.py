"""DASS against random search at equal wall-clock, on the same space and data.

DASS runs first (search, derivation, retraining of its derived architectures); random search then
gets the same wall-clock as ``--timeout`` (it finishes the trial it is in, so its own wall time is
printed too), with each architecture trained for as many epochs as DASS retrains its own and, on
sparse_darts, the sparsity pinned to the target (Optuna PartialFixedSampler) so that both compare at
the target sparsity. Printed side by side: best test accuracy at the target sparsity, and each
strategy's Pareto hypervolume of (accuracy up, latency down) with one shared reference point.

The 2-D hypervolume is computed here (sort by latency, sum rectangles): Optuna's implementation
lives in the private ``optuna._hypervolume`` module, with no stable API to depend on.

    PYTHONPATH=. python benchmarks/dass_vs_random.py [--quick] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch


def hypervolume_2d(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by ``points`` = [(accuracy, latency_ms)] (accuracy up, latency down) and bounded by
    ``ref`` = (accuracy floor, latency ceiling); points outside the reference box add nothing."""
    pts = sorted((lat, acc) for acc, lat in points if acc > ref[0] and lat < ref[1])
    area, best = 0.0, ref[0]
    for lat, acc in pts:  # by latency up: each point that beats every faster one adds a rectangle
        if acc > best:
            area += (ref[1] - lat) * (acc - best)
            best = acc
    return area


def _trials(study) -> list:
    import optuna

    return [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.values is not None and len(t.values) == 2]


def _at_target(trial, space: str, target: float) -> bool:
    if space == "sparse_darts":
        return abs(float(trial.params.get("sparsity", -1)) - target) < 1e-9
    return True  # sparse_mbv2 has per-block sparsities; every trial counts


def run(args: argparse.Namespace) -> dict:
    import sparsenas

    torch.set_num_threads(1)  # one core each, as the tests do; the other agents' load is steadier that way
    storage = args.storage or f"sqlite:///{tempfile.mkdtemp(prefix='dass_vs_random_')}/bench.db"
    common = dict(space=args.space, dataset=args.dataset, storage=storage, seed=args.seed, progress=not args.json,
                  input_size=args.input_size, limit=args.limit)
    dass_opts = {"target_sparsity": args.target_sparsity}
    if args.quick:
        dass_opts.update(search_epochs=1, retrain_epochs=2, retrain_top=2)
        if args.space == "sparse_darts":
            dass_opts.update(cells=3, search_cells=2)
    out: dict = {"space": args.space, "dataset": args.dataset, "target_sparsity": args.target_sparsity,
                 "quick": args.quick, "storage": storage, "load_before": os.getloadavg()}

    t0, c0 = time.perf_counter(), time.process_time()
    dass = sparsenas.search(strategy="dass", study="dass", options=dass_opts, **common)
    dass_wall, dass_cpu = time.perf_counter() - t0, time.process_time() - c0
    retrain_epochs = dass.user_attrs["dass_search"]["config"]["retrain_epochs"]

    random_opts = {"fixed": {"sparsity": args.target_sparsity}} if args.space == "sparse_darts" else {}
    if args.quick and args.space == "sparse_darts":
        random_opts["fixed"]["cells"] = 3
    t0, c0 = time.perf_counter(), time.process_time()
    rnd = sparsenas.search(strategy="random", study="random", trials=10_000, timeout=dass_wall,
                           epochs=retrain_epochs, options=random_opts, **common)
    rnd_wall, rnd_cpu = time.perf_counter() - t0, time.process_time() - c0
    out["load_after"] = os.getloadavg()

    studies = {"dass": (dass, dass_wall, dass_cpu), "random": (rnd, rnd_wall, rnd_cpu)}
    all_lat = [t.values[1] for s, _, _ in studies.values() for t in _trials(s)]
    ref = (0.0, 1.1 * max(all_lat)) if all_lat else (0.0, 1.0)
    out["reference_point"] = {"accuracy": ref[0], "latency_ms": ref[1]}
    for name, (study, wall, cpu) in studies.items():
        trials = _trials(study)
        at = [t for t in trials if _at_target(t, args.space, args.target_sparsity)]
        test = lambda t: t.user_attrs.get("test_accuracy") or 0.0  # noqa: E731
        best = max(at, key=lambda t: (t.values[0], test(t)), default=None)  # chosen on validation accuracy
        out[name] = {
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "architectures": len(trials),
            "at_target": len(at),
            "best_test_accuracy_at_target": None if best is None else round(test(best), 4),
            "best_val_accuracy_at_target": None if best is None else round(best.values[0], 4),
            "max_test_accuracy_at_target": round(max((test(t) for t in at), default=0.0), 4),
            "latency_ms_of_best": None if best is None else round(best.values[1], 4),
            "hypervolume_val": round(hypervolume_2d([(t.values[0], t.values[1]) for t in trials], ref), 4),
            "hypervolume_test": round(hypervolume_2d([(test(t), t.values[1]) for t in trials], ref), 4),
            "front": [{"trial": t.number, "val": round(t.values[0], 4), "test": round(test(t), 4),
                       "latency_ms": round(t.values[1], 4)} for t in study.best_trials],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="sparse_darts", choices=["sparse_darts", "sparse_mbv2"])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="cap on training samples")
    p.add_argument("--target-sparsity", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: a fresh sqlite file in a temp folder)")
    p.add_argument("--quick", action="store_true", help="tiny settings (8x8 digits, 400 samples, 1 search epoch)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)
    if args.quick:
        args.input_size = args.input_size or 8
        args.limit = args.limit or 400
    out = run(args)
    print(f"DASS vs random on {out['space']} / {out['dataset']} at sparsity {out['target_sparsity']} "
          f"(load average {out['load_before'][0]:.1f} -> {out['load_after'][0]:.1f} on {os.cpu_count()} cores)")
    rows = [("wall-clock s", "wall_s"), ("CPU s", "cpu_s"), ("architectures evaluated", "architectures"),
            ("... at the target sparsity", "at_target"), ("best test acc at target (picked on val)", "best_test_accuracy_at_target"),
            ("its val acc", "best_val_accuracy_at_target"), ("its latency ms", "latency_ms_of_best"),
            ("highest test acc at target", "max_test_accuracy_at_target"),
            ("hypervolume (val acc x ms)", "hypervolume_val"), ("hypervolume (test acc x ms)", "hypervolume_test")]
    print(f"{'':42s}{'dass':>12s}{'random':>12s}")
    for label, key in rows:
        print(f"{label:42s}{str(out['dass'][key]):>12s}{str(out['random'][key]):>12s}")
    print(f"hypervolume reference point: accuracy {out['reference_point']['accuracy']}, "
          f"latency {out['reference_point']['latency_ms']:.3f} ms (1.1x the slowest architecture of either)")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
