"""Deployed speed-up: the network a search found against the dense reference, end to end, per runtime.

DASS reports its sparse MobileNet-v2 3.87x faster than the dense one. This measures the same ratio
for a finished sparsenas study: the dense MobileNetV2-like reference (``space.default_arch``) is
trained with the study's own budget; the found network is the fastest completed trial (by the
study's latency objective) whose test accuracy is at least the reference's. Both are exported as
each runtime's artifact (the table's kernel choice where the runtime has a profile) and timed
interleaved, batch 1, 1 thread, 10th percentile of per-call thread CPU time over >= 100 calls.
Speed-up = reference / found, per runtime. Beside it, the share that sparse kernels give: the found
network once more with every layer on the runtime's dense op (``from sparse kernels`` = that time /
the found time; 1.0x in a runtime without sparse kernels).

When a ratio is small, it prints why, from the profile: the layers that dominate each network
(1x1, depthwise, stem, classifier), and what sparsity buys those layers in that runtime (each sparse
layer's profiled time at its sparsity against the same layer dense).

    python benchmarks/deploy_speedup.py --storage sqlite:///nas.db [--study S] [--runtimes torch,onnxruntime,mnn] [--json]

With ``--json`` the last line of stdout is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections import defaultdict

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from sparsenas.errors import SparseNASError
from sparsenas.export import retrain, search_budget
from sparsenas.hwprofiles import LatencyTable, ProfileError
from sparsenas.hwprofiles.measure import Network, measure_networks
from sparsenas.ops import trace_layers
from sparsenas.runtimes import RUNTIMES, get_runtime
from sparsenas.search_spaces import get_space
from sparsenas.task import Task
from sparsenas.tracking import arch_of, load_study, load_weights


def layer_kind(spec) -> str:
    if spec.op == "linear":
        return "classifier"
    if spec.groups > 1:
        return "depthwise kxk"
    return "1x1" if spec.kernel == 1 else "stem / kxk"


def breakdown(table: LatencyTable, layers) -> dict:
    """Profiled time per layer kind, and what sparsity saves on the sparse layers (vs the same dense)."""
    p = table.predict(layers)
    by_kind: dict[str, float] = defaultdict(float)
    sparse_ms = dense_ms = 0.0
    for spec, ms in zip(layers, p.layer_ms):
        by_kind[layer_kind(spec)] += ms
        if spec.sparsity > 0:
            sparse_ms += ms
            try:
                dense_ms += table.best(dataclasses.replace(spec, sparsity=0.0, blocks=0, permuted=False))[1]
            except ProfileError:
                dense_ms += ms
    total = sum(p.layer_ms)
    return {"kernel_sum_ms": total, "share_by_kind": {k: v / total for k, v in sorted(by_kind.items())},
            "sparse_layers_ms": sparse_ms, "same_layers_dense_ms": dense_ms,
            "sparsity_saves": 1 - sparse_ms / dense_ms if dense_ms else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--storage", default="sqlite:///nas.db")
    ap.add_argument("--study", default=None)
    ap.add_argument("--runtimes", default=",".join(RUNTIMES.names()))
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    console = Console(stderr=True)
    try:
        study = load_study(args.storage, args.study)
    except SparseNASError as e:
        raise SystemExit(f"{e}\nRun a search first, e.g. `nas search --space sparse_mbv2`.")
    sa = study.user_attrs
    space, task = get_space(sa["space"]), Task.from_dict(sa["task"])
    budget = search_budget(sa.get("config") or {})
    ref_arch = space.default_arch(task)
    console.print(f"training the dense reference {ref_arch.digest()} with the search's budget ({budget['epochs']} epochs)")
    ref_model, _, ref_fig = retrain(ref_arch, dataset=str(sa["dataset"]), measure=False, **budget)
    done = [t for t in study.trials if t.state.name == "COMPLETE" and t.user_attrs.get("test_accuracy") is not None]
    good = [t for t in done if t.user_attrs["test_accuracy"] >= ref_fig["test_accuracy"]]
    if not good:
        raise SystemExit(f"no trial of '{study.study_name}' reaches the reference's test accuracy "
                         f"{ref_fig['test_accuracy']:.4f}; nothing to compare at equal accuracy")
    found = min(good, key=lambda t: t.user_attrs.get("latency_ms", float("inf")))
    arch = arch_of(found)
    state = load_weights(args.storage, study, found)
    model = space.build(arch, task)
    if state is not None:
        model.load_state_dict(state)
    model.eval()
    torch.manual_seed(0)
    results, reasons = {}, {}
    for name in [r for r in args.runtimes.split(",") if r]:
        try:
            rt = get_runtime(name)
        except SparseNASError as e:
            console.print(f"[yellow]skipping {name}: {e}")
            continue
        try:
            table = LatencyTable.load(None, name)
            choose = table.choose
        except ProfileError:
            table, choose = None, (lambda s: "dense")
        dense = lambda s: "dense"  # noqa: E731  (every layer on the runtime's dense op)
        nets = [Network(a, trace_layers(m, task.input_shape), rt.prepare_copies(m, task.input_shape, c))
                for a, m, c in ((ref_arch, ref_model.eval(), choose), (arch, model, choose), (arch, model, dense))]
        ref_t, found_t, found_dense_t = measure_networks(nets, repeats=args.repeats)
        results[name] = {"version": rt.version(), "reference_ms": ref_t.cpu_p10_ms, "found_ms": found_t.cpu_p10_ms,
                         "speedup": ref_t.cpu_p10_ms / found_t.cpu_p10_ms,
                         "found_all_dense_ms": found_dense_t.cpu_p10_ms,
                         "from_sparse_kernels": found_dense_t.cpu_p10_ms / found_t.cpu_p10_ms,
                         "reference_wall_ms": ref_t.wall_ms, "found_wall_ms": found_t.wall_ms}
        if table is not None:
            try:
                reasons[name] = {"reference": breakdown(table, nets[0].layers), "found": breakdown(table, nets[1].layers)}
            except ProfileError:
                pass
    out = Console()
    t = Table(title=f"{study.study_name}: trial {found.number} (test {found.user_attrs['test_accuracy']:.4f}) vs dense "
                    f"reference (test {ref_fig['test_accuracy']:.4f}), measured end to end")
    for col in ("runtime", "reference ms", "found ms", "speed-up", "found, all dense ms", "from sparse kernels"):
        t.add_column(col, justify="right")
    for name, r in results.items():
        t.add_row(f"{name} {r['version']}", f"{r['reference_ms']:.4f}", f"{r['found_ms']:.4f}", f"{r['speedup']:.2f}x",
                  f"{r['found_all_dense_ms']:.4f}", f"{r['from_sparse_kernels']:.2f}x")
    out.print(t)
    for name, why in reasons.items():
        f, r = why["found"], why["reference"]
        kinds = ", ".join(f"{k} {v:.0%}" for k, v in sorted(r["share_by_kind"].items(), key=lambda kv: -kv[1]))
        out.print(f"{name}: the reference's kernel time is {kinds}. In the found network, sparse layers take "
                  f"{f['sparse_layers_ms'] * 1000:.1f} us against {f['same_layers_dense_ms'] * 1000:.1f} us for the same "
                  f"layers dense: sparsity saves {f['sparsity_saves']:.0%} there; the rest of the speed-up is "
                  "structure (fewer, narrower, shallower layers).")
    if args.json:
        print(json.dumps({"study": study.study_name, "trial": found.number, "arch": arch.to_dict(),
                          "found_test_accuracy": found.user_attrs["test_accuracy"],
                          "reference_test_accuracy": ref_fig["test_accuracy"], "runtimes": results, "why": reasons,
                          "load_avg": [round(v, 2) for v in os.getloadavg()]}))


if __name__ == "__main__":
    main()
