"""Argument types and output helpers shared by the commands."""
from __future__ import annotations

import argparse
import json
from typing import Any

from ..config import DEFAULT_STORAGE  # noqa: F401  (re-exported for the commands)


def positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s}")
    return v


def fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_json(obj: Any) -> None:
    """The machine-readable result: always one JSON object on the last line of stdout."""
    print(json.dumps(obj, default=str))


def add_graph_input(p: argparse.ArgumentParser) -> None:
    """--graph-input of the commands that write ONNX/TorchScript files."""
    p.add_argument("--graph-input", choices=["raw", "normalised"], default="raw",
                   help="what model.onnx/model.ts take: raw (default: the dataset's values as it provides them; "
                        "the graph resizes and normalises, see card.md) or normalised (the network's own input)")


def console(stderr: bool = False) -> "Any":
    """A rich console for tables and messages. Off a terminal (``> log``, a pipe, CI) nothing is cut
    or wrapped: tables take the width their content needs and long lines (the suggested commands)
    stay whole, so they can be copied from a log."""
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=100_000, soft_wrap=True, no_color=True)


def port(s: str) -> int:
    """A TCP port to listen on: 1..65535."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {s!r}") from None
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port between 1 and 65535, got {v}")
    return v
