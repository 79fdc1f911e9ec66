"""`nas inspect ARCH.json`: validate an architecture and show the kernels it runs and its cost."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import SparseNASError
from .common import fmt, print_json


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="validate an architecture JSON and list its layers, params and FLOPs")
    p.add_argument("arch", help="architecture JSON file (arch.json from `nas export`, or a trial's 'arch' attr)")
    p.add_argument("--dataset", default=None, help="task to build it for (default: the space's own dataset)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--runtime", default=None,
                   help="also predict each layer's time in this runtime (onnxruntime, torch, openvino) from its "
                        "hardware profile, with the kernel the exported artifact runs it with")
    p.add_argument("--hw", default=None, metavar="PROFILE.json",
                   help="hardware profile for --runtime (default: the one shipped for that runtime)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)


def read_arch_file(path: str):
    """The Arch stored in ``path``; a missing or malformed file is a SparseNASError."""
    from ..arch import Arch

    try:
        text = Path(path).read_text()
    except OSError as e:
        raise SparseNASError(f"cannot read architecture file {path}: {e.strerror}") from None
    return Arch.from_json(text)


def layer_masks(model, task) -> list[str]:
    """The mask kind of each traced layer (``-`` for dense ones): magnitude, nm, score or g2g."""
    from ..ops.spec import trace_named_layers

    modules = dict(model.named_modules())
    return [getattr(modules.get(name), "mask_kind", "-") for name, _ in trace_named_layers(model, task.input_shape)]


def cmd_inspect(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..data import load_dataset
    from ..evaluators import count_flops, count_params
    from ..search_spaces import get_space

    arch = read_arch_file(args.arch)
    space = get_space(arch.space)
    task = load_dataset(args.dataset or space.default_dataset, data_dir=args.data_dir,
                        input_size=args.input_size).task
    arch = space.validate(arch, task)  # an architecture of an older space version, in today's terms
    model = space.build(arch, task)
    layers = space.layers(arch, task)
    masks = layer_masks(model, task)
    params, nnz = count_params(model)
    flops, eff = count_flops(layers)
    pred = _predict(args, space, task, layers)
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
    Console().print(table)
    print(f"params {params:,}  non-zeros {nnz:,}  MACs {flops:,}  effective MACs {int(eff):,}")
    if pred:
        cal = f"calibrated network latency {pred.ms:.4f} ms" if pred.calibration else "no calibration for this input"
        print(f"{args.runtime}: sum of isolated kernels {pred.plain_sum_ms:.4f} ms, {cal} ({pred.metric})")
    if args.json:
        print_json({"arch": arch.to_dict(), "digest": arch.digest(), "task": task.to_dict(), "params": params,
                    "nnz": nnz, "flops": flops, "effective_flops": eff,
                    "runtime": args.runtime, "predicted_latency_ms": pred.ms if pred else None,
                    "layers": [{**l.to_dict(), "mask": m,
                                **({"kernel": pred.kernels[i], "predicted_ms": pred.layer_ms[i]} if pred else {})}
                               for i, (l, m) in enumerate(zip(layers, masks))]})
    return 0


def _predict(args: argparse.Namespace, space, task, layers):
    """The profile's per-layer prediction in ``--runtime`` (None without it); calibrated when the
    profile covers this space and input size, else the plain kernel sum."""
    from ..hwprofiles import LatencyTable, ProfileError

    if args.runtime is None:
        if args.hw:
            raise SparseNASError("--hw needs --runtime (the runtime whose per-layer times to show)")
        return None
    table = LatencyTable.load(args.hw, args.runtime)
    try:
        return table.predict(layers, space.name, task.input_shape)
    except ProfileError as e:
        if table.missing(layers):
            raise
        del e  # covered kernels, no calibration for this space/input: show the isolated kernel times
        return table.predict(layers)
