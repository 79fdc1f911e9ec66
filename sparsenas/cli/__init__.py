"""`nas`: the command line. Thin: parse, build a config, call the Python API, print.

One module per command group in this package, each with ``add(subparsers)``; listed in COMMANDS.
torch/optuna are imported inside the command functions so `nas --help` starts fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from .. import __version__
from ..errors import SparseNASError

COMMANDS = ("search", "listing", "inspect", "profile", "dashboard", "export", "train", "report", "storage_proxy")

# two or three typical command lines, shown at the end of each command's --help
EXAMPLES = {
    "spaces": ["nas spaces", "nas spaces --json",
               "PYTHONPATH=examples nas search --space tiny_space:TinyMLP   # a space of your own"],
    "strategies": ["nas strategies", "nas search --help    # every strategy's options"],
    "runtimes": ["nas runtimes", "nas profile --space sparse_mbv2 --runtime openvino --out my-openvino.json",
                 "nas search --space sparse_mbv2 --runtime torch"],
    "datasets": ["nas datasets", "nas search --dataset mnist1d --space g2g_mlp",
                 "nas search --dataset cifar10 --data-dir ~/data --input-size 32"],
    "studies": ["nas studies", "nas studies --storage sqlite:///runs.db --json",
                "nas studies --storage postgresql://user@host/nas"],
    "inspect": ["nas inspect found/arch.json", "nas inspect found/arch.json --runtime onnxruntime",
                "nas inspect found/arch.json --dataset digits --input-size 32 --json"],
    "profile": ["nas profile --space sparse_mbv2 --out my-cpu.json   # ONNX Runtime, the default runtime",
                "nas profile --space sparse_mbv2 --runtime torch --out my-torch.json",
                "nas profile --validate my-cpu.json --space sparse_mbv2 --plot validate.png"],
    "dashboard": ["nas dashboard", "nas dashboard --storage sqlite:///runs.db --port 8081"],
    "export": ["nas export --study sparse_mbv2-digits16-tpe --best --out found/",
               "nas export --storage sqlite:///runs.db --study S --trial 17 --out found/ --format onnx,torchscript",
               "nas export --study S --pareto --out front/"],
    "train": ["nas train found/arch.json --epochs 50", "nas train found/ --dataset digits --out retrained/ --json",
              "nas train found/ --runtime torch   # latency measured in PyTorch eager, not ONNX Runtime"],
    "report": ["nas report --out report/", "nas report --storage sqlite:///runs.db --study S --out report/ --baseline train"],
    "storage-proxy": ["nas storage-proxy --storage postgresql://nas@db-host/nas --host 0.0.0.0 --allow-remote --port 13000",
                      "nas search --space sparse_mbv2 --trials 2000 --storage grpc://proxy-host:13000"],
}


def _add_examples(sub: argparse._SubParsersAction) -> None:
    """Each command's examples as its --help epilog, kept as written (RawDescriptionHelpFormatter);
    descriptions are wrapped here since that formatter does not wrap them."""
    import textwrap

    for name, p in sub.choices.items():
        if name in EXAMPLES and not p.epilog:
            p.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])
        if p.epilog:
            p.formatter_class = argparse.RawDescriptionHelpFormatter
            if p.description:
                p.description = textwrap.fill(p.description, 100)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The `nas` parser. The strategies' option flags of `nas search` need the strategies imported
    (torch, about 1.5 s), so they are added only when ``argv`` runs `search`."""
    parser = argparse.ArgumentParser(prog="nas", description="Neural-architecture search for sparse networks.")
    parser.add_argument("--version", action="version", version=f"sparsenas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add(sub)
    _add_examples(sub)
    command = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    if command == "search":
        from .search import add_strategy_options

        add_strategy_options(sub.choices["search"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
    except SparseNASError as e:  # a broken strategy plug-in
        print(f"nas: error: {e}", file=sys.stderr)
        return e.exit_code
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ..log import setup

    setup((getattr(args, "verbose", None) or 0) - (getattr(args, "quiet", None) or 0))
    try:
        return args.func(args)
    except SparseNASError as e:
        print(f"nas {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"nas {args.command}: interrupted; finished work is saved, re-run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
