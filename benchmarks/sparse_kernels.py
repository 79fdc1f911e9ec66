"""Dense vs CSR kernels on the 1x1 convolutions of MobileNetV2, and a check of measured_choice.

For every distinct 1x1 conv that sparse_mbv2 emits (reference arch, width 0.5/1.0, input 16/32) and every
sparsity level, times dense / torch_csr / scipy_csr interleaved in one run (batch 1, 1 thread)
and reports speedups ``dense_time / sparse_time``. It also asks :func:`measured_choice` (which
times the layer separately) for its pick and counts a *violation* when the pick's median in this
run is more than 5% slower than dense's.

    python benchmarks/sparse_kernels.py [--quick] [--json]

With ``--json`` the last line of stdout is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch
from rich.console import Console
from rich.table import Table

from sparsenas.ops import KERNELS, LayerSpec, measure_kernels, measured_choice
from sparsenas.search_spaces import get_space
from sparsenas.task import Task

SPARSITIES = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95]
# sparse_mbv2's reference architecture (full depth, t=6, k=3) at two widths and two input sizes
CONFIGS = [(1.0, 32), (1.0, 16), (0.5, 32), (0.5, 16)]
QUICK_COUNT = 6
IMPLS = list(KERNELS)


def space_pointwise(width: float, size: int) -> list[tuple[int, int, int]]:
    """(cin, cout, hw) of every 1x1 conv sparse_mbv2 emits for its reference arch at ``width``/``size``,
    traced from the built network so the shapes are the space's own."""
    space = get_space("sparse_mbv2")
    task = Task("digits", (1, size, size), 10)
    arch = space.default_arch(task)
    arch = arch.replace(**{k: width for k in arch.choices if k.endswith("_width")})
    return [(l.cin, l.cout, l.in_hw[0]) for l in space.layers(arch, task)
            if l.op == "conv2d" and l.kernel == 1 and l.groups == 1]


@dataclass
class Layer:
    cin: int
    cout: int
    hw: int
    configs: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.cin}→{self.cout} @{self.hw}²"


def distinct_layers(quick: bool) -> list[Layer]:
    found: dict[tuple[int, int, int], Layer] = {}
    for width, size in CONFIGS:
        for shape in space_pointwise(width, size):
            found.setdefault(shape, Layer(*shape)).configs.append(f"w{width}/{size}")
    ordered = sorted(found.values(), key=lambda l: l.cin * l.cout * l.hw**2)
    if quick:  # a spread from call-overhead-bound to MAC-bound
        step = (len(ordered) - 1) / (QUICK_COUNT - 1)
        return [ordered[round(i * step)] for i in range(QUICK_COUNT)]
    return ordered


def run(quick: bool, repeats: int, rounds: int) -> dict:
    layers = distinct_layers(quick)
    rows = []
    load_before = os.getloadavg()
    start = time.perf_counter()
    for i, layer in enumerate(layers):
        print(f"[{i + 1}/{len(layers)}] {layer.name}", file=sys.stderr, flush=True)
        for sp in SPARSITIES:
            spec = LayerSpec("conv2d", layer.cin, layer.cout, kernel=1, in_hw=(layer.hw, layer.hw), sparsity=sp)
            chosen = measured_choice(spec)  # its own, separate timing (30 calls each)
            t = measure_kernels(spec, warmup=10, repeats=repeats, rounds=rounds)
            dense = t["dense"].wall_ms
            rows.append({
                "layer": layer.name, "cin": layer.cin, "cout": layer.cout, "hw": layer.hw, "configs": layer.configs,
                "sparsity": sp, "key": spec.key(),
                "us": {i: round(t[i].wall_ms * 1e3, 2) for i in IMPLS},
                "cpu_us": {i: round(t[i].cpu_ms * 1e3, 2) for i in IMPLS},
                "iqr_us": {i: round(t[i].wall_iqr_ms * 1e3, 2) for i in IMPLS},
                "ratio": {i: round(dense / t[i].wall_ms, 3) for i in IMPLS if i != "dense"},
                "chosen": chosen,
                "chosen_ratio": round(dense / t[chosen].wall_ms, 3),
                "best": min(IMPLS, key=lambda i: t[i].wall_ms),
                "violation": t[chosen].wall_ms > 1.05 * dense,
            })
    return {
        "benchmark": "sparse_kernels", "quick": quick, "batch": 1, "threads": 1, "repeats": repeats,
        "rounds": rounds, "metric": "median wall time per call; ratio = dense / impl (>1: faster than dense)",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "load_before": load_before, "load_after": os.getloadavg()},
        "seconds": round(time.perf_counter() - start, 1),
        "layers": [{"layer": l.name, "cin": l.cin, "cout": l.cout, "hw": l.hw, "configs": l.configs} for l in layers],
        "results": rows,
        "summary": summarise(rows),
        "violations": sum(r["violation"] for r in rows),
        "violation_details": [
            {k: r[k] for k in ("layer", "sparsity", "chosen", "chosen_ratio", "us")} for r in rows if r["violation"]
        ],
    }


