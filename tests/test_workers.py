"""Many workers on one study: the trial target is the study's total, nothing is lost or duplicated.

Real processes on real storages (sqlite, a JournalStorage file, PostgreSQL); tiny trials (g2g_mlp on
64 synthetic samples, 1 epoch: ~0.3 s each).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import sparsenas
from sparsenas.tracking import open_storage
from _small_study import run_cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--space", "g2g_mlp", "--dataset", "synthetic", "--strategy", "random", "--epochs", "1", "--limit", "64",
        "--batch-size", "32", "--latency", "measured", "--no-progress", "--study", "w"]


def nas(*argv: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "sparsenas.cli", "search", *TINY, *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]


def assert_exactly(url: str, n: int) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="w", storage=open_storage(url, must_exist=True))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == n, [(t.number, t.state.name) for t in study.trials]
    numbers = [t.number for t in study.trials]
    assert len(set(numbers)) == len(numbers)  # every trial has its own number
    # only surplus trials (two workers starting the last one at once) may be FAIL
    assert all(t.user_attrs.get("surplus") for t in study.trials if t.state == TrialState.FAIL)
    return complete


@pytest.mark.slow
def test_two_workers_with_trials_6_end_with_exactly_6(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    rc, _, err = run_cli(["search", *TINY, "--trials", "1", "--storage", url])
    assert rc == 0, err
    finish([nas("--trials", "6", "--storage", url, cwd=tmp_path) for _ in range(2)])
    assert_exactly(url, 6)


@pytest.mark.slow
def test_workers_flag_runs_k_processes_on_one_sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    study = sparsenas.search(space="g2g_mlp", dataset="synthetic", strategy="random", epochs=1, limit=64,
                             batch_size=32, latency="measured", trials=12, workers=3, storage=url, study="w",
                             progress=False)
    complete = assert_exactly(url, 12)
    assert len({t.user_attrs["worker"] for t in complete}) >= 2  # the work was shared
    assert study.study_name == "w"


@pytest.mark.slow
def test_three_machines_share_a_journal_file(tmp_path):
    url = f"journal:///{tmp_path / 'w.journal'}"
    finish([nas("--trials", "12", "--storage", url, cwd=tmp_path) for _ in range(3)])
    assert_exactly(url, 12)


@pytest.mark.slow
def test_three_machines_share_a_postgres_database(tmp_path, postgres_url):
    finish([nas("--trials", "12", "--storage", postgres_url, cwd=tmp_path) for _ in range(3)])
    complete = assert_exactly(postgres_url, 12)
    assert len({t.user_attrs["worker"] for t in complete}) >= 2


def test_a_resumed_search_reaches_the_target_without_overshooting(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    for trials in (2, 3, 3):
        rc, _, err = run_cli(["search", *TINY, "--trials", str(trials), "--storage", url])
        assert rc == 0, err
    assert_exactly(url, 3)


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:  # gone between the listing and the read
        return ""


@pytest.mark.slow
def test_a_worker_that_dies_makes_the_command_fail_and_the_others_finish(tmp_path):
    import signal
    import time

    url = f"journal:///{tmp_path / 'w.journal'}"  # no heartbeats: the dead worker's trial is failed by pid
    proc = nas("--trials", "12", "--workers", "2", "--storage", url, cwd=tmp_path)
    children: list[int] = []
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(children) < 2:  # both started
        time.sleep(0.2)
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        children = [int(k) for k in kids if "sparsenas.workers" in _cmdline(k)]
    assert len(children) == 2, "the workers did not start"
    time.sleep(3)
    os.kill(children[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert "1 of 2 workers failed" in err and "exit code -9" in err and "Traceback" not in err
    study = optuna.load_study(study_name="w", storage=open_storage(url, must_exist=True))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 12  # the other worker reached the target
    assert not study.get_trials(states=(TrialState.RUNNING,))
