"""Search configs as TOML files: read with the standard library (tomllib), written by a tiny writer.

A file holds every :class:`~sparsenas.api.SearchConfig` field as a top-level key, the strategy's
options in an ``[options]`` table, and the sampler and pruner with their arguments in ``[sampler]``
and ``[pruner]`` tables (``name`` plus keyword arguments)::

    space = "sparse_mbv2"
    strategy = "tpe"
    trials = 20

    [options]
    fixed = { s2b1_sparsity = 0.8 }

    [sampler]
    name = "gp"
    n_startup_trials = 5
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Iterable

from .errors import SparseNASError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 has no tomllib; tomli is its backport
    import tomli as tomllib

__all__ = ["read_config", "config_to_toml", "config_from_dict", "DEFAULT_STORAGE", "DEFAULT_EPOCHS"]

# Defaults used by more than one module, defined here once (this module imports neither torch nor optuna,
# so the command line can show them without loading either)
DEFAULT_STORAGE = "sqlite:///nas.db"
DEFAULT_EPOCHS = 6  # training epochs per architecture when neither --epochs nor --time-budget is given

TABLES = {"options": "options", "sampler": "sampler_args", "pruner": "pruner_args"}  # table -> field
_NAMED = {"sampler": "sampler", "pruner": "pruner"}  # tables whose `name` key is a field of its own


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _kinds(annotation: str) -> tuple[set[str], bool]:
    """('int', 'float', ...) and whether None is allowed, from a field's annotation string."""
    parts = {p.strip() for p in str(annotation).split("|")}
    return {p.split("[")[0] for p in parts} - {"None"}, "None" in parts


def _check_value(key: str, value: Any, annotation: str) -> Any:
    kinds, optional = _kinds(annotation)
    ok = ((isinstance(value, bool) and "bool" in kinds)
          or (isinstance(value, int) and not isinstance(value, bool) and kinds & {"int", "float"})
          or (isinstance(value, float) and "float" in kinds)
          or (isinstance(value, str) and "str" in kinds)
          or (isinstance(value, dict) and "dict" in kinds))
    if not ok:
        want = " or ".join(sorted(kinds)) + (" (or left out)" if optional else "")
        raise SparseNASError(f"config key '{key}' must be {want}, got {value!r}")
    return float(value) if kinds == {"float"} and isinstance(value, int) else value


def config_from_dict(data: dict[str, Any], cls: type, where: str = "config") -> dict[str, Any]:
    """SearchConfig keyword arguments from a parsed TOML document; unknown keys or tables and
    values of the wrong type raise SparseNASError naming the allowed keys."""
    fields = _fields(cls)
    flat = sorted(k for k in fields if k not in TABLES.values() and k not in _NAMED.values())
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in TABLES:
            if not isinstance(value, dict):
                raise SparseNASError(f"{where}: '{key}' must be a table ([{key}]), got {value!r}")
            value = dict(value)
            if key in _NAMED:
                name = value.pop("name", None)
                if name is not None and not isinstance(name, str):
                    raise SparseNASError(f"{where}: [{key}] name must be a string, got {name!r}")
                if name is None and value:
                    raise SparseNASError(f"{where}: [{key}] has arguments but no name = \"...\"")
                out[_NAMED[key]] = name
            out[TABLES[key]] = value
        elif key in flat:
            out[key] = _check_value(key, value, fields[key].type)
        else:
            raise SparseNASError(f"{where}: unknown key '{key}'; allowed keys: {', '.join(flat)} and the tables "
                                 f"{', '.join(f'[{t}]' for t in TABLES)}")
    return out