def summarise(rows: list[dict]) -> dict[str, dict]:
    out = {}
    for sp in SPARSITIES:
        rs = [r for r in rows if r["sparsity"] == sp]
        best_sparse = [max(r["ratio"].values()) for r in rs]
        out[f"{sp:g}"] = {
            **{f"median_ratio_{i}": round(statistics.median(r["ratio"][i] for r in rs), 3) for i in IMPLS if i != "dense"},
            "median_ratio_best_sparse": round(statistics.median(best_sparse), 3),
            "median_ratio_chosen": round(statistics.median(r["chosen_ratio"] for r in rs), 3),
            # whole set of layers run with the chosen kernels vs all dense (each distinct shape once)
            "net_ratio_chosen": round(sum(r["us"]["dense"] for r in rs) / sum(r["us"][r["chosen"]] for r in rs), 3),
            "sparse_wins": sum(b > 1 for b in best_sparse),
            "chosen": {i: sum(r["chosen"] == i for r in rs) for i in IMPLS},
            "violations": sum(r["violation"] for r in rs),
            "layers": len(rs),
        }
    return out


def _cell(r: dict) -> str:
    short = {"dense": "d", "torch_csr": "t", "scipy_csr": "s"}
    style = "red" if r["violation"] else ("green" if r["chosen_ratio"] > 1.05 else "")
    text = f"{r['ratio']['torch_csr']:.2f}/{r['ratio']['scipy_csr']:.2f} {short[r['chosen']]}"
    return f"[{style}]{text}[/]" if style else text


def print_tables(res: dict, console: Console) -> None:
    by_layer: dict[str, dict[float, dict]] = {}
    for r in res["results"]:
        by_layer.setdefault(r["layer"], {})[r["sparsity"]] = r
    table = Table(title="dense / sparse time per 1x1 conv (torch_csr / scipy_csr; letter = measured_choice; "
                        "green: chosen >1.05x faster, red: chosen >5% slower than dense)")
    table.add_column("layer")
    table.add_column("dense µs", justify="right")
    for sp in SPARSITIES:
        table.add_column(f"sp {sp:g}", justify="right")
    for name, per_sp in by_layer.items():
        dense = statistics.median(r["us"]["dense"] for r in per_sp.values())
        table.add_row(name, f"{dense:.1f}", *(_cell(per_sp[sp]) for sp in SPARSITIES))
    console.print(table)

    summary = Table(title=f"summary over {len(by_layer)} layers (batch 1, 1 thread, medians of "
                          f"{res['repeats']} interleaved calls; load {res['machine']['load_before'][0]:.1f})")
    for col in ("sparsity", "median torch_csr", "median scipy_csr", "median best sparse", "median chosen",
                "net chosen", "sparse wins", "chosen d/t/s", "violations"):
        summary.add_column(col, justify="right")
    for sp, s in res["summary"].items():
        summary.add_row(sp, f"{s['median_ratio_torch_csr']:.2f}", f"{s['median_ratio_scipy_csr']:.2f}",
                        f"{s['median_ratio_best_sparse']:.2f}", f"{s['median_ratio_chosen']:.2f}",
                        f"{s['net_ratio_chosen']:.2f}", f"{s['sparse_wins']}/{s['layers']}",
                        "/".join(str(s["chosen"][i]) for i in IMPLS), str(s["violations"]))
    console.print(summary)
    console.print(f"violations (measured_choice's kernel >5% slower than dense in this run): "
                  f"{res['violations']} of {len(res['results'])}; {res['seconds']} s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_COUNT} shapes, 40 calls per kernel")
    ap.add_argument("--json", action="store_true", help="print all figures as one JSON object on the last line")
    ap.add_argument("--repeats", type=int, help="timed calls per kernel (default 40 quick, 150 full)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (40 if args.quick else 150)
    res = run(args.quick, repeats, rounds=4 if args.quick else 6)
    console = Console(width=max(Console().width, 150))
    print_tables(res, console)
    if args.json:
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
