"""`nas spaces`, `nas strategies`, `nas datasets`: what exists, one line each; `nas studies`: what a
storage holds."""
from __future__ import annotations

import argparse

from .common import DEFAULT_STORAGE, fmt, print_json


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
    p = sub.add_parser("datasets", help="list the datasets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets)
    p = sub.add_parser("studies", help="list the studies in a storage: what each searched, trials, best values",
                       description="One line per study of --storage: space, dataset, strategy (or sampler), runtime "
                                   "when recorded, trials by state and the best value of each objective. A storage "
                                   "file that does not exist is an error; nothing is created.")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.set_defaults(func=cmd_studies)


_FRONT_SHOWN = 5


def _listing(items: dict[str, str], as_json: bool) -> int:
    width = max(map(len, items), default=0)
    for name, desc in items.items():
        print(f"{name:<{width}}  {desc}")
    if as_json:
        print_json(items)
    return 0


def cmd_spaces(args: argparse.Namespace) -> int:
    from ..api import spaces

    return _listing(spaces(), args.json)


def cmd_strategies(args: argparse.Namespace) -> int:
    from ..api import strategies

    return _listing(strategies(), args.json)


def cmd_datasets(args: argparse.Namespace) -> int:
    from ..api import datasets

    return _listing(datasets(), args.json)


def cmd_studies(args: argparse.Namespace) -> int:
    from ..api import mask_url, studies

    rows = studies(args.storage)
    if not rows:
        print(f"no studies in {mask_url(args.storage)}")
    for r in rows:
        # the sampler that ran: --sampler replaces the strategy's own
        how = f"{r['sampler']} sampler" if r.get("sampler") else (r["strategy"] or "-")
        states = ", ".join(f"{k} {v}" for k, v in sorted(r["states"].items())) or "no trials"
        runtime = f" on {r['runtime']}" if r.get("runtime") else ""
        print(f"{r['study']}: {r['space'] or '?'} / {r['dataset'] or '?'} / {how}{runtime}; {states}")
        front = r.get("front_trials") or []
        if len(r["best"]) > 1:  # several objectives: the trade-off is the front, not each one's best
            shown = "; ".join(f"#{t['trial']} " + ", ".join(f"{k} {fmt(v, '.4g')}" for k, v in t.items() if k != "trial")
                              for t in front[:_FRONT_SHOWN])
            more = f"; ... {len(front) - _FRONT_SHOWN} more" if len(front) > _FRONT_SHOWN else ""
            print(f"  Pareto front ({len(front)} trials): {shown or '-'}{more}")
            print("  best per objective (may be different trials): "
                  + ", ".join(f"{k} {fmt(v, '.4g')}" for k, v in r["best"].items()))
        else:
            best = ", ".join(f"{k} {fmt(v, '.4g')}" for k, v in r["best"].items()) or "-"
            print(f"  best: {best}" + (f" (trial {front[0]['trial']})" if front else ""))
    if args.json:
        print_json({"storage": args.storage, "studies": rows})
    return 0


def cmd_runtimes(args: argparse.Namespace) -> int:
    from ..api import runtimes

    return _listing(runtimes(), args.json)
