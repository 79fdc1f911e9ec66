"""Secrets stay out of output; weights load without pickle code; the dashboard stays on this machine."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from _small_study import run_cli
from sparsenas.cli import build_parser
from sparsenas.tracking import mask_url

PACKAGE = Path(__file__).resolve().parents[1] / "sparsenas"


@pytest.mark.parametrize("url, shown", [
    ("postgresql://nas:s3cret@db.example:5432/nas", "postgresql://nas:***@db.example:5432/nas"),
    ("postgresql+psycopg://nas:p@ss:w@rd@host/db", "postgresql+psycopg://nas:***@host/db"),
    ("postgresql://nas@host/db", "postgresql://nas@host/db"),
    ("sqlite:///nas.db", "sqlite:///nas.db"),
    ("journal:///tmp/x.log", "journal:///tmp/x.log"),
])
def test_mask_url_hides_only_the_password(url, shown):
    assert mask_url(url) == shown


@pytest.mark.parametrize("argv", [["report", "--out", "{tmp}/r"], ["search", "--trials", "1", "--no-progress"],
                                  ["export", "--best", "--out", "{tmp}/e"]])
def test_an_unreachable_database_is_reported_without_its_password(tmp_path, argv):
    pytest.importorskip("psycopg")
    url = "postgresql://nas:TopSecret42@127.0.0.1:1/nas"  # port 1: refused at once
    rc, out, err = run_cli([argv[0], "--storage", url, *[a.format(tmp=tmp_path) for a in argv[1:]]])
    assert rc == 2
    assert "TopSecret42" not in out + err
    assert "nas:***@127.0.0.1:1" in err and "Traceback" not in err


def test_every_torch_load_is_weights_only():
    calls = [(p, m.group(0)) for p in PACKAGE.rglob("*.py")
             for m in re.finditer(r"torch\.load\((?:[^()]|\([^()]*\))*\)", p.read_text())]
    assert calls  # the pattern finds the loads that exist
    assert all("weights_only=True" in call for _, call in calls), calls


def test_the_dashboard_binds_to_this_machine_by_default():
    args = build_parser().parse_args(["dashboard"])
    assert args.host == "127.0.0.1"
