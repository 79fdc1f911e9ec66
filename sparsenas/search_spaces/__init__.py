"""Search spaces: one module each, registered by name with ``@SPACES.register``.

Spaces outside the package: an entry point in group ``sparsenas.spaces`` or ``--space module:Class``
(see :mod:`sparsenas.registry`); either way a concrete :class:`SearchSpace` subclass.
"""
from ..registry import GROUPS, Registry, subclass_adopter
from .base import SearchSpace

__all_modules__ = ("sparse_mbv2", "sparse_darts", "g2g_mlp", "pooling_resnet20")

SPACES: Registry = Registry("search space", __name__, group=GROUPS["space"],
                            adopt=subclass_adopter("search space", SearchSpace), alias=lambda cls: cls.name)


def get_space(name: "str | type[SearchSpace] | SearchSpace") -> SearchSpace:
    """An instance of the space ``name`` (a registered name, a SearchSpace subclass, or an instance,
    returned as it is)."""
    if isinstance(name, SearchSpace):
        SPACES.name_of(name)
        return name
    return SPACES.get(name)()
