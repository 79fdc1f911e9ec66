"""One-shot strategies fit a --timeout: the supernet's epochs are sized from a probe of real steps,
the plan is stored on the study (a resumed run keeps it), and retraining stops when the next one
would end after the budget."""
import time
from pathlib import Path

import optuna
import pytest
import torch
from torch.utils.data import TensorDataset

import sparsenas
from sparsenas.errors import SparseNASError
from sparsenas.strategies.budget import Deadline, EpochCost, epochs_within, probe_epochs
from sparsenas.strategies.dass import PLAN_ATTR as DASS_PLAN
from sparsenas.supernets.dass_trainer import DassTrainer
from sparsenas.strategies.entangled import PLAN_ATTR as ENTANGLED_PLAN
from sparsenas.supernets.base import SupernetTrainer, epoch_batches, step_limit
from sparsenas.tracking import trial_record


class SleepyTrainer(SupernetTrainer):
    """Each step sleeps 20 ms and each epoch's end 50 ms, over 10 real batches."""

    kind = "sleepy"

    def __init__(self) -> None:
        self.data = TensorDataset(torch.zeros(40, 2), torch.zeros(40, dtype=torch.long))
        self.epochs, self.steps_per_epoch, self.seen = 1, 10, []

    def settings(self):
        return {}

    def build(self) -> None:
        pass

    def train_epoch(self, epoch):
        n = 0
        for _ in epoch_batches(self.data, 4, 0, epoch):
            time.sleep(0.02)
            n += 1
        time.sleep(0.05)
        self.seen.append(n)
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def derive(self):
        return None


def test_probe_times_a_few_real_steps_and_splits_step_from_epoch_cost():
    made = []

    def make():
        made.append(SleepyTrainer())
        return made[-1]

    [cost] = probe_epochs(make, [0])
    assert made[0].seen == [1, 1, 3]  # warm-up, then 1 and 3 steps of the trainer's own epoch
    assert 0.015 <= cost.step_s <= 0.04 and 0.03 <= cost.fixed_s <= 0.12 and cost.steps == 10
    assert 0.2 <= cost.epoch_s <= 0.5
    assert len(list(epoch_batches(made[0].data, 4, 0, 0))) == 10  # the limit ends with the probe
    with step_limit(2):
        assert len(list(epoch_batches(made[0].data, 4, 0, 0))) == 2


def test_epochs_within_and_the_deadline():
    cost = EpochCost(step_s=0.5, fixed_s=1.0, steps=10)  # 6 s an epoch
    assert epochs_within(30.0, cost) == 5 and epochs_within(1.0, cost) == 1 and epochs_within(1.0, cost, least=0) == 0
    free = Deadline(time.perf_counter(), None)
    free.last = 1e9
    assert free.fits() and free.share(0.5) is None
    d = Deadline(time.perf_counter(), 10.0)
    assert d.fits()  # the first piece of work always starts
    with d.timed():
        pass
    assert d.last is not None and d.fits()
    d.last = 11.0
    assert not d.fits()
    assert d.share(0.5) == pytest.approx(d.start + 5.0)


DASS_KW = dict(space="sparse_darts", strategy="dass", dataset="synthetic", limit=64, progress=False,
               hw_anchor=False)  # the table as profiled: no 16 darts networks re-timed inside the timeout
DASS_OPTIONS = dict(retrain_epochs=1, cells=3, search_cells=2)


def test_dass_under_a_timeout_sizes_its_epochs_retrains_more_and_a_resume_keeps_the_plan(tmp_path, monkeypatch):
    db = tmp_path / "d.db"
    storage = f"sqlite:///{db}"
    original = DassTrainer.train_epoch
    epochs_run = []

    def stop_in_the_main_round(self, epoch):
        # the main round: a trainer of several epochs (not the probe's copy) once the early round's trials are in
        if epoch == 1 and self.epochs > 1 and optuna.load_study(study_name="d", storage=storage).trials:
            raise KeyboardInterrupt
        epochs_run.append(epoch)
        return original(self, epoch)

    options = {**DASS_OPTIONS, "early_share": 0.05}  # a 1 s early round (1 epoch) of a 6 s share: a main round of >= 2
    with monkeypatch.context() as m:
        m.setattr(DassTrainer, "train_epoch", stop_in_the_main_round)
        with pytest.raises(KeyboardInterrupt):
            sparsenas.search(storage=storage, study="d", timeout=20, options=options, **DASS_KW)
    killed = optuna.load_study(study_name="d", storage=storage)
    plan = killed.user_attrs[DASS_PLAN]
    assert plan["search_epochs"] >= 2 and plan["early_epochs"] >= 1 and plan["budget_s"] == 6.0 and plan["epoch_s"] > 0
    early = {t.user_attrs["arch_digest"] for t in killed.trials}
    assert len(early) == 4 and {trial_record(t).stage for t in killed.trials} == {"early"}
    # another timeout on the re-run: the stored plan (not a new probe) decides, so the checkpoints resume
    study = sparsenas.search(storage=storage, study="d", timeout=30, options=options, **DASS_KW)
    folder = db.parent / "d-checkpoints" / "d"
    ckpt = torch.load(folder / "supernet.pt", weights_only=True)
    assert ckpt["starts"] == [0, 1] and ckpt["epoch"] == plan["search_epochs"]
    assert torch.load(folder / "supernet-early.pt", weights_only=True)["epoch"] == plan["early_epochs"]
    summary = study.user_attrs["dass_search"]
    assert summary["config"]["search_epochs"] == plan["search_epochs"]
    assert [r["round"] for r in summary["rounds"]] == ["early", "main"]
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert trials[0].user_attrs["derivation"] == "argmax" and trial_record(trials[0]).stage == "early"
    main = [t for t in trials if trial_record(t).stage == "main"]
    assert len(main) >= 2 and main[0].user_attrs["derivation"] == "argmax"  # more than the early round's, budget allowing
    assert len({t.user_attrs["arch_digest"] for t in trials}) == len(trials)  # nothing retrained twice
    assert study.user_attrs["dass_finished"]


