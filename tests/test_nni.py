"""NNI 3.0's strategies on our spaces: they run through `nas search` and record trials like ours.

The end-to-end tests need the ``nni`` extra (``pip install torch==2.13.0 "sparsenas[nni]"``; .ci/run
installs it) and skip with that reason without it.
"""
import importlib.util
import subprocess
import sys

import optuna
import pytest

import sparsenas
from sparsenas.search_spaces import get_space
from sparsenas.task import Task
from sparsenas.tracking import arch_of, load_weights
from _small_study import run_cli

HAVE_NNI = importlib.util.find_spec("nni") is not None and importlib.util.find_spec("pytorch_lightning") is not None
needs_nni = pytest.mark.skipif(not HAVE_NNI, reason='NNI is not installed (pip install torch==2.13.0 "sparsenas[nni]")')
TINY = ["--dataset", "digits", "--input-size", "8", "--limit", "60", "--epochs", "1", "--batch-size", "16",
        "--no-progress", "--no-hw-anchor"]  # latency from the profile as it is: no re-timing of 16 networks first


def _keys(url: str, study: str) -> list[set[str]]:
    s = optuna.load_study(study_name=study, storage=url)
    done = s.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    return [set(t.user_attrs) for t in done if "duplicate_of" not in t.user_attrs]


