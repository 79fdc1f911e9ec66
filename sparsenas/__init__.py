"""sparsenas: neural-architecture search for sparse networks.

Light on import: torch and optuna load only when a function that needs them is called.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
# the Python API (sparsenas.api): export and report are there only, since sparsenas.export and
# sparsenas.report are the modules that implement them
_API = ("search", "SearchConfig", "train", "inspect", "profile", "validate_profile", "studies")
__all__ = [*_API, "load", "Arch", "Task", "__version__"]

from .arch import Arch
from .task import Task


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    if name == "load":
        from .export import load

        return load
    raise AttributeError(f"module 'sparsenas' has no attribute {name!r}")
