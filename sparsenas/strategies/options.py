"""Strategy options, declared once per strategy.

Each :class:`~sparsenas.strategies.base.Strategy` lists its options as ``options: tuple[Option, ...]``
at class level. From that one declaration come the ``nas search`` flags (grouped per strategy in
``--help``), the ``[options]`` table of a config file, and the error for an option a strategy does
not take or a value of the wrong type (exit 2, naming the allowed options). Light on import: the CLI
reads these without loading torch's kernels for anything else.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import SparseNASError

__all__ = ["Option", "resolve_options", "setting", "options_of"]

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               list: "a list", dict: "a table of choice = value"}


@dataclass(frozen=True)
class Option:
    """One option of a strategy: ``type`` is int, float, str, bool, list (of ``item``) or dict.

    ``default`` None means the strategy decides at run time (from the space, the budget, ...);
    ``help`` says how.
    """

    name: str
    type: type
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None
    item: type | None = None  # element type of a list option

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def metavar(self) -> str:
        if self.choices:
            return "{" + ",".join(map(str, self.choices)) + "}"
        return {int: "N", float: "X", str: "TEXT", bool: "true|false", list: "A,B,...", dict: "K=V,..."}[self.type]

    def describe(self) -> str:
        default = "" if self.default is None else f" (default {_show(self.default)})"
        return f"{self.help}{default}"

    # -- values
    def convert(self, value: Any, strategy: str) -> Any:
        """``value`` (from Python or a config file) checked against the declared type; a list becomes
        a tuple only where the default is one. Raises SparseNASError naming the option."""
        def bad(expected: str) -> SparseNASError:
            return SparseNASError(f"strategy '{strategy}': option {self.name} ({self.flag}) must be {expected}, "
                                  f"got {value!r}")

        t = self.type
        if t is bool:
            if not isinstance(value, bool):
                raise bad(_TYPE_NAMES[bool])
        elif t is int:
            if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
                raise bad(_TYPE_NAMES[int])
            value = int(value)
        elif t is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(_TYPE_NAMES[float])
            value = float(value)
        elif t is str:
            if not isinstance(value, str):
                raise bad(_TYPE_NAMES[str])
        elif t is list:
            if not isinstance(value, (list, tuple)):
                raise bad(_TYPE_NAMES[list])
            item = Option(self.name, self.item) if self.item else None
            value = [item.convert(v, strategy) if item else v for v in value]
            value = tuple(value) if isinstance(self.default, tuple) else value
        elif t is dict:
            if not isinstance(value, dict):
                raise bad(_TYPE_NAMES[dict])
            value = dict(value)
        if self.choices is not None and value not in self.choices:
            raise bad("one of " + ", ".join(map(str, self.choices)))
        return value

    def parse(self, text: str) -> Any:
        """A command-line value: numbers and words as typed, ``a,b`` lists and ``k=v,k2=v2`` tables
        (values read as JSON where they parse, else as text)."""
        if self.type is bool:
            if text.lower() in ("true", "yes", "1", "on"):
                return True
            if text.lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError(text)
        if self.type in (int, float, str):
            return self.type(text)
        if self.type is list:
            return [(self.item or _scalar)(v.strip()) for v in text.split(",") if v.strip()]
        pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(text)
        return {k.strip(): _scalar(v.strip()) for k, v in pairs}


def setting(default: Any, help: str, *, decided_at_run_time: bool = False, choices: tuple[Any, ...] | None = None,
            item: type | None = None) -> Any:
    """A field of a strategy's settings dataclass that is also one of its options, so the option is
    declared once (:func:`options_of` makes the :class:`Option`). ``decided_at_run_time``: the option's
    default is None (the strategy sizes it, e.g. to the budget) and ``help`` may say ``{default}``."""
    return dataclasses.field(default=default, metadata={"option": {"help": help, "run_time": decided_at_run_time,
                                                                     "choices": choices, "item": item}})


def options_of(settings: type, *more: Option) -> tuple[Option, ...]:
    """The options of a settings dataclass (its :func:`setting` fields, in order), then ``more``."""
    out = []
    for f in dataclasses.fields(settings):
        spec = f.metadata.get("option")
        if spec is None:
            continue
        kind = list if isinstance(f.default, (list, tuple)) else type(f.default)
        out.append(Option(f.name, kind, None if spec["run_time"] else f.default,
                          spec["help"].format(default=f.default), spec["choices"], spec["item"]))
    return (*out, *more)


def _scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _show(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return str(v).lower() if isinstance(v, bool) else str(v)


def resolve_options(strategy: str, declared: Iterable[Option], given: dict[str, Any]) -> dict[str, Any]:
    """The options a strategy runs with: declared defaults (those not None), then ``given`` checked
    against the declaration. ``None`` values in ``given`` mean "not set". An unknown name or a value
    of the wrong type is a SparseNASError naming what the strategy takes."""
    by_name = {o.name: o for o in declared}
    unknown = sorted(k for k, v in given.items() if v is not None and k not in by_name)
    if unknown:
        takes = ", ".join(by_name) or "no options"
        raise SparseNASError(f"strategy '{strategy}' does not take option(s) {', '.join(unknown)}; it takes: {takes}")
    resolved = {o.name: o.default for o in by_name.values() if o.default is not None}
    for k, v in given.items():
        if v is not None:
            resolved[k] = by_name[k].convert(v, strategy)
    return resolved
