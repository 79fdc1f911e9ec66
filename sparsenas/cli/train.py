"""`nas train ARCH.json`: retrain an architecture from scratch and export it."""
from __future__ import annotations

import argparse
import os

from .common import positive_float, print_json


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="retrain an exported architecture from scratch and export it",
                       description="Train the architecture in ARCH.json (written by `nas export`) from scratch, "
                                   "measure its latency here and write an export folder (see `nas export`).")
    p.add_argument("arch", metavar="ARCH.json", help="architecture file (or a folder holding arch.json)")
    p.add_argument("--dataset", default=None, help="dataset (default: the one in ARCH.json)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files (cifar*, mnist, fashion_mnist)")
    p.add_argument("--input-size", type=int, default=None,
                   help="resize images to SxS (default: the size in ARCH.json when the dataset is the same)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=positive_float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="use at most this many training samples")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: the folder of ARCH.json)")
    p.add_argument("--format", default="json,pt,onnx,torchscript", help="comma-separated: json, pt, onnx, torchscript")
    p.add_argument("--sparse-format", choices=["csr"], default=None)
    p.add_argument("--onnx-exporter", choices=["legacy", "dynamo"], default="legacy")
    p.add_argument("--no-measure", action="store_true", help="do not measure latency on this machine")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from ..errors import SparseNASError
    from ..export import normalize_formats, read_arch, retrain, write_export
    from ..progress import Progress

    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise SparseNASError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    normalize_formats(args.format)  # a bad format fails before training, not after
    arch, task, doc = read_arch(args.arch)
    dataset = args.dataset or (task.dataset if task else None)
    if dataset is None:
        raise SparseNASError(f"{args.arch} names no dataset; pass --dataset")
    input_size = args.input_size
    if input_size is None and task is not None and dataset == task.dataset and len(task.input_shape) == 3:
        input_size = task.input_shape[-1]
    out = args.out or (args.arch if os.path.isdir(args.arch) else os.path.dirname(os.path.abspath(args.arch)))
    with Progress(1, enabled=not args.no_progress, label=f"train {arch.digest()}") as bar:
        bar.trial_started(0, f"{args.epochs} epochs on {dataset}")
        model, task, figures = retrain(arch, dataset=dataset, data_dir=args.data_dir, input_size=input_size,
                                       epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                       limit=args.limit, measure=not args.no_measure, on_step=bar.trial_progress)
    info = {"weights": f"retrained from scratch for {figures['epochs']} epochs on {task.dataset} (seed {args.seed}) "
                       "by `nas train`",
            "retrained": figures, "source": doc.get("source") or {},
            **{k: figures.get(k) for k in ("latency_ms", "latency_source", "measured_latency_ms",
                                           "measured_latency_cpu_ms", "flops", "effective_flops", "kernels")}}
    res = write_export(model, arch, task, out, formats=args.format, sparse_format=args.sparse_format, info=info,
                       onnx_exporter=args.onnx_exporter)
    lat = figures.get("measured_latency_ms")
    print(f"trained {arch.digest()} for {figures['epochs']} epochs on {task.dataset}: val acc {figures['accuracy']:.4f}, "
          f"test acc {figures['test_accuracy']:.4f}" + (f", {lat:.3f} ms measured" if lat is not None else "")
          + f"; exported to {out}/ ({', '.join(res.files)})")
    if args.json:
        print_json({**res.to_dict(), "accuracy": figures["accuracy"], "test_accuracy": figures["test_accuracy"],
                    "epochs": figures["epochs"], "measured_latency_ms": lat,
                    "measured_latency_cpu_ms": figures.get("measured_latency_cpu_ms")})
    return 0
