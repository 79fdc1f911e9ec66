"""Arch: one architecture of a search space, as data.

An Arch is (space name, space version, choices); it knows nothing about torch, so it can be
stored in an Optuna trial, written to ``arch.json`` and read back anywhere.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from .errors import SparseNASError

_SCALARS = (bool, int, float, str, type(None))


def _freeze(value: Any, key: str) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v, key) for v in value)
    raise SparseNASError(f"architecture choice '{key}' has a value of type {type(value).__name__}; "
                         "choices must be numbers, strings, booleans or lists of them")


@dataclass(frozen=True)
class Arch:
    """One architecture of a search space: the space's name and version and its choices; frozen,
    JSON round trip (``to_json``/``from_json``), stable ``digest()``."""

    space: str
    version: int
    choices: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        frozen = {str(k): _freeze(v, str(k)) for k, v in sorted(dict(self.choices).items())}
        object.__setattr__(self, "choices", MappingProxyType(frozen))

    def __getitem__(self, key: str) -> Any:
        return self.choices[key]

    def __hash__(self) -> int:
        return hash(self.digest())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Arch) and self.to_dict() == other.to_dict()

    def to_dict(self) -> dict:
        def thaw(v: Any) -> Any:
            return [thaw(x) for x in v] if isinstance(v, tuple) else v

        return {"space": self.space, "version": self.version,
                "choices": {k: thaw(v) for k, v in self.choices.items()}}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent)

    @classmethod
    def from_dict(cls, d: Any) -> "Arch":
        if not isinstance(d, dict) or not {"space", "version", "choices"} <= set(d):
            raise SparseNASError("malformed architecture: expected a JSON object with keys "
                                 "'space', 'version' and 'choices'")
        if not isinstance(d["choices"], dict) or not isinstance(d["space"], str):
            raise SparseNASError("malformed architecture: 'space' must be a string and 'choices' an object")
        try:
            version = int(d["version"])
        except (TypeError, ValueError):
            raise SparseNASError(f"malformed architecture: 'version' must be an integer, got {d['version']!r}") from None
        return cls(d["space"], version, d["choices"])

    @classmethod
    def from_json(cls, s: str) -> "Arch":
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            raise SparseNASError(f"malformed architecture JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        except RecursionError:
            raise SparseNASError("malformed architecture JSON: nested too deeply") from None
        return cls.from_dict(d)

    def digest(self) -> str:
        """A short stable hash: equal architectures share it across processes and machines."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    def replace(self, **changes: Any) -> "Arch":
        return Arch(self.space, self.version, {**self.choices, **changes})
