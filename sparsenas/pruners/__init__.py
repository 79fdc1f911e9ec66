"""Optuna pruners sparsenas adds (each module depends on Optuna and NumPy only)."""
