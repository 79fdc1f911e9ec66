"""Supernets: one network holding every architecture of a space, trained once and searched.

Each kind lives in its own module (``mixed``: DARTS/DASS mixed ops). Supernet builders are looked
up per space through each kind's registry, so a space never imports its supernets.
"""
