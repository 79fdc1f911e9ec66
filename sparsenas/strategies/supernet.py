"""The supernet strategies' (dass, entangled, balanced) one training loop around their
:class:`~sparsenas.supernets.base.SupernetTrainer`, with checkpoints:

- epochs run as :func:`~sparsenas.supernets.base.run_epoch` runs them (generators seeded from
  (seed, epoch)), so an epoch depends only on the seed, the epoch and the state the previous
  epoch left, which the checkpoint holds;
- after an epoch rank 0 writes the checkpoint atomically (a temporary file, then
  ``os.replace``), as often as writes stay ~5% of the training (every epoch of a second or more;
  :class:`_CheckpointWriter`), and on the way out of an interrupt or error: the trainer's state
  (weights, architecture parameters, optimizers, step counters), the generators' states, the
  epoch, the history and the settings it was made with;
- the same command re-run loads it (``torch.load(weights_only=True)``) and goes on at the next
  epoch; a checkpoint made with other settings is a clear error, never silently mixed in;
- under ``torchrun`` every rank trains on its share of each batch (:mod:`sparsenas.distributed`),
  rank 0 alone reads and writes the checkpoint and the others wait at a barrier.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
from optuna.trial import FrozenTrial

from .. import distributed
from ..arch import Arch
from ..atomic import write_atomic
from ..errors import SparseNASError
from ..evaluators import Evaluator, TrainingDiverged, TrainResult
from ..supernets.base import SupernetTrainer, run_epoch, seed_everything
from .base import SearchContext
from .budget import Deadline

CHECKPOINT_FILE = "supernet.pt"
FORMAT = 1


# ---------------------------------------------------------------- generator states
def rng_state() -> dict[str, Any]:
    """Python, numpy and torch generator states as tensors and plain types."""
    version, inner, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(inner), gauss], "torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, inner, gauss = state["python"]
    random.setstate((version, tuple(inner), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- checkpoint files
def checkpoint_path(ctx: SearchContext, name: str = CHECKPOINT_FILE) -> str | None:
    return os.path.join(ctx.checkpoint_dir, name) if ctx.checkpoint_dir else None


def save_checkpoint(path: str, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a reader sees the old file or the new, never half of one."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomic(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a foreign or damaged file: say so, do not train over it silently
        raise SparseNASError(f"cannot read the supernet checkpoint {path}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}; delete it to start the supernet "
                             "training again") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SparseNASError(f"{path} is not a sparsenas supernet checkpoint (format {FORMAT}); delete it or pass "
                             "another --checkpoint-dir")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise _unusable(path, f"it lacks {', '.join(missing)}")
    if not isinstance(state["settings"], dict):
        raise _unusable(path, "its settings are not a table")
    return state


CHECKPOINT_KEYS = ("format", "settings", "epoch", "starts", "history", "trainer", "rng")


def _unusable(path: str, why: str) -> SparseNASError:
    return SparseNASError(f"the supernet checkpoint {path} cannot be resumed: {why} (a damaged file, or not one "
                          "sparsenas wrote); delete it to start the supernet training again, or pass another "
                          "--checkpoint-dir")


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(now))
    return [f"{k}={saved.get(k)!r} (checkpoint) vs {now.get(k)!r} (this run)" for k in keys
            if json.dumps(saved.get(k), sort_keys=True, default=str) != json.dumps(now.get(k), sort_keys=True, default=str)]


def say(ctx: SearchContext, message: str) -> None:
    if not distributed.is_main():
        return
    if ctx.progress.enabled:
        ctx.progress.log(message)
    else:
        print(message, file=sys.stderr)


def train_supernet(ctx: SearchContext, trainer: SupernetTrainer,
                   checkpoint: str = CHECKPOINT_FILE) -> list[dict[str, Any]]:
    """Build ``trainer``, resume it from its checkpoint (file ``checkpoint`` in the checkpoint
    folder) if there is one, train the remaining epochs (checkpointing each) and return the history
    of all epochs, the resumed ones included."""
    settings = {"strategy": trainer.kind, "seed": ctx.seed, **trainer.settings()}
    path = checkpoint_path(ctx, checkpoint)
    seed_everything(ctx.seed)
    trainer.build()
    state = None
    if distributed.is_main() and path:
        try:  # a folder that cannot be made is an error now, not after the first epoch
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except OSError as e:
            state = SparseNASError(f"cannot make the supernet checkpoint folder {os.path.dirname(path)}: "
                                   f"{e.strerror or e}; pass a writable --checkpoint-dir")
    if distributed.is_main() and path and state is None and os.path.exists(path):
        try:
            state = load_checkpoint(path)
        except SparseNASError as e:  # handed to every rank below, so none waits for a rank that stopped
            state = e
        diff = [] if isinstance(state, SparseNASError) else _differences(
            state["settings"], json.loads(json.dumps(settings, default=str)))
        if diff:
            state = SparseNASError(f"the supernet checkpoint {path} was made with other settings: {'; '.join(diff)}. "
                                   "Re-run with the same settings to resume it, or pass another --checkpoint-dir "
                                   "(or --study) to start a new one")
    state = distributed.broadcast(state)
    if isinstance(state, SparseNASError):
        raise state
    start, history, starts = 0, [], []
    if state is not None:
        try:
            trainer.load_state_dict(state["trainer"])
            set_rng_state(state["rng"])
            start, history, starts = int(state["epoch"]), list(state["history"]), list(state["starts"])
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:  # keys or shapes not the trainer's
            raise _unusable(path or "", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        say(ctx, f"{trainer.kind}: resuming the supernet from {path} at epoch {start + 1}/{trainer.epochs}"
            if start < trainer.epochs else f"{trainer.kind}: the supernet in {path} is fully trained; going on from it")
    if path is None:
        say(ctx, f"{trainer.kind}: this storage has no folder beside it, so the supernet is not checkpointed; pass "
                 "--checkpoint-dir to resume after a crash")
    starts.append(start)
    writer = _CheckpointWriter(path if distributed.is_main() else None)
    try:
        for epoch in range(start, trainer.epochs):
            entry = run_epoch(trainer, ctx.seed, epoch)
            history.append(entry)
            writer.epoch_done(lambda: {"format": FORMAT, "settings": json.loads(json.dumps(settings, default=str)),
                                       "epoch": epoch + 1, "epochs": trainer.epochs, "starts": starts,
                                       "history": history, "trainer": trainer.state_dict(), "rng": rng_state()},
                              last=epoch + 1 == trainer.epochs)
            distributed.barrier()  # the other ranks wait for the checkpoint: a kill now loses no rank's epoch
    except BaseException:
        writer.flush()  # an interrupt or an error mid-epoch: the last finished epoch is kept, never a partial one
        raise
    return history


class _CheckpointWriter:
    """Writes a supernet's checkpoint after an epoch when the time since the last write is at least
    ``1 / WRITE_SHARE`` times what that write took (so writes cost at most ~5% of the training;
    every epoch of a supernet whose epochs take a second or more), and after the last epoch. An
    epoch not written is kept in memory (a copy: the trainer's tensors change in place) and written
    by :meth:`flush` when the loop stops on an exception. A SIGKILL loses at most the epochs since
    the last write. Before, every epoch was written: with epochs of ~18 ms (g2g_mlp on mnist1d)
    the writes doubled the supernet's time (docs/measurements.md)."""

    WRITE_SHARE = 0.05

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.pending: dict[str, Any] | None = None
        self.write_s = 0.0  # the first epoch is always written
        self.written_at = time.monotonic()

    def epoch_done(self, state: Callable[[], dict[str, Any]], last: bool) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if last or (now - self.written_at) * self.WRITE_SHARE >= self.write_s:
            self.pending = None
            save_checkpoint(self.path, state())
            self.written_at = time.monotonic()
            self.write_s = self.written_at - now
        else:
            st = state()
            # the trainer's tensors change in place as training goes on: cloned; the history and the
            # generator states are new objects or only appended to (copy.deepcopy took 5 ms an epoch)
            self.pending = {**st, "history": list(st["history"]), "starts": list(st["starts"]),
                            "trainer": _cloned(st["trainer"])}

    def flush(self) -> None:
        if self.path is not None and self.pending is not None:
            save_checkpoint(self.path, self.pending)
            self.pending = None


def _cloned(state: Any) -> Any:
    """``state`` (nested dicts and lists of tensors and plain values) with every tensor cloned."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: _cloned(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cloned(v) for v in state)
    if isinstance(state, np.ndarray):
        return state.copy()
    return state


# The one error policy of a standalone retraining: a network that diverges or does not fit in memory
# is a FAIL trial with the reason, and the search goes on with the next architecture.
RETRAIN_ERRORS = (TrainingDiverged, torch.OutOfMemoryError, MemoryError)


def retrain_and_log(ctx: SearchContext, evaluator: Evaluator, arch: Arch, *, strategy: str, what: str,
                    deadline: Deadline | None = None, latency_after: bool = False,
                    extra: Callable[[torch.nn.Module, TrainResult], dict[str, Any]] | None = None,
                    **attrs: Any) -> tuple[FrozenTrial, TrainResult | None]:
    """Train ``arch`` from scratch with ``evaluator``, evaluate it and log it as a trial of the study
    with its weights (so ``nas export`` needs no ``--train``): what the supernet strategies do with
    the architectures they found. ``what`` is shown as the trial starts; ``deadline`` times the
    training; the latency is taken before the training, or after it (``latency_after``);
    ``extra(model, trained)`` adds attrs of the trained network. Returns the stored trial and the training's
    result (None when it failed, see :data:`RETRAIN_ERRORS`)."""
    tracker = ctx.tracker
    choices = ctx.space.choices(ctx.task)
    ctx.progress.trial_started(len(tracker.study.trials), what)
    with deadline.timed() if deadline is not None else contextlib.nullcontext():
        model = evaluator.build(arch)
        lat = None if latency_after else evaluator.latency(arch, model)
        try:
            trained = evaluator.train(model, on_step=ctx.progress.trial_progress)
        except RETRAIN_ERRORS as e:
            reason = f"{type(e).__name__}: {e}"
            say(ctx, f"{strategy}: retraining {arch.digest()} failed ({reason}); logged as a FAIL trial")
            ft = tracker.log_failed(arch, choices, reason, strategy=strategy, **attrs)
            ctx.progress.trial_finished(ft)
            return ft, None
        result = evaluator.result(arch, model, trained, lat or evaluator.latency(arch, model))
    ft = tracker.log_arch(arch, choices, result, weights=model.state_dict(), strategy=strategy, **attrs,
                          **(extra(model, trained) if extra else {}))
    ctx.progress.trial_finished(ft)
    return ft, trained
