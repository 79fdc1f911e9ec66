"""`nas search`: run or resume a search, then show the best architectures."""
from __future__ import annotations

import argparse
from typing import Any

from .common import DEFAULT_STORAGE, console, fmt, positive_float, print_json


EPILOG = """examples:
  nas search --space sparse_mbv2 --trials 20 --epochs 4
  nas search --space g2g_mlp --strategy entangled --mixing dirichlet --search-epochs 5
  nas search --config search.toml --trials 50 --sampler nsga3     # flags override the file
  nas search --space sparse_mbv2 --objective accuracy --sampler gp --print-config > search.toml
"""


def add(sub: argparse._SubParsersAction) -> None:
    # SUPPRESS: a flag left out is absent from the namespace, so a config file's value is not overridden
    # by a default; the defaults are SearchConfig's (each written once, in sparsenas/api.py)
    p = sub.add_parser("search", help="search a space for accurate, fast sparse networks",
                       description="Run (or resume) a search. Every evaluated architecture is a trial of an Optuna "
                                   "study in --storage; re-running the same command resumes it.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                       argument_default=argparse.SUPPRESS)
    p.add_argument("--config", metavar="FILE.toml", help="read the search config (every option below, the "
                   "strategy's [options], [sampler] and [pruner] tables) from a TOML file; flags override it")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as TOML and exit")
    p.add_argument("--space", help="search space (see `nas spaces`, or module.path:Class; default sparse_mbv2)")
    p.add_argument("--strategy", help="search strategy (see `nas strategies`; default tpe)")
    p.add_argument("--dataset", help="digits, mnist1d, synthetic, cifar10, cifar100, mnist, fashion_mnist, or "
                   "module.path:loader (see `nas datasets`; default: the space's own, digits for image spaces)")
    p.add_argument("--data-dir", help="folder with the dataset files (cifar*, mnist, fashion_mnist)")
    p.add_argument("--input-size", type=int, help="resize images to SxS (digits default 16)")
    p.add_argument("--trials", type=int, help="architectures to evaluate in total (default 10); with --pruner mo-asha, "
                   "architectures trained to the full --epochs: the pruned ones come on top (--timeout bounds the time)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, help="training epochs per architecture (default 6)")
    budget.add_argument("--time-budget", type=positive_float, metavar="SECONDS",
                        help="training seconds per architecture instead of an epoch count")
    p.add_argument("--batch-size", type=int, help="training batch size (default 32)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (SGD, cosine; default 0.05)")
    p.add_argument("--storage", help=f"Optuna storage URL (default {DEFAULT_STORAGE})")
    p.add_argument("--study", help="study name (default: SPACE-DATASET-STRATEGY)")
    p.add_argument("--artifact-dir", help="folder for trained weights (Optuna artifacts; default "
                   "<db stem>-artifacts/ beside a sqlite or journal file)")
    p.add_argument("--checkpoint-dir", help="folder for supernet checkpoints, one subfolder per study "
                   "(default <db stem>-checkpoints/ beside a sqlite or journal file; none for database servers)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--objective", choices=["multi", "accuracy"],
                   help="multi: accuracy up and latency down (default); accuracy: accuracy alone, with pruning")
    p.add_argument("--max-latency-ms", type=positive_float,
                   help="with --objective accuracy: reject architectures slower than this before training them")
    p.add_argument("--objectives", metavar="LIST",
                   help="comma-separated objectives, accuracy first: accuracy,latency (the default), "
                        "accuracy,latency,size (size: bytes of the exported weights in the runtime's smallest "
                        "encoding) or accuracy,size")
    p.add_argument("--runtime",
                   help="inference runtime the latency (and size) is that of: onnxruntime (default, the exported "
                        "model.onnx), torch (PyTorch eager with CSR kernels), openvino or mnn (MNN, sparse 1x1 kernels); "
                        "`nas runtimes` lists them")
    p.add_argument("--latency",
                   help="table: predict from the hardware profile (what it lacks for this space and input is timed "
                        "once here and cached; `nas profile --check` says what); measured: time each network here; "
                        "auto (default): table whenever there is a profile of the runtime, else measured (with a warning)")
    p.add_argument("--hw", metavar="PROFILE.json",
                   help="hardware profile for the table (default: the one shipped for 2-core x86 CPUs; "
                        "make your own with `nas profile`)")
    p.add_argument("--no-hw-anchor", dest="hw_anchor", action="store_false",
                   help="predict at the speed the machine had when profiled, without re-timing 16 of the "
                        "profile's calibration networks first (the speed anchor)")
    p.add_argument("--sampler", help="random/tpe/nsga2 loop with another Optuna sampler: tpe, nsga2, nsga3, random, "
                   "gp, cmaes (single objective), qmc, or module.path:Class; arguments from the config's [sampler]")
    p.add_argument("--pruner", help="mo-asha: multi-objective asynchronous successive halving, for any study (settings in "
                   "the config's [pruner]: reduction_factor (3), min_epochs (1), rule (crowding or epsnet), brackets "
                   "(1)); single-objective studies also: median (their default), hyperband, successive-halving, nop, "
                   "or module.path:Class, arguments from [pruner]")
    p.add_argument("--timeout", type=positive_float, metavar="SECONDS",
                   help="stop starting new trials after this many seconds")
    p.add_argument("--threads", type=int, help="torch threads while searching, split between --workers "
                                              "(default 1: robust on a shared machine; latency is always timed with 1)")
    p.add_argument("--limit", type=int, help="use at most this many training samples")
    p.add_argument("--workers", type=int, metavar="K",
                   help="local processes evaluating trials of the study at once (random, tpe, nsga2); --trials stays "
                        "the study's total and --threads is split between them. Workers on other machines: run the "
                        "same command there with a shared --storage")
    p.add_argument("--resume-anyway", action="store_true",
                   help="join an existing study even though its budget (epochs, time budget, lr, batch size, limit), "
                        "seed or strategy differ from this run's")
    p.add_argument("--no-progress", action="store_true", help="no progress bar; one log line per finished trial")
    p.add_argument("-v", "--verbose", action="count", help="more log lines (-vv: Optuna's own too)")
    p.add_argument("-q", "--quiet", action="count", help="fewer log lines (warnings and errors only)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.set_defaults(func=cmd_search)


def field_help() -> dict[str, str]:
    """SearchConfig field -> the help of its `nas search` flag (the one place each key is described)."""
    parser = argparse.ArgumentParser(prog="nas")
    add(parser.add_subparsers())
    actions = parser._subparsers._group_actions[0].choices["search"]._actions  # type: ignore[union-attr]
    return {a.dest: (a.help or "").replace("%%", "%") for a in actions if a.help and a.help != argparse.SUPPRESS}


# flag dest -> option name, for the strategies' options (filled by add_strategy_options)
OPTION_DESTS: dict[str, str] = {}


def add_strategy_options(p: argparse.ArgumentParser) -> None:
    """One flag per option any strategy declares (Strategy.options), grouped per strategy in --help;
    an option several strategies share is one flag whose help names each. Imports the strategies
    (torch), so only done when `nas search` is what runs."""
    from ..strategies import STRATEGIES

    declared: dict[str, list[tuple[str, object]]] = {}
    for sname, cls in STRATEGIES.items():
        for o in getattr(cls, "options", ()):
            declared.setdefault(o.name, []).append((sname, o))
    taken = set(p._option_string_actions)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, owners in declared.items():
        first = owners[0][1]
        if first.flag in taken:  # e.g. dass's own batch_size: the config file's [options] sets it
            continue
        key = owners[0][0] if len(owners) == 1 else "shared"
        if key not in groups:
            title = ("options of several strategies" if key == "shared" else
                     f"strategy {key} (--strategy {key})")
            groups[key] = p.add_argument_group(title)
        by_text: dict[str, list[str]] = {}  # strategies that describe it alike share one entry
        for sname, o in owners:
            by_text.setdefault(o.describe(), []).append(sname)
        help_ = (first.describe() if len(owners) == 1
                 else "; ".join(f"{', '.join(names)}: {text}" for text, names in by_text.items()))
        dest = "option_" + name
        OPTION_DESTS[dest] = name
        groups[key].add_argument(first.flag, dest=dest, type=_parser_of(first), metavar=first.metavar,
                                 help=help_.replace("%", "%%"))


def _parser_of(option) -> object:
    def parse(text: str) -> object:
        try:
            return option.parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {option.metavar}, got {text!r}") from None

    parse.__name__ = option.type.__name__
    return parse


def resolve_config(args: argparse.Namespace) -> "object":
    """SearchConfig from SearchConfig's defaults, then --config FILE, then the flags given."""
    from ..api import SearchConfig
    from ..config import read_config

    given = vars(args)
    kw = read_config(given["config"], SearchConfig) if given.get("config") else {}
    for k in SearchConfig.__dataclass_fields__:
        if k in given:
            kw[k] = given[k]
    options = dict(kw.get("options") or {})
    options.update({name: given[dest] for dest, name in OPTION_DESTS.items() if dest in given})
    kw["options"] = options
    return SearchConfig(**kw)


def cmd_search(args: argparse.Namespace) -> int:
    from ..api import search

    config = resolve_config(args)
    if getattr(args, "print_config", False):
        from ..config import config_to_toml
        from ..strategies import STRATEGIES

        cls = STRATEGIES.get(config.strategy)
        cls.resolve_options(config.options)  # an option the strategy does not take is an error here too
        print(config_to_toml(config, cls.options, field_help()), end="")
        return 0
    study = search(config, progress=not getattr(args, "no_progress", False))
    from .. import distributed

    if not distributed.is_main():  # under torchrun rank 0 alone reports (the others hold no study)
        return 0
    return _print_front(study, config.storage, getattr(args, "json", False))


def _print_front(study: Any, storage: str, as_json: bool) -> int:
    from rich.table import Table

    from ..api import mask_url, pareto_front, study_record, trial_record

    storage = mask_url(storage)  # never print a password
    front = [trial_record(t) for t in pareto_front(study)]
    runtime = study_record(study).timed_in
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    rows = [{"trial": r.number, "accuracy": r.accuracy, "latency_ms": r.latency_ms, "runtime": r.runtime or runtime,
             "model_bytes": r.model_bytes, "test_accuracy": r.test_accuracy, "params": r.params, "nnz": r.nnz,
             "effective_flops": r.effective_flops} for r in front]
    out = console()
    table = Table(title=f"study '{study.study_name}': best architectures ({', '.join(f'{k} {v}' for k, v in states.items())})")
    for col in ("trial", "val acc", "test acc", f"latency ms ({runtime})", "params", "non-zeros", "eff. MFLOPs"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["trial"]), f"{r['accuracy']:.4f}", fmt(r["test_accuracy"], ".4f"),
                      fmt(r["latency_ms"], ".3f"), fmt(r["params"], ","), fmt(r["nnz"], ","),
                      fmt((r["effective_flops"] or 0) / 1e6, ".2f"))
    out.print(table)
    if rows:
        out.print(f"Open the dashboard:  nas dashboard --storage {storage}")
        out.print(f"Export an architecture:  nas export --storage {storage} --study {study.study_name} "
                      f"--trial {rows[0]['trial']} --out found/")
        out.print(f"Plot the search:  nas report --storage {storage} --study {study.study_name} --out report/")
    if as_json:
        print_json({"study": study.study_name, "storage": storage, "states": states, "front": rows})
    return 0


