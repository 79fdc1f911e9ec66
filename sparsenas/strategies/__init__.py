"""Search strategies: one module each, registered by name with ``@STRATEGIES.register``.

Strategies outside the package: an entry point in group ``sparsenas.strategies`` or
``--strategy module:Class`` (a concrete :class:`~sparsenas.strategies.base.Strategy` subclass).
"""
from typing import Any

from ..registry import GROUPS, Registry, subclass_adopter

__all_modules__ = ("samplers", "dass", "balanced", "entangled", "nni_strategies")


def _adopt(obj: Any, key: str, where: str) -> Any:
    from .base import Strategy  # imports torch: only when a plug-in is asked for

    return subclass_adopter("strategy", Strategy)(obj, key, where)


STRATEGIES: Registry = Registry("strategy", __name__, group=GROUPS["strategy"], adopt=_adopt,
                                alias=lambda cls: cls.name)
