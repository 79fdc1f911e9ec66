"""Supernet strategies under ``torchrun --nproc-per-node 2`` (gloo on CPU): rank 0 alone writes the
study and the checkpoint, and on a space without BatchNorm (g2g_mlp) two processes derive what one
does. With BatchNorm (dass on sparse_darts) each rank normalises its own half of a batch, so the
numbers differ from one process (README, "Checkpoints, resume and torchrun")."""
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

import sparsenas

ROOT = Path(__file__).resolve().parents[1]


def torchrun(tmp_path: Path, flags: list[str]) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "sparsenas.cli", "search", *flags, "--no-progress", "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_entangled_under_torchrun_with_two_processes_derives_the_one_process_arch(tmp_path):
    flags = ["--space", "g2g_mlp", "--strategy", "entangled", "--dataset", "synthetic", "--limit", "64",
             "--batch-size", "32", "--trials", "1", "--search-epochs", "2", "--retrain-epochs", "0"]
    db = tmp_path / "two.db"
    run = torchrun(tmp_path, [*flags, "--storage", f"sqlite:///{db}", "--study", "e"])
    assert run.returncode == 0, run.stderr[-3000:]
    json_lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(json_lines) == 1 and json.loads(json_lines[0])["study"] == "e"  # rank 0 alone reports
    two = optuna.load_study(study_name="e", storage=f"sqlite:///{db}")
    assert [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{db}")] == ["e"]
    state = torch.load(tmp_path / "two-checkpoints" / "e" / "supernet.pt", weights_only=True)
    sandwich = state["epochs"] - 2  # g2g_mlp's default sandwich epochs
    assert state["epoch"] == state["epochs"] and [h["phase"] for h in state["history"]] == (
        ["gradient"] * 2 + ["sandwich"] * sandwich)

    one = sparsenas.search(space="g2g_mlp", strategy="entangled", dataset="synthetic", limit=64, batch_size=32,
                           trials=1, storage=f"sqlite:///{tmp_path / 'one.db'}", study="e", progress=False,
                           options={"search_epochs": 2, "retrain_epochs": 0})
    assert two.user_attrs["entangled_derived_arch"] == one.user_attrs["entangled_derived_arch"]
    assert two.user_attrs["entangled_alphas"] == one.user_attrs["entangled_alphas"]  # rounded to 4 digits
    # the sandwich-trained weights agree too: an architecture both searches evaluated scores the same
    # (which ones NSGA-II proposes after the first few also depends on latencies timed in each run)
    acc_one = {t.user_attrs["arch_digest"]: t.values[0] for t in one.trials}
    acc_two = {t.user_attrs["arch_digest"]: t.values[0] for t in two.trials}
    common = sorted(set(acc_one) & set(acc_two))
    assert len(common) >= 3  # at least the derived, largest and smallest, evaluated first by both
    assert [acc_two[k] for k in common] == pytest.approx([acc_one[k] for k in common], abs=1e-3)


@pytest.mark.slow
def test_dass_under_torchrun_with_two_processes_trains_checkpoints_and_logs_once(tmp_path):
    db = tmp_path / "d.db"
    run = torchrun(tmp_path, ["--space", "sparse_darts", "--strategy", "dass", "--dataset", "synthetic",
                              "--limit", "64", "--search-epochs", "2", "--retrain-epochs", "1", "--retrain-top", "1",
                              "--cells", "3", "--storage", f"sqlite:///{db}", "--study", "d"])
    assert run.returncode == 0, run.stderr[-3000:]
    study = optuna.load_study(study_name="d", storage=f"sqlite:///{db}")
    (trial,) = study.trials  # one derived architecture, logged once (by rank 0)
    assert trial.user_attrs["derivation"] == "argmax" and len(trial.user_attrs["alpha_history"]) == 2
    state = torch.load(tmp_path / "d-checkpoints" / "d" / "supernet.pt", weights_only=True)
    assert state["epoch"] == 2 and state["starts"] == [0]


def test_other_strategies_refuse_torchrun_clearly(tmp_path, monkeypatch):
    from sparsenas.errors import SparseNASError

    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets; refused before any process group is joined
    with pytest.raises(SparseNASError, match="does not run under torchrun"):
        sparsenas.search(space="g2g_mlp", strategy="random", dataset="synthetic", limit=32, trials=1, epochs=1,
                         storage=f"sqlite:///{tmp_path / 'r.db'}", progress=False)
    assert not (tmp_path / "r.db").exists()
