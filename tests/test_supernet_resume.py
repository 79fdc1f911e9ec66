"""Supernet searches checkpoint every epoch and a re-run resumes at the next epoch, ending with the
architecture an uninterrupted run with the same seed derives (dass, entangled, balanced)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

import sparsenas
from sparsenas.errors import SparseNASError
from sparsenas.strategies.supernet import _CheckpointWriter
from sparsenas.strategies import balanced as balanced_strategy  # noqa: F401 (registers it)
from sparsenas.supernets.dass_trainer import DassTrainer
from sparsenas.supernets.entangled_trainer import EntangledTrainer
from sparsenas.supernets.balanced import BalancedTrainer
from sparsenas.supernets.base import step_limit

ROOT = Path(__file__).resolve().parents[1]


def checkpoint(db: Path, study: str) -> dict:
    return torch.load(db.parent / f"{db.stem}-checkpoints" / study / "supernet.pt", weights_only=True)


def interrupt_at(monkeypatch, trainer_cls, epoch: int, after_steps: int = 0) -> None:
    """Stop the search as Ctrl-C would when epoch ``epoch`` (0-based) is about to start, or after
    ``after_steps`` of its steps (its weights and optimizer changed: what a resume must not see)."""
    original = trainer_cls.train_epoch

    def train_epoch(self, e):
        if e == epoch:
            if after_steps:
                with step_limit(after_steps):
                    original(self, e)
            raise KeyboardInterrupt
        return original(self, e)

    monkeypatch.setattr(trainer_cls, "train_epoch", train_epoch)


DASS_FLAGS = ["--space", "sparse_darts", "--strategy", "dass", "--dataset", "synthetic", "--limit", "64",
              "--search-epochs", "4", "--retrain-epochs", "1", "--retrain-top", "1", "--cells", "3", "--no-progress"]
DASS_KW = dict(space="sparse_darts", strategy="dass", dataset="synthetic", limit=64, progress=False,
               options=dict(search_epochs=4, retrain_epochs=1, retrain_top=1, cells=3))


@pytest.mark.slow
def test_dass_killed_with_sigkill_mid_search_resumes_at_the_next_epoch_and_derives_the_same_arch(tmp_path):
    db = tmp_path / "k.db"
    argv = [sys.executable, "-m", "sparsenas.cli", "search", *DASS_FLAGS, "--storage", f"sqlite:///{db}", "--study", "s"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ckpt = db.parent / "k-checkpoints" / "s" / "supernet.pt"
    proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    # the first epoch's checkpoint is always written; later ones as often as writing stays cheap
    while proc.poll() is None and time.monotonic() < deadline and not ckpt.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    killed_at = torch.load(ckpt, weights_only=True)["epoch"]  # atomic replace: never a half-written file
    assert 1 <= killed_at < 4  # killed after epoch 1 (epochs 2-3 may have finished before the signal landed)
    # the signal may land mid-write: the checkpoint stays whole, beside at most the killed writer's temporary file
    assert all(p.name.startswith(".supernet.pt.") and p.suffix == ".tmp" for p in ckpt.parent.iterdir()
               if p.name != "supernet.pt")

    again = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming the supernet from {ckpt} at epoch {killed_at + 1}/4" in again.stderr
    assert [p.name for p in ckpt.parent.iterdir()] == ["supernet.pt"]  # the resumed run's writes removed it
    state = torch.load(ckpt, weights_only=True)
    assert state["starts"] == [0, killed_at] and state["epoch"] == 4
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3, 4]

    ref = sparsenas.search(storage=f"sqlite:///{tmp_path / 'ref.db'}", study="s", **DASS_KW)
    resumed = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    assert ref.user_attrs["dass_alpha_history"] == resumed.user_attrs["dass_alpha_history"]
    (argmax_ref,) = [t for t in ref.trials if t.user_attrs["derivation"] == "argmax"]
    (argmax_res,) = [t for t in resumed.trials if t.user_attrs["derivation"] == "argmax"]
    assert argmax_ref.params == argmax_res.params


def test_entangled_interrupted_in_epoch_3_resumes_there_with_the_same_derived_arch(tmp_path, monkeypatch):
    kw = dict(space="g2g_mlp", strategy="entangled", dataset="synthetic", limit=96, batch_size=32, trials=1,
              progress=False, options={"search_epochs": 3, "sandwich_epochs": 2, "sandwich_random": 1,
                                       "retrain_epochs": 0, "tau_archs": 0, "finetune_steps": 0, "mask_every": 2})
    ref = sparsenas.search(storage=f"sqlite:///{tmp_path / 'ref.db'}", study="e", **kw)
    db = tmp_path / "k.db"
    with monkeypatch.context() as m:
        interrupt_at(m, EntangledTrainer, 2, after_steps=2)
        # only epoch 1 is written as it ends; epoch 2 waits in memory and is written on the way out of the
        # interrupt (a copy: were it the trainer's own tensors, epoch 3's steps would leak into it)
        m.setattr(_CheckpointWriter, "WRITE_SHARE", 0.0)
        with pytest.raises(KeyboardInterrupt):
            sparsenas.search(storage=f"sqlite:///{db}", study="e", **kw)
    state = checkpoint(db, "e")
    assert state["epoch"] == 2 and state["starts"] == [0]
    # what it holds: weights and alphas, optimizers, generators, settings; read with weights_only
    assert any(k.startswith("alphas.") for k in state["trainer"]["supernet"])
    assert state["trainer"]["w_opt"]["state"] and state["trainer"]["a_opt"]["state"]
    assert {"python", "numpy", "torch"} <= set(state["rng"]) and state["settings"]["strategy"] == "entangled"

    with pytest.raises(SparseNASError, match="arch_lr"):  # another setting: never silently mixed in
        sparsenas.search(storage=f"sqlite:///{db}", study="e", **{**kw, "options": {**kw["options"], "arch_lr": 0.01}})
    resumed = sparsenas.search(storage=f"sqlite:///{db}", study="e", **kw)
    state = checkpoint(db, "e")
    assert state["starts"] == [0, 2] and [h["epoch"] for h in state["history"]] == [1, 2, 3, 4, 5]
    assert [h["phase"] for h in state["history"]] == ["gradient"] * 3 + ["sandwich"] * 2
    assert resumed.user_attrs["entangled_derived_arch"] == ref.user_attrs["entangled_derived_arch"]
    assert resumed.user_attrs["entangled_alphas"] == ref.user_attrs["entangled_alphas"]
    assert [t.params for t in resumed.trials] == [t.params for t in ref.trials]


def test_balanced_interrupted_resumes_with_the_same_ranking(tmp_path, monkeypatch):
    kw = dict(space="pooling_resnet20", strategy="balanced", dataset="synthetic", limit=64, epochs=1,
              progress=False, options={"supernets": 2, "search_epochs": 3, "retrain_top": 1,
                                       "fix": {"placement": "2-3-5"}})
    ref = sparsenas.search(storage=f"sqlite:///{tmp_path / 'ref.db'}", study="b", **kw)
    db = tmp_path / "k.db"
    with monkeypatch.context() as m:
        interrupt_at(m, BalancedTrainer, 2)
        with pytest.raises(KeyboardInterrupt):
            sparsenas.search(storage=f"sqlite:///{db}", study="b", **kw)
    assert checkpoint(db, "b")["epoch"] == 2
    resumed = sparsenas.search(storage=f"sqlite:///{db}", study="b", **kw)
    assert checkpoint(db, "b")["starts"] == [0, 2]
    estimates = [(t.params, t.values[0], t.user_attrs["estimates"]) for t in resumed.trials
                 if t.user_attrs["stage"] == "estimate"]
    assert estimates == [(t.params, t.values[0], t.user_attrs["estimates"]) for t in ref.trials
                         if t.user_attrs["stage"] == "estimate"]


def test_checkpoint_folder_follows_the_storage_or_checkpoint_dir(tmp_path):
    from sparsenas.tracking import checkpoint_dir_for

    assert checkpoint_dir_for(f"sqlite:///{tmp_path}/a.db", "s1") == f"{tmp_path}/a-checkpoints/s1"
    assert checkpoint_dir_for(f"journal://{tmp_path}/j.log", "x/y") == f"{tmp_path}/j-checkpoints/x_y"
    assert checkpoint_dir_for("postgresql://u@h/db", "s") is None
    assert checkpoint_dir_for("postgresql://u@h/db", "s", str(tmp_path)) == f"{tmp_path}/s"


class _RunsCode:
    """A pickle that would run a shell command when unpickled without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_damaged_or_hostile_checkpoint_is_a_clear_error_and_runs_nothing(tmp_path):
    import pickle

    kw = dict(space="g2g_mlp", strategy="entangled", dataset="synthetic", limit=32, batch_size=32, trials=1,
              progress=False, options={"search_epochs": 1, "sandwich_epochs": 0, "retrain_epochs": 0, "tau_archs": 0})
    db = tmp_path / "c.db"
    ckpt = tmp_path / "c-checkpoints" / "x" / "supernet.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(SparseNASError, match="cannot read the supernet checkpoint"):
        sparsenas.search(storage=f"sqlite:///{db}", study="x", **kw)
    marker = tmp_path / "ran"
    with open(ckpt, "wb") as f:
        pickle.dump({"format": 1, "trainer": _RunsCode(marker)}, f, protocol=2)
    with pytest.raises(SparseNASError, match="cannot read the supernet checkpoint"):
        sparsenas.search(storage=f"sqlite:///{db}", study="x", **kw)
    assert not marker.exists()  # weights_only: the pickle's code never ran
    assert not optuna.load_study(study_name="x", storage=f"sqlite:///{db}").trials


def test_unwritable_checkpoint_dir_is_a_clear_cli_error(tmp_path):
    from _small_study import run_cli

    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should go")
    rc, _, err = run_cli(["search", "--space", "g2g_mlp", "--strategy", "entangled", "--dataset", "synthetic",
                          "--limit", "32", "--trials", "1", "--search-epochs", "1", "--retrain-epochs", "0",
                          "--storage", f"sqlite:///{tmp_path / 'u.db'}", "--checkpoint-dir", str(blocker),
                          "--no-progress"])
    assert rc == 2 and "checkpoint folder" in err and "Traceback" not in err
