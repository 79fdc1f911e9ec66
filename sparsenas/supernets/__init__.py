"""Supernets: weight-sharing networks that stand in for many architectures at once during a search."""
