"""scikit-learn's 8x8 handwritten digits: the default image dataset, no files needed."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import RawData, register_dataset


@register_dataset("digits", "scikit-learn handwritten digits: 1797 8x8 images, 10 classes, resized to 16x16 "
                  "by default (bundled, no download)", default_size=16,
                  raw_form="sklearn.datasets.load_digits().images / 16 (0..16 pixel counts scaled), float32 (N, 1, 8, 8)",
                  channels="gray", value_range=(0.0, 1.0))
def load_digits(data_dir: Path | None, seed: int) -> RawData:
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # pixel values are 0..16
    return RawData(x, d.target.astype(np.int64), [str(c) for c in d.target_names], "sklearn.datasets.load_digits")
