"""`--pruner mo-asha` in real searches: pruned trials keep their values, the target counts
architectures trained to the end, and two worker processes on one sqlite study keep both exact."""
import os
from pathlib import Path

import optuna
import pytest

import sparsenas
from sparsenas.tracking import pareto_front, trial_record

from _small_study import run_cli

EXAMPLES = str(Path(__file__).resolve().parents[1] / "examples")
# 12 architectures, 8x8 digits, 300 samples: a trial trains in well under a second. Accuracy and size
# (exported bytes, known before training): a tiny MLP's measured latency is noise, its size is not
SEARCH = dict(space="tiny_space:TinyMLP", dataset="digits", input_size=8, limit=300, epochs=3, latency="measured",
              objectives="accuracy,size",
              pruner="mo-asha", pruner_args={"reduction_factor": 2}, progress=False)


@pytest.fixture
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(EXAMPLES)


def _decisions(t: optuna.trial.FrozenTrial) -> dict[str, bool]:
    return {k: v["value"] for k, v in t.system_attrs.items() if k.endswith(":promoted") and v["trial"] == t.number}


def test_pruned_trials_are_pruned_with_their_values(storage_url, examples_on_path):
    study = sparsenas.search(**SEARCH, trials=2, strategy="random", seed=1, storage=storage_url)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2  # the target counts full fidelity only
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "rungs at epochs 1 and 2 with reduction factor 2 stop some of these trials"
    for t in pruned:
        rec = trial_record(t)
        assert rec.accuracy == t.intermediate_values[t.last_step] and t.last_step in (1, 2)
        assert rec.model_bytes and rec.latency_ms is not None and rec.reason.startswith("pruner stopped it after epoch")
        assert list(_decisions(t).values())[-1] is False  # stopped by its own rung decision
    front = {t.number for t in pareto_front(study)}
    assert front and not front & {t.number for t in pruned}
    for t in study.trials:  # trained to the end: promoted at both rungs
        if t.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in t.user_attrs:
            assert _decisions(t) == {"mo_asha:b0:rung0:promoted": True, "mo_asha:b0:rung1:promoted": True}


@pytest.mark.slow
def test_two_worker_processes_end_with_the_target_and_promote_once(storage_url, examples_on_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (EXAMPLES, os.environ.get("PYTHONPATH")) if p))
    study = sparsenas.search(**SEARCH, trials=3, strategy="tpe", workers=2, storage=storage_url)
    trials = study.get_trials(deepcopy=False)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 3
    assert {t.user_attrs["worker"].rsplit(":", 1)[1] for t in trials if "worker" in t.user_attrs}.__len__() == 2
    for t in trials:
        records = [k for k in t.system_attrs if k.startswith("mo_asha:") and not k.endswith(":promoted")]
        # one record per rung, written by this very trial, and one decision for each
        assert all(t.system_attrs[k]["trial"] == t.number for k in records)
        assert set(_decisions(t)) == {k + ":promoted" for k in records}
        if t.state == optuna.trial.TrialState.PRUNED and t.user_attrs.get("pruned_reason", "").startswith("pruner"):
            assert list(_decisions(t).values()).count(False) == 1
        if t.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in t.user_attrs:
            assert all(_decisions(t).values()) and len(records) == 2


def test_bad_pruner_settings_from_the_config_are_exit_2(tmp_path, examples_on_path):
    db = tmp_path / "x.db"
    cfg = tmp_path / "s.toml"
    cfg.write_text('space = "tiny_space:TinyMLP"\ndataset = "synthetic"\n\n[pruner]\nname = "mo-asha"\nrule = "best"\n')
    rc, out, err = run_cli(["search", "--config", str(cfg), "--storage", f"sqlite:///{db}", "--no-progress"])
    assert rc == 2 and "pruner 'mo-asha' does not accept the arguments {'rule': 'best'}" in err and "crowding" in err, err
    cfg.write_text('space = "tiny_space:TinyMLP"\ndataset = "synthetic"\n\n[pruner]\nreduction_factor = 2\n')
    rc, out, err = run_cli(["search", "--config", str(cfg), "--storage", f"sqlite:///{db}", "--no-progress"])
    assert rc == 2 and '[pruner] has arguments but no name' in err, err
    assert not db.exists()
