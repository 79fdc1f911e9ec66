"""`nas storage-proxy`: Optuna's gRPC storage proxy in front of a database, for many workers."""
from __future__ import annotations

import argparse
import sys

from .common import port


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("storage-proxy", help="serve a storage to many workers through Optuna's gRPC proxy",
                       description="Serve --storage (a database URL) through Optuna's gRPC storage proxy; workers "
                                   "then search with --storage grpc://HOST:PORT. One proxy holds the database "
                                   "connections, so hundreds of workers do not each open their own. Ctrl-C stops it.")
    p.add_argument("--storage", required=True, help="the database to serve, e.g. postgresql://user@db/nas")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                                                       "0.0.0.0 serves other machines, on a network you trust, "
                                                       "with --allow-remote)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other than loopback (the proxy has no authentication)")
    p.add_argument("--port", type=port, default=13000, help="port (default 13000)")
    p.set_defaults(func=cmd_storage_proxy)


def cmd_storage_proxy(args: argparse.Namespace) -> int:
    from ..api import mask_url, storage_proxy

    def announce() -> None:
        print(f"storage proxy for {mask_url(args.storage)} on grpc://{args.host}:{args.port} (Ctrl-C to stop); "
              f"workers: nas search --storage grpc://{args.host}:{args.port} ...", file=sys.stderr, flush=True)

    storage_proxy(args.storage, host=args.host, port=args.port, allow_remote=args.allow_remote, announce=announce)
    return 0
