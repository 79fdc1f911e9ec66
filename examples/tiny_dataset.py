"""A dataset in one file: noisy horizontal or vertical stripes, 8x8 grey images, 2 classes.

Use it without changing sparsenas: ``PYTHONPATH=examples nas search --dataset tiny_dataset:stripes ...``,
or as a plug-in (``[project.entry-points."sparsenas.datasets"] stripes = "tiny_dataset:stripes"``).
A loader takes (data_dir, seed) and returns RawData; sparsenas splits, resizes and normalises it.
"""
from __future__ import annotations

import numpy as np

from sparsenas.data import RawData, register_dataset


@register_dataset("stripes", "noisy horizontal or vertical stripes: 300 8x8 images, 2 classes",
                  raw_form="0/1 stripes plus N(0, 0.5) noise, float32 (N, 1, 8, 8)", channels="gray")
def stripes(data_dir, seed: int) -> RawData:
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(300) % 2)
    phase = rng.integers(0, 2, size=300)
    grid = (np.arange(8) + phase[:, None]) % 2  # (N, 8) alternating 0/1 rows
    x = np.where(y[:, None, None] == 0, grid[:, :, None], grid[:, None, :]) * np.ones((1, 8, 8))
    x = x + rng.normal(0, 0.5, x.shape)
    return RawData(x[:, None].astype(np.float32), y.astype(np.int64), ["horizontal", "vertical"],
                   f"stripes (seed {seed})")
