"""Supernets: one network holding many architectures of a space, trained once and searched.

Each kind lives in its own module (``mixed``: DARTS/DASS mixed ops; ``balanced``: a mixture of
supernets over pooling placements). Supernet builders are looked up per space through each kind's
registry, so a space never imports its supernets.
"""

# modules registering weight-entangled supernets (``entangled.ENTANGLED``), loaded on first lookup
__all_modules__ = ("entangled", "entangled_mlp")
