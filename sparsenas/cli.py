"""`nas`: the command line. Thin: parse, build a config, call the Python API, print.

Imports of torch/optuna stay inside the command functions so `nas --help` starts fast.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Sequence

from .errors import SparseNASError

DEFAULT_STORAGE = "sqlite:///nas.db"  # the same default as tracking.DEFAULT_STORAGE, without importing optuna


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s}")
    return v


def _add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search a space for accurate, fast sparse networks",
                       description="Run (or resume) a search. Every evaluated architecture is a trial of an Optuna "
                                   "study in --storage; re-running the same command resumes it.")
    p.add_argument("--space", default="sparse_mbv2", help="search space (see `nas spaces`; default sparse_mbv2)")
    p.add_argument("--strategy", default="tpe", help="search strategy (see `nas strategies`; default tpe)")
    p.add_argument("--dataset", default=None, help="digits, mnist1d, synthetic, cifar10, cifar100, mnist, fashion_mnist "
                                                  "(default: the space's own, digits for image spaces)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files (cifar*, mnist, fashion_mnist)")
    p.add_argument("--input-size", type=int, default=None, help="resize images to SxS (digits default 16)")
    p.add_argument("--trials", type=int, default=12, help="architectures to evaluate in total (default 12)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, default=8, help="training epochs per architecture (default 8)")
    budget.add_argument("--time-budget", type=_positive_float, default=None, metavar="SECONDS",
                        help="training seconds per architecture instead of an epoch count")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=_positive_float, default=0.05, help="peak learning rate (SGD, cosine; default 0.05)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    p.add_argument("--study", default=None, help="study name (default: SPACE-DATASET-STRATEGY)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--objective", choices=["multi", "accuracy"], default="multi",
                   help="multi: accuracy up and latency down (default); accuracy: accuracy alone, with pruning")
    p.add_argument("--max-latency-ms", type=_positive_float, default=None,
                   help="with --objective accuracy: reject architectures slower than this before training them")
    p.add_argument("--latency", default="measured", help="latency evaluator: measured (time the network here)")
    p.add_argument("--timeout", type=_positive_float, default=None, metavar="SECONDS",
                   help="stop starting new trials after this many seconds")
    p.add_argument("--limit", type=int, default=None, help="use at most this many training samples")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.set_defaults(func=cmd_search)


def cmd_search(args: argparse.Namespace) -> int:
    from .api import SearchConfig, search

    fields = SearchConfig.__dataclass_fields__
    config = SearchConfig(**{k: v for k, v in vars(args).items() if k in fields})
    study = search(config, progress=not args.no_progress)
    return _print_front(study, args.storage, args.json)


def _print_front(study: Any, storage: str, as_json: bool) -> int:
    from rich.console import Console
    from rich.table import Table

    from .tracking import pareto_front

    front = pareto_front(study)
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    rows = [{"trial": t.number, "accuracy": t.values[0],
             "latency_ms": t.values[1] if len(t.values) > 1 else t.user_attrs.get("latency_ms"),
             "test_accuracy": t.user_attrs.get("test_accuracy"), "params": t.user_attrs.get("params"),
             "nnz": t.user_attrs.get("nnz"), "effective_flops": t.user_attrs.get("effective_flops")} for t in front]
    console = Console()
    table = Table(title=f"study '{study.study_name}': best architectures ({', '.join(f'{k} {v}' for k, v in states.items())})")
    for col in ("trial", "val acc", "test acc", "latency ms", "params", "non-zeros", "eff. MFLOPs"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["trial"]), f"{r['accuracy']:.4f}", _fmt(r["test_accuracy"], ".4f"),
                      _fmt(r["latency_ms"], ".3f"), _fmt(r["params"], ","), _fmt(r["nnz"], ","),
                      _fmt((r["effective_flops"] or 0) / 1e6, ".2f"))
    console.print(table)
    if rows:
        console.print(f"Open the dashboard:  nas dashboard --storage {storage}")
        console.print(f"Export an architecture:  nas export --storage {storage} --study {study.study_name} "
                      f"--trial {rows[0]['trial']} --out found/")
    if as_json:
        print(json.dumps({"study": study.study_name, "storage": storage, "states": states, "front": rows}))
    return 0


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _add_listing(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spaces", help="list the search spaces")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_spaces)
    p = sub.add_parser("strategies", help="list the search strategies")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_strategies)


def _listing(items: dict[str, str], as_json: bool) -> int:
    width = max(map(len, items), default=0)
    for name, desc in items.items():
        print(f"{name:<{width}}  {desc}")
    if as_json:
        print(json.dumps(items))
    return 0


def cmd_spaces(args: argparse.Namespace) -> int:
    from .search_spaces import SPACES

    return _listing({n: cls.description for n, cls in SPACES.items()}, args.json)


def cmd_strategies(args: argparse.Namespace) -> int:
    from .strategies import STRATEGIES

    return _listing({n: cls.description for n, cls in STRATEGIES.items()}, args.json)


def _add_dashboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="open optuna-dashboard on a storage")
    p.add_argument("--storage", default=DEFAULT_STORAGE)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from optuna_dashboard import run_server

    from .tracking import open_storage

    storage = open_storage(args.storage, heartbeat=False)
    print(f"optuna-dashboard on http://{args.host}:{args.port}/ (Ctrl-C to stop)", file=sys.stderr)
    run_server(storage, host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas", description="Neural-architecture search for sparse networks.")
    parser.add_argument("--version", action="version", version="sparsenas 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _ADDERS:
        add(sub)
    return parser


_ADDERS: list[Callable[[argparse._SubParsersAction], None]] = [_add_search, _add_listing, _add_dashboard]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except SparseNASError as e:
        print(f"nas {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"nas {args.command}: interrupted; completed trials are saved, re-run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
