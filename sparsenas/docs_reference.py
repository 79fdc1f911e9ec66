"""docs/reference.md, generated from the declarations so it cannot drift from the code: every search
config key (SearchConfig's fields with their `nas search` flags' help), every strategy option
(``Strategy.options``), the samplers, pruners, spaces, datasets (with their raw form) and runtimes
shipped with sparsenas, the input contract an export records, and the public Python API.

    python -m sparsenas.docs_reference            # rewrite docs/reference.md
    python -m sparsenas.docs_reference --check    # exit 1 when docs/reference.md is out of date

tests/test_docs_reference.py runs the check.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "reference.md"


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    header = list(header)
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows] + [""])


def _builtin(obj: Any) -> bool:
    """Shipped with sparsenas (plug-ins installed on this machine stay out of the reference)."""
    target = getattr(obj, "load", obj) if not inspect.isclass(obj) else obj
    module = getattr(target, "__module__", "") or ""
    return module.split(".")[0] == "sparsenas" or not hasattr(target, "__module__")


def _toml(v: Any) -> str:
    from .config import _value

    return "-" if v is None else f"`{_value(v)}`"


def _config_keys() -> list[str]:
    from .api import SearchConfig
    from .cli.search import field_help
    from .config import _NAMED, INTERNAL_FIELDS, TABLES, _kinds

    helps = field_help()
    rows = []
    for f in dataclasses.fields(SearchConfig):
        if f.name in INTERNAL_FIELDS or f.name in TABLES.values() or f.name in _NAMED.values():
            continue
        kinds, optional = _kinds(f.type)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-") if f.name != "hw_anchor" else "--no-hw-anchor"
        what = helps.get(f.name, "")
        if default is True:  # the flag turns it off: say so, so the key's meaning reads right
            what = f"true by default; false is what {flag} does: {what}"
        rows.append((f"`{f.name}`", " or ".join(sorted(kinds - {"Any"})), _toml(default), f"`{flag}`", what))
    lines = ["## Search config keys", "",
             "Top-level keys of a `nas search --config FILE.toml` file, the keyword arguments of "
             "`sparsenas.search(...)` / `SearchConfig`, and the `nas search` flags (a flag given on the command "
             "line overrides the file). A key left out takes its default; `-` means none (the search decides, "
             "as the help says).", ""]
    lines += _table(("key", "type", "default", "flag", "what it sets"), rows)
    lines += ["Tables: `[options]` holds the strategy's options (below); `[sampler]` and `[pruner]` hold "
              f"`name = \"...\"` (`--sampler`, `--pruner`: {_cell(helps.get('sampler', ''))}) and the keyword "
              "arguments of that Optuna sampler or pruner.", ""]
    return lines


def _samplers_and_pruners() -> list[str]:
    from .strategies.samplers import PRUNERS, SAMPLERS

    lines = ["## Samplers (`[sampler] name`, `--sampler`)", ""]
    lines += _table(("name", "what", "multi-objective"),
                    ((f"`{n}`", k.description, "yes" if k.multi_objective else "no")
                     for n, k in SAMPLERS.items() if ":" not in n and _builtin(k.make)))
    from .cli.search import field_help

    lines += ["## Pruners (`[pruner] name`, `--pruner`)", ""]
    lines += ["Built in: " + ", ".join(f"`{n}`" for n, p in PRUNERS.items() if ":" not in n and _builtin(p))
              + f". `--pruner`: {_cell(field_help().get('pruner', ''))}", ""]
    return lines


def _strategy_options() -> list[str]:
    from .strategies import STRATEGIES

    lines = ["## Strategies and their options", "",
             "Each strategy's options go in the config's `[options]` table or on the command line as flags; "
             "`-` as default: the strategy decides at run time, as the help says.", ""]
    for name, cls in STRATEGIES.items():
        if not _builtin(cls) or name != cls.name:
            continue
        lines += [f"### `{name}`", "", cls.description, ""]
        if not cls.options:
            lines += ["No options.", ""]
            continue
        lines += _table(("option", "type", "default", "flag", "what it sets"),
                        ((f"`{o.name}`", o.type.__name__ + (f" of {o.item.__name__}" if o.item else "")
                          + (f" in {', '.join(map(str, o.choices))}" if o.choices else ""),
                          _toml(o.default), f"`{o.flag}`", o.help) for o in cls.options))
    return lines


def _components() -> list[str]:
    from .data import DATASETS
    from .runtimes import RUNTIMES
    from .search_spaces import SPACES

    lines = ["## Search spaces", ""]
    lines += _table(("name", "version", "default dataset", "what"),
                    ((f"`{n}`", c.version, c.default_dataset, c.description)
                     for n, c in SPACES.items() if _builtin(c) and n == c.name))
    lines += ["## Datasets", "",
              "The raw form is what an export's graph takes by default (see the input contract below).", ""]
    lines += _table(("name", "what", "raw form", "channels", "value range"),
                    ((f"`{n}`", s.description + (" (needs `--data-dir`)" if s.needs_data_dir else ""),
                      s.raw_form or "-", s.channels,
                      f"[{s.value_range[0]:g}, {s.value_range[1]:g}]" if s.value_range else "observed on the training split")
                     for n, s in DATASETS.items() if _builtin(s) and n == s.name))
    lines += ["## Inference runtimes (`--runtime`)", ""]
    lines += _table(("name", "what", "artifact", "extra to install"),
                    ((f"`{n}`", c.description, c.artifact, f"`sparsenas[{c.extra}]`" if c.extra else "-")
                     for n, c in RUNTIMES.items() if _builtin(c)))
    return lines


def _contract() -> list[str]:
    from .data.contract import InputContract

    doc = {"dataset": "the dataset's name", "raw_shape": "one sample as the dataset provides it (no batch axis)",
           "input_shape": "what the network takes after the preparation",
           "channels": "gray, RGB, signal (as the dataset declares), or unspecified",
           "raw_form": "how the dataset makes its raw values, in words",
           "value_range": "range of the raw values", "range_source": "declared by the dataset, or observed",
           "resize": "side (or length) the preparation resizes to; null: no resize",
           "interpolation": "the resize's interpolation", "mean": "per channel, subtracted after the resize",
           "std": "per channel, divided by after subtracting the mean",
           "layout": "NCHW for images, NCL for sequences (the batch axis first)"}
    fields = [f.name for f in dataclasses.fields(InputContract)]
    lines = ["## The input contract of an export (`arch.json` key `input`)", "",
             "`graph_input` says what `model.onnx` / `model.ts` take: `raw` (default; the graph resizes and "
             "normalises) or `normalised` (`--graph-input normalised`). `sparsenas.load(DIR).preprocess` applies the "
             "same preparation in PyTorch. `plugins` names the importable `module:Qualname` of a plug-in space "
             "or dataset.", ""]
    lines += _table(("field", "meaning"), ((f"`{f}`", doc.get(f, "")) for f in fields + ["layout"]))
    return lines


def _signature(fn: Callable[..., Any]) -> str:
    try:
        sig = str(inspect.signature(fn))
    except (TypeError, ValueError):
        sig = "(...)"
    return sig


def _first_paragraph(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _python_api() -> list[str]:
    import sparsenas
    from . import api, data

    entries: list[tuple[str, Any]] = [(f"sparsenas.{n}", getattr(sparsenas, n)) for n in sparsenas.__all__
                                      if n != "__version__"]
    entries += [(f"sparsenas.api.{n}", getattr(api, n)) for n in
                ("export", "report", "spaces", "strategies", "datasets", "runtimes", "pareto_front", "trial_record",
                 "dashboard", "storage_proxy")]
    entries += [(f"sparsenas.data.{n}", getattr(data, n)) for n in ("load_dataset", "raw_split", "register_dataset")]
    lines = ["## Python API", "",
             "`import sparsenas`; the command line calls these and nothing else.", ""]
    for name, obj in entries:
        kind = "class" if inspect.isclass(obj) else "function"
        sig = "" if inspect.isclass(obj) and dataclasses.is_dataclass(obj) else _signature(obj)
        lines += [f"### `{name}{sig}`" if kind == "function" else f"### class `{name}`", "",
                  _first_paragraph(obj) or "-", ""]
    return lines


def render() -> str:
    """The whole reference, as Markdown."""
    parts = ["# sparsenas reference", "",
             "Generated by `python -m sparsenas.docs_reference` from the code's declarations; do not edit by "
             "hand (tests/test_docs_reference.py fails when it is out of date). How-tos: [guide.md](guide.md).", ""]
    for section in (_config_keys, _strategy_options, _samplers_and_pruners, _components, _contract, _python_api):
        parts += section()
    return "\n".join(parts).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sparsenas.docs_reference", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="file to write (default docs/reference.md)")
    p.add_argument("--check", action="store_true", help="do not write; exit 1 when the file differs")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run python -m sparsenas.docs_reference", file=sys.stderr)
            return 1
        return 0
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
