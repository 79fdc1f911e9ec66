"""Search spaces: one module each, registered by name with ``@SPACES.register``."""
from ..registry import Registry

__all_modules__ = ("sparse_mbv2", "g2g_mlp", "pooling_resnet20")

SPACES: Registry = Registry("search space", __name__)


def get_space(name: str):
    """An instance of the registered space ``name``."""
    return SPACES.get(name)()
