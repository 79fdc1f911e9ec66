"""Search strategies: one module each, registered by name with ``@STRATEGIES.register``."""
from ..registry import Registry

__all_modules__ = ("samplers", "dass", "balanced", "entangled", "nni_strategies")

STRATEGIES: Registry = Registry("strategy", __name__)
