"""Several processes creating one study on a new storage at the same instant all succeed."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]

# each process waits for the same wall-clock instant, then opens the storage and creates the study
_JOIN = """
import sys, time
from sparsenas.tracking import StudySpec, Tracker
url, start = sys.argv[1], float(sys.argv[2])
spec = StudySpec("sparse_mbv2", 1, "synthetic", {"input_shape": [1, 8, 8]}, ("accuracy", "latency_ms"), "onnxruntime")
while time.time() < start:
    pass
tracker = Tracker(url, "race", spec, extra_attrs={"config": {"seed": 0}}, settings={"seed": 0})
print("joined", tracker.study.study_name)
"""


def start_together(url: str, n: int = 3) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.time() + 6  # time for every interpreter to import optuna first
    procs = [subprocess.Popen([sys.executable, "-c", _JOIN, url, str(start)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=120), *p.communicate()) for p in procs]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("journal", marks=pytest.mark.slow)])
def test_three_processes_create_one_study_on_a_new_file_storage(tmp_path, kind):
    url = f"sqlite:///{tmp_path / 'new.db'}" if kind == "sqlite" else f"journal:///{tmp_path / 'new.journal'}"
    results = start_together(url)
    for r in results:
        assert r.returncode == 0, r.stderr
        assert "joined race" in r.stdout
    from sparsenas.tracking import open_storage

    summaries = optuna.get_all_study_summaries(open_storage(url, must_exist=True))
    assert [s.study_name for s in summaries] == ["race"]
    assert summaries[0].user_attrs["space"] == "sparse_mbv2"


@pytest.mark.slow
def test_three_processes_create_one_study_on_a_new_postgres_database(postgres_url):
    results = start_together(postgres_url)
    for r in results:
        assert r.returncode == 0, r.stderr
    from sparsenas.tracking import open_storage

    assert [s.study_name for s in optuna.get_all_study_summaries(open_storage(postgres_url))] == ["race"]
