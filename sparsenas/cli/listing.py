"""`nas spaces`, `nas strategies`, `nas runtimes`: what exists, one line each."""
from __future__ import annotations

import argparse

from .common import print_json


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spaces", help="list the search spaces")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_spaces)
    p = sub.add_parser("strategies", help="list the search strategies")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_strategies)
    p = sub.add_parser("runtimes", help="list the inference runtimes latency can be profiled and predicted in")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runtimes)


def _listing(items: dict[str, str], as_json: bool) -> int:
    width = max(map(len, items), default=0)
    for name, desc in items.items():
        print(f"{name:<{width}}  {desc}")
    if as_json:
        print_json(items)
    return 0


def cmd_spaces(args: argparse.Namespace) -> int:
    from ..search_spaces import SPACES

    return _listing({n: cls.description for n, cls in SPACES.items()}, args.json)


def cmd_strategies(args: argparse.Namespace) -> int:
    from ..strategies import STRATEGIES

    return _listing({n: cls.description for n, cls in STRATEGIES.items()}, args.json)


def cmd_runtimes(args: argparse.Namespace) -> int:
    from ..errors import SparseNASError
    from ..runtimes import DEFAULT_RUNTIME, RUNTIMES

    items = {}
    for name, cls in RUNTIMES.items():
        try:
            status = cls.version()
        except SparseNASError:
            status = f"not installed: pip install 'sparsenas[{cls.extra}]'"
        default = ", the default" if name == DEFAULT_RUNTIME else ""
        items[name] = f"{cls.description} [{status}{default}]; sparsity buys: {cls.sparsity_buys}"
    return _listing(items, args.json)
