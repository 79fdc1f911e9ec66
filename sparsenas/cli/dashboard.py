"""`nas dashboard`: optuna-dashboard on a storage, bound to this machine unless told otherwise."""
from __future__ import annotations

import argparse
import sys

from .common import DEFAULT_STORAGE


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="open optuna-dashboard on a storage")
    p.add_argument("--storage", default=DEFAULT_STORAGE)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from optuna_dashboard import run_server

    from ..tracking import open_storage

    storage = open_storage(args.storage, heartbeat=False)
    print(f"optuna-dashboard on http://{args.host}:{args.port}/ (Ctrl-C to stop)", file=sys.stderr)
    run_server(storage, host=args.host, port=args.port)
    return 0
