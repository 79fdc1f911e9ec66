"""The one supernet registry: (space, kind) -> the builder of that space's supernet of that kind.

A supernet registers itself beside its definition with ``@register_supernet(space, kind)`` on a
builder ``(space, task, **options) -> nn.Module`` (a class or a function), so a space never imports
its supernets and a strategy asks only here (``tests/test_architecture.py`` fails on a lookup
anywhere else). The modules of this package that register are imported on the first lookup.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, TypeVar

from ..errors import SparseNASError

T = TypeVar("T")

# kind -> what it is, for messages and listings
KINDS = {
    "mixed": "mixed-op supernet (DARTS/DASS)",
    "entangled": "weight-entangled supernet (TangleNAS/OFA)",
    "path": "single-path weight-sharing supernet over every architecture (balanced mixture)",
    "layer-choice": "NNI LayerChoice form (NNI's one-shot strategies)",
}
# modules of this package that register supernets, imported on the first lookup
_MODULES = ("mixed", "entangled", "entangled_mlp", "balanced")
_BUILDERS: dict[tuple[str, str], Any] = {}
_loaded = False


def register_supernet(space: str, kind: str) -> Callable[[T], T]:
    """Decorator: ``obj`` is the ``kind`` supernet builder of space ``space``."""
    if kind not in KINDS:
        raise ValueError(f"unknown supernet kind '{kind}'; kinds: {', '.join(KINDS)}")

    def deco(obj: T) -> T:
        if _BUILDERS.get((space, kind), obj) is not obj:
            raise ValueError(f"{KINDS[kind]} of space '{space}' registered twice")
        _BUILDERS[(space, kind)] = obj
        return obj

    return deco


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for name in _MODULES:
            importlib.import_module(f"{__package__}.{name}")


def find_supernet(space: str, kind: str) -> Any | None:
    """The builder of ``space``'s ``kind`` supernet, or None when it has none."""
    _load()
    return _BUILDERS.get((space, kind))


def spaces_with(kind: str) -> list[str]:
    """The spaces that have a ``kind`` supernet."""
    _load()
    return sorted(s for s, k in _BUILDERS if k == kind)


def get_supernet(space: str, kind: str, missing: str) -> Any:
    """The builder of ``space``'s ``kind`` supernet; when it has none, SparseNASError with ``missing``
    (what cannot be done) and the spaces that have one."""
    builder = find_supernet(space, kind)
    if builder is None:
        raise SparseNASError(f"{missing}; spaces with one: {', '.join(spaces_with(kind)) or '(none)'}")
    return builder
