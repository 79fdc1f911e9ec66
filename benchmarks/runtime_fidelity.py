"""Latency prediction per inference runtime, and how much the choice of runtime changes the ranking.

For each runtime with a hardware profile (the shipped torch, onnxruntime and mnn profiles, or ``--hw
RUNTIME=FILE``), the same N random architectures (none of any profile's calibration networks) are
exported as that runtime's artifact (the ONNX graph for ONNX Runtime and OpenVINO, model.mnn for MNN, the
``to_inference`` network for torch), timed end to end interleaved (batch 1, 1 thread, 10th
percentile of per-call thread CPU time over >= 100 calls, the statistic profiles predict) and
compared with the profile's anchored prediction: share within +-10%, MAPE, Spearman rho.

Then, across runtimes, the Spearman rho between their *measured* latencies of the same networks
(does a network that is fast in PyTorch eager stay fast in ONNX Runtime?) and the median ratio of
their times. Runtimes without a profile (OpenVINO unless ``--hw openvino=FILE``) are only measured.

    python benchmarks/runtime_fidelity.py [--space sparse_mbv2] [--input-size 16] [--n 50]
                                          [--runtimes torch,onnxruntime,openvino,mnn] [--hw onnxruntime=FILE] [--json]

With ``--json`` the last line of stdout is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from itertools import combinations

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr

from sparsenas.arch import Arch
from sparsenas.data import load_dataset
from sparsenas.errors import SparseNASError
from sparsenas.hwprofiles import LatencyTable, ProfileError
from sparsenas.hwprofiles.measure import build_network, measure_networks, sample_archs
from sparsenas.hwprofiles.validate import validate
from sparsenas.runtimes import RUNTIMES, get_runtime
from sparsenas.search_spaces import get_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="sparse_mbv2")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--input-size", type=int, default=16)
    ap.add_argument("--n", type=int, default=50, help="random architectures (default 50)")
    ap.add_argument("--repeats", type=int, default=200, help="timed calls per network (default 200)")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES.names()), help="comma-separated (default: all)")
    ap.add_argument("--hw", action="append", default=[], metavar="RUNTIME=FILE", help="a profile for a runtime")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print all figures as one JSON object on the last line")
    args = ap.parse_args()
    console = Console(stderr=True)
    space = get_space(args.space)
    task = load_dataset(args.dataset or space.default_dataset, input_size=args.input_size, limit=1).task
    files = dict(h.split("=", 1) for h in args.hw)
    names = [r for r in args.runtimes.split(",") if r]
    tables: dict[str, LatencyTable] = {}
    usable = []
    for name in names:
        try:
            get_runtime(name)
        except SparseNASError as e:
            console.print(f"[yellow]skipping {name}: {e}")
            continue
        usable.append(name)
        try:
            tables[name] = LatencyTable.load(files.get(name), name)
            tables[name].calibration(space.name, task.input_shape)
        except ProfileError as e:
            tables.pop(name, None)
            console.print(f"[yellow]{name}: measured only ({str(e).split('.')[0]})")
    exclude = {space.upgrade(Arch.from_dict(r["arch"])).digest() for t in tables.values()
               for r in t.calibration(space.name, task.input_shape).get("networks", [])}
    archs = sample_archs(space, task, args.n, seed=args.seed, exclude=exclude)
    load0, t0 = os.getloadavg(), time.time()
    measured: dict[str, np.ndarray] = {}
    per_runtime: dict[str, dict] = {}
    for name in usable:
        console.print(f"{name}: {len(archs)} networks, exported and timed end to end")
        if name in tables:
            rep = validate(tables[name], space, task, archs=archs, repeats=args.repeats)
            measured[name] = np.array([n["measured_ms"] for n in rep["networks"]])
            per_runtime[name] = {"profile": rep["profile"], "version": rep["runtime"]["version"],
                                 **{k: rep["anchored"][k] for k in ("within_10", "mape", "spearman", "median_ratio")},
                                 "speed_anchor": rep["speed"], "passed": rep["passed"],
                                 "median_measured_ms": float(np.median(measured[name]))}
        else:
            rt = get_runtime(name)
            nets = [build_network(space, a, task, lambda s: "dense", rt) for a in archs]
            measured[name] = np.array([t.cpu_p10_ms for t in measure_networks(nets, repeats=args.repeats)])
            per_runtime[name] = {"profile": None, "version": rt.version(),
                                 "median_measured_ms": float(np.median(measured[name]))}
    pairs = {}
    for a, b in combinations(measured, 2):
        pairs[f"{a} vs {b}"] = {"spearman_measured": float(spearmanr(measured[a], measured[b])[0]),
                                "median_time_ratio": float(np.median(measured[a] / measured[b]))}
    table = Table(title=f"{space.name} at {task.input_shape}, {len(archs)} random networks: predicted (anchored) "
                        "vs measured artifact, 10th percentile of thread CPU time")
    for col in ("runtime", "profile", "within ±10%", "MAPE", "Spearman", "median measured ms"):
        table.add_column(col, justify="right")
    for name, r in per_runtime.items():
        table.add_row(f"{name} {r['version']}", r["profile"] or "(none: measured only)",
                      f"{r['within_10']:.0%}" if "within_10" in r else "-", f"{r['mape']:.1%}" if "mape" in r else "-",
                      f"{r['spearman']:.3f}" if "spearman" in r else "-", f"{r['median_measured_ms']:.4f}")
    out = Console()
    out.print(table)
    cross = Table(title="the same networks across runtimes (measured)")
    for col in ("pair", "Spearman of measured latencies", "median time ratio"):
        cross.add_column(col, justify="right")
    for k, v in pairs.items():
        cross.add_row(k, f"{v['spearman_measured']:.3f}", f"{v['median_time_ratio']:.2f}x")
    out.print(cross)
    result = {"space": space.name, "input_shape": list(task.input_shape), "n": len(archs), "runtimes": per_runtime,
              "across_runtimes": pairs, "seconds": round(time.time() - t0, 1),
              "load_avg_before": [round(v, 2) for v in load0], "load_avg_after": [round(v, 2) for v in os.getloadavg()]}
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