def test_an_explicit_epoch_count_wins_over_the_budget(tmp_path, caplog):
    storage = f"sqlite:///{tmp_path / 'e.db'}"
    with caplog.at_level("INFO", logger="sparsenas"):
        study = sparsenas.search(storage=storage, study="e", timeout=60,
                                 options={**DASS_OPTIONS, "search_epochs": 1, "retrain_top": 1}, **DASS_KW)
    assert DASS_PLAN not in study.user_attrs and study.user_attrs["dass_search"]["config"]["search_epochs"] == 1
    assert len(study.trials) == 1
    # the per-trial log line names the stored trial (a one-shot strategy's trials were "trial -1")
    assert any(r.getMessage().startswith("trial 0 COMPLETE") for r in caplog.records), caplog.text


def test_entangled_under_a_timeout_sizes_both_phases_and_retrains_the_derived_architecture_first(tmp_path):
    storage = f"sqlite:///{tmp_path / 'g.db'}"
    study = sparsenas.search(space="g2g_mlp", strategy="entangled", dataset="mnist1d", trials=8, limit=96,
                             batch_size=32, storage=storage, study="g", progress=False, timeout=32,
                             # an 8 s supernet share, and 24 s for the rest: time enough to retrain every
                             # inherited estimate even on a loaded machine (the search ends when they are done)
                             options={"sandwich_random": 1, "retrain_epochs": 1, "retrain_top": 1, "tau_archs": 2,
                                      "finetune_steps": 2, "budget_share": 0.25})
    plan = study.user_attrs[ENTANGLED_PLAN]
    assert plan["search_epochs"] >= 1 and plan["sandwich_epochs"] >= 1 and plan["budget_s"] == pytest.approx(8.0)
    # the defaults' ratio of gradient to sandwich epochs (g2g_mlp: 10 to 30) is kept roughly
    assert plan["sandwich_epochs"] >= plan["search_epochs"]
    retrained = [t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
                 if trial_record(t).stage == "retrained"]
    assert retrained and retrained[0].user_attrs["arch_digest"] == \
        sparsenas.arch.Arch.from_json(study.user_attrs["entangled_derived_arch"]).digest()
    # with time left after the sample and the front (each retraining takes ~0.1 s here), the other inherited
    # estimates are retrained too, once each
    inherited = {t.user_attrs["arch_digest"] for t in study.trials if trial_record(t).stage == "inherited"}
    keys = [t.user_attrs["arch_digest"] for t in retrained]
    assert len(set(keys)) == len(keys) and set(keys) <= inherited
    assert set(keys) == inherited


@pytest.mark.parametrize("share", [{"budget_share": 0.0}, {"budget_share": 1.0}, {"budget_share": 1.5},
                                   {"early_share": 0.3}, {"early_share": -0.1}])
def test_a_budget_share_outside_0_1_is_a_clear_error(tmp_path, share):
    with pytest.raises(SparseNASError, match="budget-share"):
        sparsenas.search(storage=f"sqlite:///{tmp_path / 'b.db'}", timeout=10,
                         options={**DASS_OPTIONS, **share}, **DASS_KW)
    assert not Path(tmp_path / "b.db").exists()  # refused before the study was made


@pytest.mark.parametrize("bad", [{"grad_clip": -1.0}, {"arch_lr": 0.0}, {"budget_share": 1.2}, {"sandwhich_epochs": 2}])
def test_bad_entangled_options_are_refused_before_the_study_exists(tmp_path, bad):
    with pytest.raises(SparseNASError, match="entangled"):
        sparsenas.search(space="g2g_mlp", strategy="entangled", dataset="mnist1d", limit=96, progress=False,
                         storage=f"sqlite:///{tmp_path / 'b.db'}", timeout=10, options=bad)
    assert not Path(tmp_path / "b.db").exists()
