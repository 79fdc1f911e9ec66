"""What an export of a study's best trial must be: made without ``--train`` from the weights the
search saved, and the network the trial's figures were measured on (not a test module)."""
from __future__ import annotations

from pathlib import Path

import torch

import sparsenas
from sparsenas.data import load_dataset
from sparsenas.evaluators import accuracy
from sparsenas.export import search_budget
from sparsenas.tracking import load_study, pareto_front, study_record, trial_record

from _small_study import run_cli


def assert_best_export_reproduces(storage: str, study_name: str, out: Path) -> None:
    """``nas export --best`` (no ``--train``) works, and the exported network's test accuracy is the
    one the trial recorded."""
    rc, _, err = run_cli(["export", "--storage", storage, "--study", study_name, "--best", "--out", str(out),
                          "--format", "json,pt"])
    assert rc == 0, err
    study = load_study(storage, study_name)
    best = trial_record(pareto_front(study)[0])
    assert best.weights_artifact is not None
    budget = search_budget(study_record(study).config)
    data = load_dataset(study_record(study).dataset, data_dir=budget["data_dir"], input_size=budget["input_size"],
                        seed=budget["seed"], limit=budget["limit"])
    model = sparsenas.load(out)
    assert accuracy(model, data.test, torch.device("cpu")) == best.test_accuracy, (best.number, best.stage)
