"""`nas spaces`, `nas strategies`: what exists, one line each."""
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
