"""What sparsity buys in each inference runtime: time and bytes, dense against sparse, side by side.

The network is sparse_mbv2's dense reference (``default_arch``: full depth, width 1, expansion 6,
kernel 3) and the same architecture with every 1x1 conv (blocks and head) pruned to ``--sparsity``
by magnitude ("magnitude"), by magnitude over blocks of 4 output channels ("magnitude_oc4"), or
made block-diagonal G2G at the nearest power-of-two density ("block": what a grouped convolution can
run). Each variant is exported as every runtime's artifact (torch: CSR kernels where they are
faster, measured here; ONNX runtimes: the ONNX graph, block layers as grouped convs; MNN: model.mnn
with every sparse 1x1 conv on MNN's sparse kernel, 4-channel blocks where the zeros come so) and timed interleaved, batch 1, 1 thread, 10th percentile of
per-call thread CPU time over ``--repeats`` calls; bytes are the weights in the smallest encoding
the runtime loads. Speed-up = dense time / variant time.

    python benchmarks/sparsity_per_runtime.py [--input-size 32] [--channels 1] [--sparsity 0.9] [--repeats 300] [--runtime mnn] [--json]

With ``--json`` the last line of stdout is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from sparsenas.errors import SparseNASError
from sparsenas.hwprofiles.measure import Network, measure_networks
from sparsenas.ops import G2GConv2d, SparseConv2d, trace_layers
from sparsenas.runtimes import RUNTIMES, get_runtime
from sparsenas.search_spaces import get_space
from sparsenas.task import Task


def _swap_pointwise(model: nn.Module, make) -> nn.Module:
    """Every dense 1x1 conv (groups 1) replaced by ``make(conv)``."""
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1 and type(m) is nn.Conv2d:
            model.set_submodule(name, make(m))
    return model


def magnitude(sparsity: float, mask_kind: str = "magnitude"):
    def make(conv: nn.Conv2d) -> nn.Module:
        s = SparseConv2d(conv.in_channels, conv.out_channels, 1, stride=conv.stride, bias=False, sparsity=sparsity,
                         mask_kind=mask_kind)
        with torch.no_grad():
            s.weight.copy_(conv.weight)
        s.update_mask()
        return s
    return make


def block(sparsity: float):
    def make(conv: nn.Conv2d) -> nn.Module:
        g = 2
        while g * 2 <= 1 / (1 - sparsity) and conv.in_channels % (g * 2) == 0 and conv.out_channels % (g * 2) == 0:
            g *= 2
        return G2GConv2d(conv.in_channels, conv.out_channels, stride=conv.stride[0], ensembles=g, p_inter=0.0,
                         graph="block", grouping="index", seed=0)
    return make


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--channels", type=int, default=1, help="input channels (1: digits; 3: an RGB image)")
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--runtime", action="append", help="only these runtimes (repeatable; default: all installed)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    space = get_space("sparse_mbv2")
    task = Task("digits", (args.channels, args.input_size, args.input_size), 10)
    arch = space.default_arch(task)
    variants = {"dense": space.build(arch, task).eval()}
    torch.manual_seed(0)
    variants["magnitude"] = _swap_pointwise(space.build(arch, task), magnitude(args.sparsity)).eval()
    torch.manual_seed(0)
    variants["magnitude_oc4"] = _swap_pointwise(space.build(arch, task), magnitude(args.sparsity, "magnitude_oc4")).eval()
    torch.manual_seed(0)
    variants["block"] = _swap_pointwise(space.build(arch, task), block(args.sparsity)).eval()
    results: dict[str, dict] = {}
    for name in args.runtime or RUNTIMES.names():
        try:
            rt = get_runtime(name)
        except SparseNASError as e:
            Console(stderr=True).print(f"[yellow]skipping {name}: {e}")
            continue
        # torch: the kernel each layer is fastest with here; the others: the last kernel the runtime lists for
        # the layer (ONNX runtimes: grouped where the layer is block-diagonal; MNN: its sparse kernel, 4-channel
        # blocks where the zeros come so)
        choose = rt.sparse_choice()
        nets = [Network(arch, trace_layers(m, task.input_shape), rt.prepare_copies(m, task.input_shape, choose))
                for m in variants.values()]
        t = dict(zip(variants, measure_networks(nets, repeats=args.repeats, rounds=20)))
        sizes = {v: rt.weight_bytes(m, task.input_shape, choose) for v, m in variants.items()}
        results[name] = {"version": rt.version(),
                         **{v: {"ms": t[v].cpu_p10_ms, "speedup": t["dense"].cpu_p10_ms / t[v].cpu_p10_ms,
                                "bytes": sizes[v]["bytes"], "bytes_ratio": sizes["dense"]["bytes"] / sizes[v]["bytes"]}
                            for v in variants}}
    table = Table(title=f"sparse_mbv2 dense reference at {args.input_size}x{args.input_size}: every 1x1 conv at "
                        f"{args.sparsity:.0%} sparsity (magnitude, in 4-channel blocks) or block-diagonal (G2G block), vs dense")
    table.add_column("runtime", justify="right")
    table.add_column("dense ms", justify="right")
    for v in list(variants)[1:]:
        table.add_column(f"{v}: speed-up", justify="right")
        table.add_column("bytes smaller", justify="right")
    for name, r in results.items():
        table.add_row(f"{name} {r['version'][:12]}", f"{r['dense']['ms']:.4f}",
                      *[f"{r[v][k]:.2f}x" for v in list(variants)[1:] for k in ("speedup", "bytes_ratio")])
    Console().print(table)
    if args.json:
        print(json.dumps({"input_size": args.input_size, "channels": args.channels, "sparsity": args.sparsity,
                          "arch": arch.to_dict(),
                          "runtimes": results, "load_avg": [round(v, 2) for v in os.getloadavg()]}))


if __name__ == "__main__":
    main()
