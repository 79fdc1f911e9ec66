"""`nas inspect ARCH.json`: validate an architecture and show the kernels it runs and its cost."""
from __future__ import annotations

import argparse

from .common import console, print_json


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="validate an architecture JSON and list its layers, params and FLOPs")
    p.add_argument("arch", help="architecture JSON file (arch.json from `nas export`, or a trial's 'arch' attr)")
    p.add_argument("--dataset", default=None, help="task to build it for (default: the space's own dataset)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--runtime", default=None,
                   help="also predict each layer's time in this runtime (onnxruntime, torch, openvino, mnn) from its "
                        "hardware profile, with the kernel the exported artifact runs it with")
    p.add_argument("--hw", default=None, metavar="PROFILE.json",
                   help="hardware profile for --runtime (default: the one shipped for that runtime)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..api import inspect

    r = inspect(args.arch, dataset=args.dataset, data_dir=args.data_dir, input_size=args.input_size,
                runtime=args.runtime, hw=args.hw)
    arch, task, layers, masks, pred = r["arch"], r["task"], r["layers"], r["masks"], r["prediction"]
    title = f"{arch.space} v{arch.version} {arch.digest()} on {task.dataset} {task.input_shape}"
    table = Table(title=title + (f", predicted in {args.runtime} ({pred.profile})" if pred else ""))
    cols = ["#", "op", "in->out", "k", "s", "groups", "input", "sparsity", "mask", "MACs"]
    cols += ["kernel", f"us ({args.runtime})"] if pred else []
    for col in cols:
        table.add_column(col, justify="right")
    for i, (l, mask) in enumerate(zip(layers, masks)):
        row = [str(i), l.op, f"{l.cin}->{l.cout}", str(l.kernel), str(l.stride), str(l.groups),
               "x".join(map(str, l.in_hw)) or "-", f"{l.sparsity:.2f}", mask, f"{l.flops():,}"]
        if pred:
            row += [pred.kernels[i], f"{pred.layer_ms[i] * 1000:.2f}"]
        table.add_row(*row)
    console().print(table)
    params, nnz, flops, eff = r["params"], r["nnz"], r["flops"], r["effective_flops"]
    print(f"params {params:,}  non-zeros {nnz:,}  MACs {flops:,}  effective MACs {int(eff):,}")
    if pred:
        cal = f"calibrated network latency {pred.ms:.4f} ms" if pred.calibration else "no calibration for this input"
        print(f"{args.runtime}: sum of isolated kernels {pred.plain_sum_ms:.4f} ms, {cal} ({pred.metric}; profile "
              f"{pred.profile} as it stands, no speed anchor: a search scales it by this machine's speed then)")
    if args.json:
        print_json({"arch": arch.to_dict(), "digest": arch.digest(), "task": task.to_dict(), "params": params,
                    "nnz": nnz, "flops": flops, "effective_flops": eff,
                    "runtime": args.runtime, "predicted_latency_ms": pred.ms if pred else None,
                    "layers": [{**l.to_dict(), "mask": m,
                                **({"kernel": pred.kernels[i], "predicted_ms": pred.layer_ms[i]} if pred else {})}
                               for i, (l, m) in enumerate(zip(layers, masks))]})
    return 0
