"""Any Optuna sampler (and pruner) by name: each runs a real 3-trial search on the one-file example
space; samplers that cannot optimise two objectives say so before anything is written."""
import sys
import time
from pathlib import Path

import optuna
import pytest

import sparsenas
from sparsenas.errors import SparseNASError

from _small_study import run_cli

EXAMPLES = str(Path(__file__).resolve().parents[1] / "examples")

CASES = [  # (sampler, its [sampler] arguments, objective, pruner, the class that must have run)
    ("tpe", {"n_startup_trials": 1}, "multi", None, optuna.samplers.TPESampler),
    ("nsga2", {}, "multi", None, optuna.samplers.NSGAIISampler),
    ("nsga3", {"population_size": 2}, "multi", None, optuna.samplers.NSGAIIISampler),
    ("random", {}, "accuracy", "nop", optuna.samplers.RandomSampler),
    ("gp", {"n_startup_trials": 1}, "multi", None, optuna.samplers.GPSampler),
    ("cmaes", {}, "accuracy", "hyperband", optuna.samplers.CmaEsSampler),
    ("qmc", {}, "accuracy", "successive-halving", optuna.samplers.QMCSampler),
    ("optuna.samplers:BruteForceSampler", {}, "multi", None, optuna.samplers.BruteForceSampler),
]


@pytest.fixture
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("sampler,args,objective,pruner,cls", CASES, ids=[c[0].split(":")[-1] for c in CASES])
def test_each_sampler_runs_three_trials(sampler, args, objective, pruner, cls, storage_url, examples_on_path):
    t0 = time.perf_counter()
    study = sparsenas.search(space="tiny_space:TinyMLP", dataset="synthetic", trials=3, epochs=1, storage=storage_url,
                             sampler=sampler, sampler_args=args, objective=objective, pruner=pruner, latency="measured",
                             progress=False)
    assert type(study.sampler) is cls
    trials = study.get_trials(deepcopy=False)
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)  # a pruner may stop one
    assert len(trials) == 3 and all(t.state in done for t in trials) and trials[0].state == done[0]
    assert all(set(t.params) == {"width", "depth", "act"} for t in trials)
    assert study.user_attrs["config"]["sampler"] == sampler
    assert study.study_name == f"tiny_mlp-synthetic-{sampler.split(':')[-1]}" + ("-acc" if objective == "accuracy" else "")
    assert time.perf_counter() - t0 < 60  # budget is 20 s on an idle machine; generous for a loaded one


@pytest.mark.parametrize("argv,message", [
    (["--sampler", "cmaes"], "sampler 'cmaes' cannot optimise several objectives"),
    (["--sampler", "annealing"], "unknown sampler 'annealing'; available: cmaes, gp, nsga2, nsga3, "),
    (["--sampler", "optuna.pruners:MedianPruner"], "not a subclass of optuna.samplers.BaseSampler"),
    (["--strategy", "dass", "--sampler", "gp"], "--sampler applies to the sampler strategies"),
    (["--pruner", "median"], "Optuna prunes single-objective studies only; use --pruner mo-asha"),
    (["--pruner", "mo-asha", "--strategy", "dass"], "--pruner applies to the sampler strategies"),
    (["--objective", "accuracy", "--pruner", "patience"], "unknown pruner 'patience'"),
])
def test_bad_sampler_or_pruner_is_exit_2(argv, message, tmp_path, examples_on_path):
    db = tmp_path / "x.db"
    rc, out, err = run_cli(["search", "--space", "tiny_space:TinyMLP", "--dataset", "synthetic", "--storage",
                            f"sqlite:///{db}", "--no-progress", *argv])
    assert rc == 2 and message in err, err
    assert not db.exists()


def test_sampler_arguments_are_checked(storage_url, examples_on_path):
    with pytest.raises(SparseNASError, match=r"sampler 'gp' does not accept the arguments \{'bogus': 1\}"):
        sparsenas.search(space="tiny_space:TinyMLP", dataset="synthetic", storage=storage_url, sampler="gp",
                         sampler_args={"bogus": 1}, progress=False)