def test_nni_strategies_are_listed_without_importing_nni():
    code = ("import sys; from sparsenas.strategies import STRATEGIES; names = STRATEGIES.names(); "
            "assert 'nni:evolution' in names and 'nni:darts' in names, names; assert 'nni' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_nni_is_a_clear_error_naming_the_extra(tmp_path):
    # the real import machinery with nni made unimportable (None in sys.modules raises ImportError)
    code = ("import sys; sys.modules['nni'] = None\n"
            "from sparsenas.cli import main\n"
            f"rc = main(['search', '--space', 'sparse_mbv2', '--strategy', 'nni:evolution', '--storage', "
            f"'sqlite:///{tmp_path}/x.db', '--no-progress'])\n"
            "sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    assert 'pip install torch==2.13.0 "sparsenas[nni]"' in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "x.db").exists()  # refused before the study was created


@needs_nni
def test_one_shot_on_a_space_without_layer_choices_says_which(tmp_path):
    rc, _, err = run_cli(["search", "--space", "sparse_mbv2", "--strategy", "nni:darts",
                          "--storage", f"sqlite:///{tmp_path}/x.db", *TINY])
    assert rc == 2
    assert "cannot search space 'sparse_mbv2'" in err and "LayerChoice" in err and "nni:evolution" in err


@needs_nni
@pytest.mark.slow
def test_nni_evolution_trials_match_random_trials(tmp_path):
    url = f"sqlite:///{tmp_path}/nas.db"
    assert run_cli(["search", "--space", "sparse_mbv2", "--strategy", "random", "--trials", "1", "--study", "r",
                    "--storage", url, *TINY])[0] == 0
    rc, out, err = run_cli(["search", "--space", "sparse_mbv2", "--strategy", "nni:evolution", "--trials", "4",
                            "--study", "e", "--storage", url, *TINY])
    assert rc == 0, err
    [ours] = _keys(url, "r")
    theirs = _keys(url, "e")
    # under load NNI's evolution may propose a model again (recorded as a duplicate, not trained twice)
    assert theirs and all(k == ours for k in theirs), (ours, theirs)
    study = optuna.load_study(study_name="e", storage=url)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 4
    assert {t.user_attrs["strategy"] for t in study.trials} == {"nni:evolution"}
    assert all(sorted(t.intermediate_values) == [1] for t in study.trials if "duplicate_of" not in t.user_attrs)
    nni_info = study.user_attrs["nni"]
    assert nni_info["engine"].startswith("sequential") and nni_info["models"] == 4
    assert "RegularizedEvolution" in nni_info["nni_strategy"]
    # the saved weights load into the architecture the trial recorded
    best = max(study.trials, key=lambda t: t.values[0])
    state = load_weights(url, study, best)
    space = get_space("sparse_mbv2")
    net = space.build(arch_of(best), Task.from_dict(study.user_attrs["task"]))
    net.load_state_dict(state)


@needs_nni
@pytest.mark.slow
def test_nni_darts_on_sparse_darts_records_a_trial_like_random(tmp_path):
    url = f"sqlite:///{tmp_path}/nas.db"
    # the random trial pinned to the same network size as the DARTS supernet, so it stays quick
    sparsenas.search(space="sparse_darts", strategy="random", trials=1, study="r", storage=url, dataset="digits",
                     input_size=8, limit=60, epochs=1, batch_size=16, progress=False, hw_anchor=False,
                     options={"fixed": {"cells": 3, "channels": 8}})
    rc, out, err = run_cli(["search", "--space", "sparse_darts", "--strategy", "nni:darts", "--cells", "3",
                            "--channels", "8", "--study", "d", "--storage", url, *TINY])
    assert rc == 0, err
    [ours] = _keys(url, "r")
    [theirs] = _keys(url, "d")
    assert theirs == ours
    study = optuna.load_study(study_name="d", storage=url)
    [trial] = study.trials
    assert trial.params["cells"] == 3 and trial.params["channels"] == 8 and trial.params["sparsity"] == 0.9
    assert trial.user_attrs["strategy"] == "nni:darts" and trial.user_attrs["weights_artifact"]
    assert study.user_attrs["nni"]["derived"][0]["label"] == "nni-darts-argmax"
    # the derived genotype is a valid architecture of our space
    get_space("sparse_darts").validate(arch_of(trial), Task.from_dict(study.user_attrs["task"]))


@needs_nni
def test_nni_multi_trial_can_maximise_mnasnets_latency_aware_reward(tmp_path):
    from types import SimpleNamespace

    from sparsenas.strategies.nni_strategies import NNIMultiTrial

    ctx = SimpleNamespace(options={"latency_target_ms": 0.5, "latency_exponent": -0.07},
                          tracker=SimpleNamespace(objectives=("accuracy", "latency_ms")))
    assert NNIMultiTrial.reward(ctx, [0.9, 0.5]) == pytest.approx(0.9)
    assert NNIMultiTrial.reward(ctx, [0.9, 1.0]) == pytest.approx(0.9 * 2 ** -0.07)  # slower: less reward
    assert NNIMultiTrial.reward(SimpleNamespace(options={}, tracker=ctx.tracker), [0.9, 1.0]) == 0.9
    url = f"sqlite:///{tmp_path}/nas.db"
    rc, _, err = run_cli(["search", "--space", "sparse_mbv2", "--strategy", "nni:random", "--trials", "2",
                          "--study", "m", "--storage", url, "--latency-target-ms", "0.05", *TINY])
    assert rc == 0, err
    info = optuna.load_study(study_name="m", storage=url).user_attrs["nni"]
    assert info["reward"] == "accuracy * (latency_ms / 0.05) ** -0.07" and info["models"] == 2
    # a target without a latency objective, or a non-positive one, is refused before any training
    for bad in (["--objectives", "accuracy,size", "--latency-target-ms", "1"], ["--latency-target-ms", "-1"]):
        rc, out, err = run_cli(["search", "--space", "sparse_mbv2", "--strategy", "nni:random", "--trials", "1",
                                "--study", "bad", "--storage", url, *bad, *TINY])
        assert rc == 2 and "latency" in err and "Traceback" not in err, err
        assert "bad" not in [s.study_name for s in optuna.get_all_study_summaries(url)] or \
            not optuna.load_study(study_name="bad", storage=url).get_trials(states=(optuna.trial.TrialState.COMPLETE,))


@needs_nni
def test_nni_one_shot_trains_its_supernet_for_its_share_of_the_timeout(tmp_path):
    url = f"sqlite:///{tmp_path}/nas.db"
    rc, out, err = run_cli(["search", "--space", "sparse_darts", "--strategy", "nni:random-one-shot", "--cells", "3",
                            "--channels", "8", "--trials", "2", "--timeout", "12", "--budget-share", "0.25",
                            "--study", "t", "--storage", url, *TINY])
    assert rc == 0, err
    study = optuna.load_study(study_name="t", storage=url)
    info = study.user_attrs["nni"]
    # Lightning's max_time ends the supernet at its 3 s share, in whatever epoch it is (it checks after each
    # step and validation, so on a loaded machine it ends a few seconds late: 9.2 s at a load of 6 on 2 cores)
    assert info["max_seconds"] == 3.0 and info["epochs"] is None
    assert 3.0 <= info["search_seconds"] < 12.0 and info["steps_run"] > 0
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 1
    rc, _, err = run_cli(["search", "--space", "sparse_darts", "--strategy", "nni:darts", "--budget-share", "1.5",
                          "--timeout", "10", "--study", "bad", "--storage", url, *TINY])
    assert rc == 2 and "budget-share" in err and "Traceback" not in err, err
