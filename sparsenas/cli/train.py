"""`nas train ARCH.json`: retrain an architecture from scratch and export it."""
from __future__ import annotations

import argparse

from .common import add_graph_input, positive_float, print_json


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="retrain an exported architecture from scratch and export it",
                       description="Train the architecture in ARCH.json (written by `nas export`) from scratch, "
                                   "measure its latency here in --runtime and write an export folder "
                                   "(see `nas export`).")
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
    add_graph_input(p)
    p.add_argument("--runtime", default=None,
                   help="inference runtime to measure the latency in (default: onnxruntime, the exported model.onnx, "
                        "as `nas search` judges it); `nas runtimes` lists them")
    p.add_argument("--no-measure", action="store_true", help="do not measure latency on this machine")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from ..api import train

    res, figures = train(args.arch, dataset=args.dataset, data_dir=args.data_dir, input_size=args.input_size,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, limit=args.limit,
                         out=args.out, formats=args.format, sparse_format=args.sparse_format,
                         onnx_exporter=args.onnx_exporter, measure=not args.no_measure, runtime=args.runtime,
                         progress=not args.no_progress,
                         graph_input=args.graph_input)
    lat = figures.get("measured_latency_ms")
    print(f"trained {figures['digest']} for {figures['epochs']} epochs on {figures['dataset']}: val acc "
          f"{figures['accuracy']:.4f}, test acc {figures['test_accuracy']:.4f}"
          + (f", {lat:.3f} ms measured in {figures['latency_runtime']}" if lat is not None else "")
          + f"; exported to {figures['out']}/ ({', '.join(res.files)})")
    if args.json:
        print_json({**res.to_dict(), "accuracy": figures["accuracy"], "test_accuracy": figures["test_accuracy"],
                    "epochs": figures["epochs"], "measured_latency_ms": lat, "runtime": figures.get("latency_runtime"),
                    "measured_latency_cpu_ms": figures.get("measured_latency_cpu_ms")})
    return 0
