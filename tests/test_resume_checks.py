"""A resumed study keeps its settings; read-only commands never create a storage."""
from __future__ import annotations

import pytest

from _small_study import run_cli

TINY = ["search", "--space", "g2g_mlp", "--dataset", "synthetic", "--strategy", "random", "--epochs", "1",
        "--limit", "64", "--latency", "measured", "--no-progress", "--study", "s"]


def test_a_rerun_with_another_budget_or_seed_names_the_differing_settings(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert run_cli([*TINY, "--trials", "1", "--storage", url])[0] == 0
    rc, _, err = run_cli([*TINY, "--trials", "2", "--storage", url, "--lr", "0.1", "--seed", "3"])
    assert rc == 2
    assert "lr=0.05" in err and "lr=0.1" in err and "seed=0" in err and "seed=3" in err
    assert "epochs" not in err.split("asks for")[1]  # only what differs is named
    assert "Traceback" not in err
    rc, out, err = run_cli([*TINY, "--trials", "2", "--storage", url, "--lr", "0.1", "--resume-anyway", "--json"])
    assert rc == 0, err
    assert '"COMPLETE": 2' in out.splitlines()[-1]
    # --trials may change freely
    assert run_cli([*TINY, "--trials", "3", "--storage", url])[0] == 0


@pytest.mark.parametrize("url_of", [lambda p: f"sqlite:///{p / 'missing.db'}", lambda p: f"journal:///{p / 'missing.log'}"])
@pytest.mark.parametrize("argv", [["report", "--out", "rep"], ["export", "--best", "--out", "exp"], ["dashboard"]])
def test_read_only_commands_never_create_a_storage(tmp_path, url_of, argv):
    url = url_of(tmp_path)
    rc, _, err = run_cli([argv[0], "--storage", url, *[str(tmp_path / a) if a in ("rep", "exp") else a for a in argv[1:]]])
    assert rc == 2
    assert "does not exist" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no database file, no output folder


def test_read_only_commands_reject_a_file_that_is_no_optuna_storage(tmp_path):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    rc, _, err = run_cli(["report", "--storage", f"sqlite:///{empty}", "--out", str(tmp_path / "rep")])
    assert rc == 2 and "no Optuna studies" in err
    assert empty.stat().st_size == 0  # nothing was written into it
