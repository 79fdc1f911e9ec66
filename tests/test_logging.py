"""Logging through the `sparsenas` logger: one line per finished trial without a progress bar; -q
silences it; importing sparsenas or running a search leaves Optuna's log level as it was."""
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

import sparsenas

from _small_study import run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = str(ROOT / "examples")
LINE = re.compile(r"^\d\d:\d\d:\d\d INFO trial (\d+) (COMPLETE|PRUNED|FAIL) accuracy=[\d.]+ latency_ms=[\d.e-]+ in "
                  r"[\d.]+s", re.M)


def test_import_leaves_optuna_log_level_alone():
    code = ("import optuna; optuna.logging.set_verbosity(optuna.logging.DEBUG); "
            "import sparsenas, sparsenas.api, sparsenas.tracking, sparsenas.strategies.samplers, sparsenas.report, "
            "sparsenas.export; print(optuna.logging.get_verbosity())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""}).stdout
    assert int(out) == optuna.logging.DEBUG


@pytest.mark.slow
def test_no_progress_prints_one_line_per_trial_and_restores_optuna_level(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(EXAMPLES)
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        args = ["search", "--space", "tiny_space:TinyMLP", "--dataset", "synthetic", "--trials", "3", "--epochs", "1",
                "--latency", "measured", "--storage", f"sqlite:///{tmp_path / 'a.db'}", "--no-progress"]
        rc, out, err = run_cli(args)
        assert rc == 0, err
        assert [int(n) for n, _ in LINE.findall(err)] == [0, 1, 2], err
        # Optuna's own INFO lines ("A new study created", "Trial 0 finished") stayed off during the search
        assert "Trial 0 finished" not in err and "A new study" not in err
        assert optuna.logging.get_verbosity() == optuna.logging.INFO  # as it was before the search
        rc, out, err = run_cli([*args, "--trials", "4", "-q"])  # resumes: one more trial, quietly
        assert rc == 0 and not LINE.findall(err), err
        # and from Python, without the CLI's handler, the level is restored too
        sparsenas.search(space="tiny_space:TinyMLP", dataset="synthetic", trials=1, epochs=1, latency="measured",
                         storage=f"sqlite:///{tmp_path / 'b.db'}", progress=False)
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(before)
