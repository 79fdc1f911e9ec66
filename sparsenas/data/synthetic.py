"""A tiny, seed-determined, easily learnable image dataset for tests and smoke runs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import RawData, register_dataset

_CENTRES = {"top-left": (2, 2), "top-right": (2, 5), "bottom-left": (5, 2), "bottom-right": (5, 5)}


@register_dataset("synthetic", "synthetic Gaussian blobs: 400 8x8 images, 4 classes (blob position); "
                  "seed-determined, for tests",
                  raw_form="Gaussian blob (peak 1) plus N(0, 0.3) noise, float32 (N, 1, 8, 8)", channels="gray")
def load_synthetic(data_dir: Path | None, seed: int, n: int = 400, size: int = 8) -> RawData:
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % len(_CENTRES))
    centres = np.array(list(_CENTRES.values()), dtype=np.float64)[y] + rng.normal(0, 0.4, (n, 2))
    grid = np.arange(size, dtype=np.float64)
    dr = (grid[None, :] - centres[:, :1]) ** 2  # (n, size) squared row distances
    dc = (grid[None, :] - centres[:, 1:]) ** 2
    x = np.exp(-(dr[:, :, None] + dc[:, None, :]) / (2 * 1.2 ** 2)) + rng.normal(0, 0.3, (n, size, size))
    return RawData(x.astype(np.float32)[:, None], y.astype(np.int64), list(_CENTRES),
                   f"synthetic Gaussian blobs (seed {seed})")
