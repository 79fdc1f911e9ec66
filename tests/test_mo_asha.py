"""MO-ASHA pruner against hand-computed promotions, in real Optuna studies."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest

from sparsenas.pruners.mo_asha import MOASHAPruner, promotion_order, report, should_prune

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(pruner: MOASHAPruner, directions=("maximize", "minimize")) -> optuna.Study:
    return optuna.create_study(directions=list(directions), pruner=pruner)


def _start(study: optuna.Study, latency: float) -> optuna.Trial:
    trial = study.ask()
    trial.set_user_attr("latency_ms", latency)
    return trial


def _step(trial: optuna.Trial, step: int, acc: float) -> bool:
    report(trial, acc, step)
    return should_prune(trial)


def test_order_by_front_then_crowding_by_hand():
    # (accuracy, latency) as minimised rows (-acc, lat): A .9/10, B .8/5, C .7/8 (dominated by B), D .6/2.
    # Front 0 = {A, B, D}; crowding in it: A, D are boundaries (inf); B = (.9-.6)/.3 + (10-2)/8 = 2.
    rows = np.array([[-0.9, 10], [-0.8, 5], [-0.7, 8], [-0.6, 2]])
    assert promotion_order(rows) == [0, 3, 1, 2]
    # a tie (A and D, both inf) goes to the trial being decided
    assert promotion_order(rows, favour=3) == [3, 0, 1, 2]


def test_epsnet_and_crowding_promote_different_trials_by_hand():
    # one front of 5 (both objectives minimised, already in [0, 1]) and a dominated row; keep 6 // 2 = 3.
    # crowding: P1 = .8 + .2 = 1.0, P2 = .2 + .5 = .7, P3 = .2 + .8 = 1.0 -> P0, P4, P1 (P3 ties, later row)
    # eps-net: P0 (best first objective), P4 (farthest, 1.41), then the largest distance to {P0, P4}:
    # P1 .707, P2 .825, P3 .412 -> P2
    rows = np.array([[0, 1], [.7, .9], [.8, .8], [.9, .4], [1, 0], [1, 1]])
    assert promotion_order(rows, "crowding")[:3] == [0, 4, 1]
    assert promotion_order(rows, "epsnet")[:3] == [0, 4, 2]
    assert promotion_order(rows, "epsnet")[-1] == 5


def test_asynchronous_promotions_match_hand_ranking():
    pruner = MOASHAPruner(min_resource=1, reduction_factor=2, max_resource=4, static_attrs=["latency_ms"])
    study = _study(pruner)
    # rung 1 (step 1), arrivals in order, keep max(1, n // 2):
    #  T0 .5/5 alone -> promoted; T1 .6/6 with T0: one front, both boundaries, tie to T1 -> promoted;
    #  T2 .4/7 dominated by both, n=3 keep 1 -> pruned; T3 .7/4 dominates all, n=4 keep 2 -> promoted;
    #  T4 .55/5.5 dominated by T3 only: front 1 = {T0, T1, T4}, T4 is its interior point -> 4th of 5, keep 2 -> pruned
    specs = [(0.5, 5), (0.6, 6), (0.4, 7), (0.7, 4), (0.55, 5.5)]
    trials = [_start(study, lat) for _, lat in specs]
    pruned = [_step(t, 1, acc) for t, (acc, _) in zip(trials, specs)]
    assert pruned == [False, False, True, False, True]
    # rung 2 (step 2) for the promoted T0, T1, T3, arriving T3, T0, T1:
    #  T3 .8/4 alone -> promoted; T0 .6/5 dominated by T3, n=2 keep 1 -> pruned;
    #  T1 .9/6 beside T3 on the front (both boundaries), n=3 keep 1, tie to T1 -> promoted
    assert [_step(trials[i], 2, acc) for i, acc in ((3, 0.8), (0, 0.6), (1, 0.9))] == [False, True, False]
    # step 3 is below the next rung (4 = max_resource: never checked): the promoted go on to the end
    assert not _step(trials[3], 3, 0.5) and not _step(trials[3], 4, 0.1)
    # the records: one per trial and rung, with the trial's own number
    recs = {t.number: {k: v for k, v in t.system_attrs.items() if k.startswith("mo_asha:")} for t in study.trials}
    assert recs[2]["mo_asha:b0:rung0"] == {"trial": 2, "step": 1, "values": [0.4, 7.0]}
    assert recs[2]["mo_asha:b0:rung0:promoted"]["value"] is False
    assert "mo_asha:b0:rung1" not in recs[4] and recs[1]["mo_asha:b0:rung1:promoted"]["value"] is True


def test_a_decision_is_made_once_and_copied_records_are_ignored():
    pruner = MOASHAPruner(min_resource=1, reduction_factor=2, max_resource=8, static_attrs=["latency_ms"])
    study = _study(pruner)
    a, b = _start(study, 5), _start(study, 6)
    assert not _step(a, 1, 0.9)          # promoted
    assert _step(b, 1, 0.5)              # dominated, pruned
    c = _start(study, 1)
    assert not _step(c, 1, 0.95)         # dominates both: promoted
    # b asked again at the same step keeps its decision (no second rung record, no re-ranking)
    assert should_prune(b) is True
    assert should_prune(a) is False
    # a retry of b (Optuna's retry callbacks copy system attrs) competes afresh, with its own number
    frozen = study._storage.get_trial(b._trial_id)
    retry_id = study._storage.create_new_trial(study._study_id, template_trial=optuna.trial.create_trial(
        state=optuna.trial.TrialState.RUNNING, user_attrs=frozen.user_attrs, system_attrs=frozen.system_attrs))
    retry = optuna.Trial(study, retry_id)
    assert retry.number == 3
    report(retry, 0.99, 1)
    assert not should_prune(retry)       # 0.99/6: on the front beside c (1.0 ms), promoted
    assert study._storage.get_trial(retry_id).system_attrs["mo_asha:b0:rung0"]["trial"] == 3


def test_brackets_and_three_objectives():
    pruner = MOASHAPruner(min_resource=1, reduction_factor=2, max_resource=8, static_attrs=["latency_ms", "bytes"],
                          brackets=2)
    assert pruner.rungs(0) == [1, 2, 4] and pruner.rungs(1) == [2, 4]
    study = _study(pruner, ("maximize", "minimize", "minimize"))
    trials = []
    for lat, size in ((5, 100), (5, 100), (5, 50), (5, 50)):
        t = _start(study, lat)
        t.set_user_attr("bytes", size)
        trials.append(t)
    # bracket 1 (odd trials) is not checked at step 1
    assert not _step(trials[1], 1, 0.1)
    assert "mo_asha:b1:rung0" not in study._storage.get_trial(trials[1]._trial_id).system_attrs
    assert not _step(trials[0], 1, 0.5)  # bracket 0: alone
    assert not _step(trials[2], 1, 0.5)  # same accuracy and latency, half the bytes: dominates trial 0
    # bracket 1 at step 2: trial 3 dominates trial 1 on size only; trial 1 came first
    assert not _step(trials[1], 2, 0.6)
    assert not _step(trials[3], 2, 0.6)
    t5 = _start(study, 9)
    t5.set_user_attr("bytes", 100)
    assert _step(t5, 1, 0.4)             # trial 4 is bracket 0: dominated by both there, keep 1 of 3


def test_bad_settings_and_missing_attrs_are_clear():
    with pytest.raises(ValueError, match="reduction_factor"):
        MOASHAPruner(reduction_factor=1)
    with pytest.raises(ValueError, match="rule"):
        MOASHAPruner(rule="best")
    with pytest.raises(ValueError, match="brackets=3"):
        MOASHAPruner(min_resource=1, reduction_factor=3, max_resource=6, brackets=3)
    study = _study(MOASHAPruner(static_attrs=["latency_ms"]))
    trial = study.ask()
    report(trial, 0.5, 1)
    with pytest.raises(ValueError, match="no numeric attribute 'latency_ms'"):
        should_prune(trial)
    study = _study(MOASHAPruner())
    trial = _start(study, 3)
    report(trial, 0.5, 1)
    with pytest.raises(ValueError, match="2 objectives"):
        should_prune(trial)


def test_runs_in_a_plain_optuna_study_without_sparsenas(tmp_path):
    """The module file alone, loaded by path into an interpreter that never imports sparsenas."""
    module = Path(__file__).resolve().parents[1] / "sparsenas" / "pruners" / "mo_asha.py"
    script = textwrap.dedent(f"""
        import importlib.util, sys
        import optuna.storages.journal
        import optuna
        spec = importlib.util.spec_from_file_location("mo_asha", {str(module)!r})
        mo_asha = importlib.util.module_from_spec(spec); spec.loader.exec_module(mo_asha)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(directions=["maximize", "minimize"], storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend("{tmp_path}/plain.log")),
                                    sampler=mo_asha.PrunedTrialsSafeSampler(optuna.samplers.TPESampler(seed=0, n_startup_trials=5)),
                                    pruner=mo_asha.MOASHAPruner(1, 3, max_resource=9, static_attrs=["latency_ms"]))
        def objective(trial):
            width = trial.suggest_int("width", 1, 64)
            trial.set_user_attr("latency_ms", width / 8)
            for epoch in range(1, 10):
                acc = 1 - 1 / (1 + width * epoch / 20)
                mo_asha.report(trial, acc, epoch)
                if mo_asha.should_prune(trial):
                    raise optuna.TrialPruned()
            return acc, width / 8
        study.optimize(objective, n_trials=14)
        states = [t.state.name for t in study.trials]
        assert "sparsenas" not in sys.modules
        assert states.count("PRUNED") > 0 and states.count("COMPLETE") > 0, states
        pruned = [t for t in study.trials if t.state.name == "PRUNED"]
        assert all(t.last_step in (1, 3) for t in pruned), [t.last_step for t in pruned]
        print(states.count("COMPLETE"), states.count("PRUNED"))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    complete, pruned = map(int, out.stdout.split())
    assert complete + pruned == 14
