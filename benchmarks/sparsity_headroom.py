"""How much a found network's sparsity could buy: its sparse layers, and its architecture re-pruned.

``deploy_speedup.py`` reports the share of a found network's speed that sparse kernels give (the
network against itself with every layer dense). When that share is small, this says whether the
runtime's sparse kernels or the network's choices are the reason:

- per sparse 1x1 layer of the trial (from the runtime's shipped profile): shape, sparsity, mask
  form, the kernel the table runs it on and its time against the layer dense;
- per completed trial of the study: the profile's kernel sum with the table's kernels against all
  dense (what sparsity buys each network the search tried);
- the trial's architecture with every built 1x1 conv at each ``--at SPARSITY:CONN`` (its other
  choices unchanged), end to end: model.mnn (or the runtime's artifact) with the table's kernels
  against every layer dense, timed interleaved as ``deploy_speedup.py`` times (batch 1, 1 thread,
  10th percentile of per-call thread CPU time). Timing depends on the zero pattern, not on trained
  values, so these networks carry seeded random weights; the trial itself carries its own.

    python benchmarks/sparsity_headroom.py --storage sqlite:///nas.db --study S --trial 1 [--runtime R] \
        [--at 0.9:magnitude --at 0.9:magnitude_oc4] [--repeats 1000] [--json]

With ``--json`` the last line of stdout is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from sparsenas.hwprofiles import LatencyTable
from sparsenas.hwprofiles.measure import Network, measure_networks
from sparsenas.ops import trace_layers
from sparsenas.ops.spec import trace_named_layers
from sparsenas.runtimes import get_runtime
from sparsenas.search_spaces import get_space
from sparsenas.task import Task
from sparsenas.tracking import arch_of, load_study, load_weights, study_record


def kernel_sums(table: LatencyTable, layers) -> dict:
    """The profile's per-layer times summed: with the table's kernels, and every layer dense."""
    chosen = dense = 0.0
    for spec in layers:
        ms = table.best(spec)[1]
        chosen += ms
        dense += table.timings(spec).get("native", ms)
    return {"chosen_ms": chosen, "dense_ms": dense, "from_sparsity": dense / chosen}


def sparse_layers(table: LatencyTable, model, shape: tuple[int, ...]) -> list[dict]:
    """Each sparse 1x1 layer: shape, sparsity, mask form, the table's kernel and its time vs dense."""
    kinds = {n: getattr(m, "mask_kind", None) or type(m).__name__ for n, m in model.named_modules()}
    out = []
    for name, spec in trace_named_layers(model, shape):
        if spec.op != "conv2d" or spec.kernel != 1 or spec.sparsity == 0:
            continue
        impl, ms = table.best(spec)
        out.append({"layer": name, "cin": spec.cin, "cout": spec.cout, "hw": list(spec.in_hw),
                    "sparsity": round(spec.sparsity, 3), "mask": kinds[name], "kernel": impl,
                    "us": round(ms * 1000, 2), "dense_us": round(table.timings(spec).get("native", ms) * 1000, 2)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--storage", default="sqlite:///nas.db")
    ap.add_argument("--study", default=None)
    ap.add_argument("--trial", type=int, required=True, help="the trial deploy_speedup.py reported")
    ap.add_argument("--runtime", default=None, help="default: the runtime the study was timed in")
    ap.add_argument("--artifact-dir", default=None, help="where the study's weights are, if not beside its storage")
    ap.add_argument("--at", action="append", default=None, metavar="SPARSITY:CONN",
                    help="re-prune every built 1x1 conv at this level and conn (repeatable; default 0.9:magnitude, "
                         "0.9:magnitude_oc4, 0.95:magnitude_oc4)")
    ap.add_argument("--repeats", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    study = load_study(args.storage, args.study)
    sa = study.user_attrs
    space, task = get_space(sa["space"]), Task.from_dict(sa["task"])
    runtime = args.runtime or study_record(study).timed_in
    table, rt = LatencyTable.load(None, runtime), get_runtime(runtime)
    shape = task.input_shape

    per_trial = {}
    for t in study.trials:
        if t.state.name == "COMPLETE" and t.values is not None:
            m = space.build(arch_of(t), task).eval()
            per_trial[t.number] = {"accuracy": t.values[0], **kernel_sums(table, trace_layers(m, shape))}

    trial = study.trials[args.trial]
    arch = arch_of(trial)
    found = space.build(arch, task)
    state = load_weights(args.storage, study, trial, args.artifact_dir)
    if state is not None:
        found.load_state_dict(state)
    found.eval()
    layers = sparse_layers(table, found, shape)

    variants = {f"trial {trial.number}": (arch, found)}
    for at in args.at or ["0.9:magnitude", "0.9:magnitude_oc4", "0.95:magnitude_oc4"]:
        level, conn = at.split(":")
        a = arch.replace(**{k: float(level) for k in arch.choices if k.endswith("_sparsity")},
                         **{k: conn for k in arch.choices if k.endswith("_conn")})
        torch.manual_seed(0)
        variants[f"every 1x1 at {level} {conn}"] = (a, space.build(a, task).eval())
    dense = lambda s: "dense"  # noqa: E731
    nets, keys = [], []
    for name, (a, m) in variants.items():
        lay = trace_layers(m, shape)
        for kind, choose in (("chosen", table.choose), ("all_dense", dense)):
            nets.append(Network(a, lay, rt.prepare_copies(m, shape, choose)))
            keys.append((name, kind))
    timed = measure_networks(nets, repeats=args.repeats)
    measured: dict[str, dict] = {}
    for (name, kind), t in zip(keys, timed):
        measured.setdefault(name, {})[f"{kind}_ms"] = t.cpu_p10_ms
    for name, (a, m) in variants.items():
        v = measured[name]
        v["from_sparse_kernels"] = v["all_dense_ms"] / v["chosen_ms"]
        v["profile"] = kernel_sums(table, trace_layers(m, shape))

    err = sys.stderr
    print(f"{runtime}: sparse 1x1 layers of trial {trial.number} (profile, us)", file=err)
    for r in layers:
        print(f"  {r['layer']:18s} {r['cin']:4d}->{r['cout']:<4d} {r['hw'][0]}x{r['hw'][1]:<3d} {r['sparsity']:<6} "
              f"{str(r['mask']):14s} {r['kernel']:8s} {r['us']:6.2f} vs dense {r['dense_us']:6.2f}", file=err)
    print("per trial, the profile's kernel sum: table's kernels vs all dense", file=err)
    for n, r in per_trial.items():
        print(f"  trial {n}: accuracy {r['accuracy']:.4f}, {r['chosen_ms'] * 1000:.1f} vs {r['dense_ms'] * 1000:.1f} us "
              f"-> {r['from_sparsity']:.2f}x", file=err)
    print("end to end, measured interleaved (p10 thread CPU)", file=err)
    for name, v in measured.items():
        print(f"  {name:34s} {v['chosen_ms']:.4f} ms, all dense {v['all_dense_ms']:.4f} ms -> "
              f"{v['from_sparse_kernels']:.2f}x (profile {v['profile']['from_sparsity']:.2f}x)", file=err)
    if args.json:
        print(json.dumps({"study": study.study_name, "trial": trial.number, "runtime": runtime,
                          "runtime_version": rt.version(), "sparse_layers": layers, "per_trial": per_trial,
                          "variants": measured, "repeats": args.repeats,
                          "load_avg": [round(v, 2) for v in os.getloadavg()]}))


if __name__ == "__main__":
    main()
