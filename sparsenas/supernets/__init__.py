"""Supernets: one network holding many architectures of a space, trained once and searched.

Each kind lives in its own module, with its trainer (``mixed``: DARTS/DASS mixed ops; ``entangled``
and ``entangled_mlp``: weight-entangled supernets; ``balanced``: a mixture of single-path supernets).
Every supernet registers itself in the one registry, keyed by (space, kind)
(:mod:`sparsenas.supernets.registry`), so a space never imports its supernets.
"""
