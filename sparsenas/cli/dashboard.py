"""`nas dashboard`: optuna-dashboard on a storage, bound to this machine unless told otherwise.

The search's file artifact store (trained weights) is passed along, so trial pages show them.
"""
from __future__ import annotations

import argparse
import sys

from .common import DEFAULT_STORAGE, port


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="open optuna-dashboard on a storage")
    p.add_argument("--storage", default=DEFAULT_STORAGE)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port, default=8080)
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other than loopback (optuna-dashboard has no authentication)")
    p.add_argument("--artifact-dir", default=None,
                   help="artifact folder (default: <db stem>-artifacts/ beside a sqlite or journal file, "
                        "or the folder the search recorded)")
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from ..api import dashboard

    def announce(folder: str | None) -> None:
        where = f", artifacts from {folder}" if folder else ", no artifact store"
        print(f"optuna-dashboard on http://{args.host}:{args.port}/{where} (Ctrl-C to stop)", file=sys.stderr)

    dashboard(args.storage, host=args.host, port=args.port, artifact_dir=args.artifact_dir, announce=announce,
              allow_remote=args.allow_remote)
    return 0