def read_config(path: str | Path, cls: type) -> dict[str, Any]:
    """SearchConfig keyword arguments from the TOML file at ``path``."""
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except OSError as e:
        raise SparseNASError(f"cannot read config file {p}: {e.strerror or e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SparseNASError(f"config file {p} is not valid TOML: {e}") from None
    return config_from_dict(data, cls, where=f"config file {p}")


# ---------------------------------------------------------------- writing
# The standard library reads TOML but has no writer (tomllib is read-only) and the third-party
# writers are one more dependency for ~40 lines: a config is flat keys plus a few tables of scalars,
# lists and inline tables, which is all this writes.
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(str(k))} = {_value(x)}" for k, x in v.items() if x is not None) + " }"
    raise SparseNASError(f"cannot write {v!r} ({type(v).__name__}) to a TOML config")


def _table(name: str, items: dict[str, Any], comments: Iterable[str] = ()) -> list[str]:
    lines = ["", f"[{name}]"]
    lines += [f"{_key(k)} = {_value(v)}" for k, v in items.items() if v is not None]
    lines += list(comments)
    return lines


# SearchConfig fields a user never sets (the worker runner does): not written, not documented
INTERNAL_FIELDS = ("worker",)
# values shown in the commented-out hints of unset keys: uncommented, each is a valid setting to edit
HINTS: dict[str, Any] = {"dataset": "digits", "data_dir": "~/data", "input_size": 16, "epochs": 6, "time_budget": 30.0,
                         "artifact_dir": "nas-artifacts", "checkpoint_dir": "nas-checkpoints", "study": "my-study",
                         "objectives": "accuracy,latency,size", "max_latency_ms": 0.1, "hw": "my-cpu.json",
                         "timeout": 3600.0, "limit": 500, "sampler": "gp", "pruner": "mo-asha"}
_TYPE_HINTS = {"int": 1, "float": 1.0, "str": "", "bool": False, "list": [], "dict": {}}


def hint_value(name: str, kind: str | type, default: Any = None, choices: Iterable[Any] | None = None) -> Any:
    """A valid value for a commented-out hint: the default, a known example, the first choice, or a
    value of the right type (``kind``: a type or its name) to edit."""
    if default is not None:
        return default
    if name in HINTS:
        return HINTS[name]
    if choices:
        return next(iter(choices))
    return _TYPE_HINTS.get(kind if isinstance(kind, str) else kind.__name__, "")


def _comment(text: str | None) -> str:
    return f"  # {' '.join(text.split())}" if text else ""


def config_to_toml(config: Any, option_docs: Iterable[Any] = (), field_help: dict[str, str] | None = None) -> str:
    """``config`` (a SearchConfig) as a TOML document :func:`read_config` reads back to an equal
    config. Fields that are None (TOML has no null; None is their default) and options not set are
    written as commented-out hints, each valid TOML once uncommented, with its help.
    ``option_docs``: the strategy's declared :class:`~sparsenas.strategies.options.Option`\\ s;
    ``field_help``: field -> help text (the `nas search` flags')."""
    helps = field_help or {}
    values = {k: v for k, v in dataclasses.asdict(config).items() if k not in INTERNAL_FIELDS}
    kinds = {f.name: _kinds(f.type)[0] for f in dataclasses.fields(config)}
    lines = ["# nas search --config FILE; flags on the command line override these",
             "# (lines starting with '# key =' are unset keys: uncomment and edit to set them)"]
    for k, v in values.items():
        if k in TABLES.values() or k in _NAMED.values():
            continue
        if v is None:
            lines.append(f"# {_key(k)} = {_value(hint_value(k, min(kinds[k] - {'Any'})))}{_comment(helps.get(k))}")
        else:
            lines.append(f"{_key(k)} = {_value(v)}")
    options = values.get("options") or {}
    unset = [o for o in option_docs if o.name not in options]
    comments = [f"# {o.name} = {_value(hint_value(o.name, o.type, o.default, o.choices))}{_comment(o.help)}"
                for o in unset]
    lines += _table("options", options, comments)
    for table, field in _NAMED.items():
        if values.get(field) is not None:
            lines += _table(table, {"name": values[field], **(values.get(TABLES[table]) or {})})
        else:
            lines += ["", f"# [{table}]{_comment(helps.get(field))}", f"# name = {_value(HINTS[field])}"]
    return "\n".join(lines) + "\n"
