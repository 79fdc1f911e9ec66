"""`nas search`: run or resume a search, then show the best architectures."""
from __future__ import annotations

import argparse
from typing import Any

from .common import DEFAULT_STORAGE, fmt, positive_float, print_json


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search a space for accurate, fast sparse networks",
                       description="Run (or resume) a search. Every evaluated architecture is a trial of an Optuna "
                                   "study in --storage; re-running the same command resumes it.")
    p.add_argument("--space", default="sparse_mbv2", help="search space (see `nas spaces`; default sparse_mbv2)")
    p.add_argument("--strategy", default="tpe", help="search strategy (see `nas strategies`; default tpe)")
    p.add_argument("--dataset", default=None, help="digits, mnist1d, synthetic, cifar10, cifar100, mnist, fashion_mnist "
                                                  "(default: the space's own, digits for image spaces)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files (cifar*, mnist, fashion_mnist)")
    p.add_argument("--input-size", type=int, default=None, help="resize images to SxS (digits default 16)")
    p.add_argument("--trials", type=int, default=10, help="architectures to evaluate in total (default 10)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, default=None, help="training epochs per architecture (default 6)")
    budget.add_argument("--time-budget", type=positive_float, default=None, metavar="SECONDS",
                        help="training seconds per architecture instead of an epoch count")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=positive_float, default=0.05, help="peak learning rate (SGD, cosine; default 0.05)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    p.add_argument("--study", default=None, help="study name (default: SPACE-DATASET-STRATEGY)")
    p.add_argument("--artifact-dir", default=None, help="folder for trained weights (Optuna artifacts; default "
                   "<db stem>-artifacts/ beside a sqlite or journal file)")
    p.add_argument("--checkpoint-dir", default=None, help="folder for supernet checkpoints, one subfolder per study "
                   "(default <db stem>-checkpoints/ beside a sqlite or journal file; none for database servers)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--objective", choices=["multi", "accuracy"], default="multi",
                   help="multi: accuracy up and latency down (default); accuracy: accuracy alone, with pruning")
    p.add_argument("--max-latency-ms", type=positive_float, default=None,
                   help="with --objective accuracy: reject architectures slower than this before training them")
    p.add_argument("--objectives", default=None, metavar="LIST",
                   help="comma-separated objectives, accuracy first: accuracy,latency (the default), "
                        "accuracy,latency,size (size: bytes of the exported weights in the runtime's smallest "
                        "encoding) or accuracy,size")
    p.add_argument("--runtime", default=None,
                   help="inference runtime the latency (and size) is that of: onnxruntime (default, the exported "
                        "model.onnx), torch (PyTorch eager with CSR kernels) or openvino; `nas runtimes` lists them")
    p.add_argument("--latency", default="auto",
                   help="table: predict from the hardware profile; measured: time each network here; auto (default): "
                        "table when the profile covers the space and input size, else measured")
    p.add_argument("--hw", default=None, metavar="PROFILE.json",
                   help="hardware profile for the table (default: the one shipped for 2-core x86 CPUs; "
                        "make your own with `nas profile`)")
    p.add_argument("--no-hw-anchor", dest="hw_anchor", action="store_false",
                   help="predict at the speed the machine had when profiled, without re-timing 16 of the "
                        "profile's calibration networks first (the speed anchor)")
    s = p.add_argument_group("supernet strategies (dass, entangled, balanced)")
    s.add_argument("--target-sparsity", type=float, default=None, help="sparsity the sparse ops are pruned to (dass: 0.9)")
    s.add_argument("--latency-weight", type=float, default=None, help="weight of the expected-latency term in the loss")
    s.add_argument("--search-epochs", type=int, default=None, help="epochs of supernet training")
    s.add_argument("--retrain-epochs", type=int, default=None, help="epochs to retrain derived architectures")
    s.add_argument("--retrain-top", type=int, default=None, help="how many of the best architectures to retrain")
    s.add_argument("--supernets", type=int, default=None, help="balanced: number of supernets M (default 4)")
    s.add_argument("--channels", type=int, default=None, help="dass on sparse_darts: initial channels C (8, 12, 16)")
    s.add_argument("--cells", type=int, default=None, help="dass on sparse_darts: cells of the derived network (3, 5, 8)")
    p.add_argument("--timeout", type=positive_float, default=None, metavar="SECONDS",
                   help="stop starting new trials after this many seconds")
    p.add_argument("--threads", type=int, default=1, help="torch threads while searching, split between --workers "
                                                        "(default 1: robust on a shared machine; latency is always "
                                                        "timed with 1)")
    p.add_argument("--limit", type=int, default=None, help="use at most this many training samples")
    p.add_argument("--workers", type=int, default=1, metavar="K",
                   help="local processes evaluating trials of the study at once (random, tpe, nsga2); --trials stays "
                        "the study's total and --threads is split between them. Workers on other machines: run the "
                        "same command there with a shared --storage")
    p.add_argument("--resume-anyway", action="store_true",
                   help="join an existing study even though its budget (epochs, time budget, lr, batch size, limit), "
                        "seed or strategy differ from this run's")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.set_defaults(func=cmd_search)


STRATEGY_OPTIONS = ("target_sparsity", "latency_weight", "search_epochs", "retrain_epochs", "retrain_top", "supernets",
                    "channels", "cells")


def cmd_search(args: argparse.Namespace) -> int:
    from ..api import SearchConfig, search

    fields = SearchConfig.__dataclass_fields__
    given = {k: v for k, v in vars(args).items() if k in fields and not (k == "runtime" and v is None)}
    config = SearchConfig(**given,
                          options={k: getattr(args, k) for k in STRATEGY_OPTIONS if getattr(args, k) is not None})
    study = search(config, progress=not args.no_progress)
    from .. import distributed

    if not distributed.is_main():  # under torchrun rank 0 alone reports (the others hold no study)
        return 0
    return _print_front(study, args.storage, args.json)


def _print_front(study: Any, storage: str, as_json: bool) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..tracking import mask_url, pareto_front

    storage = mask_url(storage)  # never print a password
    front = pareto_front(study)
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    rows = [{"trial": t.number, "accuracy": t.values[0],
             "latency_ms": t.user_attrs.get("latency_ms"), "runtime": t.user_attrs.get("runtime", "torch"),
             "model_bytes": t.user_attrs.get("model_bytes"),
             "test_accuracy": t.user_attrs.get("test_accuracy"), "params": t.user_attrs.get("params"),
             "nnz": t.user_attrs.get("nnz"), "effective_flops": t.user_attrs.get("effective_flops")} for t in front]
    console = Console()
    runtime = study.user_attrs.get("runtime", "torch")
    table = Table(title=f"study '{study.study_name}': best architectures ({', '.join(f'{k} {v}' for k, v in states.items())})")
    for col in ("trial", "val acc", "test acc", f"latency ms ({runtime})", "params", "non-zeros", "eff. MFLOPs"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["trial"]), f"{r['accuracy']:.4f}", fmt(r["test_accuracy"], ".4f"),
                      fmt(r["latency_ms"], ".3f"), fmt(r["params"], ","), fmt(r["nnz"], ","),
                      fmt((r["effective_flops"] or 0) / 1e6, ".2f"))
    console.print(table)
    if rows:
        console.print(f"Open the dashboard:  nas dashboard --storage {storage}")
        console.print(f"Export an architecture:  nas export --storage {storage} --study {study.study_name} "
                      f"--trial {rows[0]['trial']} --out found/")
        console.print(f"Plot the search:  nas report --storage {storage} --study {study.study_name} --out report/")
    if as_json:
        print_json({"study": study.study_name, "storage": storage, "states": states, "front": rows})
    return 0


