"""Array helpers shared by every dataset: stratified splitting, resizing, normalising."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def split_indices(y: np.ndarray, val_fraction: float, test_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded, stratified (train, val, test) index arrays with exact global sizes.

    Each sample gets its quantile within its class (classes shuffled by ``seed``); sorting by
    quantile interleaves the classes, so every contiguous slice - including ``train[:limit]`` -
    keeps the class proportions, even for classes too small to round per class.
    """
    n = len(y)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    ys = np.asarray(y)[perm]
    _, cls = np.unique(ys, return_inverse=True)
    counts = np.bincount(cls)
    order = np.argsort(cls, kind="stable")
    rank = np.arange(n) - (np.cumsum(counts) - counts)[cls[order]]
    q = np.empty(n)
    q[order] = (rank + 0.5) / counts[cls[order]]
    ranked = perm[np.argsort(q, kind="stable")]
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    return ranked[n_test + n_val:], ranked[n_test:n_test + n_val], ranked[:n_test]


def resize_tensor(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (N, C, H, W) bilinearly to (size, size), or (N, C, L) linearly to length ``size``
    (align_corners=False). The one resize of both the training pipeline and the exported graphs'
    input step (data/contract.py), so both see the same pixels; a sequence is resized as a 1-row
    image, which ONNX Resize runs everywhere (a 3-D linear Resize is not in every runtime)."""
    if x.ndim == 3:
        return F.interpolate(x.unsqueeze(2), size=(1, size), mode="bilinear", align_corners=False).squeeze(2)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def resize(x: np.ndarray, size: int | None, chunk: int = 4096) -> np.ndarray:
    """:func:`resize_tensor` on a numpy array, in chunks; ``None`` or the same size: unchanged."""
    if size is None or x.shape[2:] == (size,) * (x.ndim - 2):
        return x
    out = [resize_tensor(torch.tensor(x[i:i + chunk]), size).numpy() for i in range(0, len(x), chunk)]
    return np.concatenate(out) if out else np.zeros(x.shape[:2] + (size,) * (x.ndim - 2), np.float32)


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over all samples and positions; a constant channel gets std 1."""
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, dtype=np.float64)
    std = x.std(axis=axes, dtype=np.float64)
    return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return ((x - mean.reshape(shape)) / std.reshape(shape)).astype(np.float32)
