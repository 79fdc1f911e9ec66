"""A search killed with SIGKILL mid-trial and restarted loses nothing and reaches its target."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sparsenas.tracking import open_storage

ROOT = Path(__file__).resolve().parents[1]
ARGV = ["search", "--space", "sparse_mbv2", "--dataset", "synthetic", "--strategy", "random", "--epochs", "2",
        "--batch-size", "16", "--latency", "measured", "--no-hw-anchor", "--no-progress", "--study", "k", "--trials", "3"]


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name="k", storage=open_storage(url, heartbeat=False)).get_trials()
    except Exception:  # not created yet
        return []


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_search_killed_mid_trial_resumes_and_reaches_its_target(tmp_path, kind):
    url = f"sqlite:///{tmp_path / 'k.db'}" if kind == "sqlite" else f"journal:///{tmp_path / 'k.journal'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "sparsenas.cli", *ARGV, "--storage", url]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, trials = time.time() + 240, []
    while time.time() < deadline and proc.poll() is None:  # kill once a trial is done and the next is running
        trials = _trials(url)
        if any(t.state == TrialState.COMPLETE for t in trials) and any(
                t.state == TrialState.RUNNING and t.datetime_start
                and (time.time() - t.datetime_start.timestamp()) > 0.3 for t in trials):
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the search ended before it could be killed mid-trial"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _trials(url)
    done = {t.number: t.params for t in before if t.state == TrialState.COMPLETE}
    killed = [t.number for t in before if t.state == TrialState.RUNNING]
    assert done and len(killed) == 1

    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = {t.number: t for t in _trials(url)}
    for n, params in done.items():  # every trial completed before the kill is still there, unchanged
        assert after[n].state == TrialState.COMPLETE and after[n].params == params
    assert after[killed[0]].state == TrialState.FAIL
    assert sum(t.state == TrialState.COMPLETE for t in after.values()) == 3  # the study reached its target
    assert not any(t.state == TrialState.RUNNING for t in after.values())
    if kind == "sqlite":  # heartbeat: Optuna re-queued the killed trial's architecture
        retried = [t for t in after.values() if t.system_attrs.get("failed_trial") == killed[0]]
        assert retried and retried[0].state == TrialState.COMPLETE
