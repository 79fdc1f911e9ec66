"""python -m sparsenas, nas studies (never creates a storage), nas datasets, examples in every --help,
and the CLI importing only the Python API."""
import ast
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import sparsenas
from sparsenas.cli import build_parser

from _small_study import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_python_dash_m_sparsenas():
    r = subprocess.run([sys.executable, "-m", "sparsenas", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == f"sparsenas {sparsenas.__version__}"


def test_studies_lists_what_each_study_searched(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    url = f"sqlite:///{tmp_path / 's.db'}"
    sparsenas.search(space="tiny_space:TinyMLP", dataset="synthetic", trials=2, epochs=1, latency="measured",
                     storage=url, progress=False)
    sparsenas.search(space="tiny_space:TinyMLP", dataset="synthetic", trials=2, epochs=1, latency="measured",
                     storage=url, objective="accuracy", sampler="random", progress=False)
    rc, out, err = run_cli(["studies", "--storage", url, "--json"])
    assert rc == 0, err
    rows = {r["study"]: r for r in json.loads(out.strip().splitlines()[-1])["studies"]}
    multi, single = rows["tiny_mlp-synthetic-tpe"], rows["tiny_mlp-synthetic-random-acc"]
    assert (multi["space"], multi["dataset"], multi["strategy"]) == ("tiny_mlp", "synthetic", "tpe")
    assert multi["states"] == {"COMPLETE": 2} and set(multi["best"]) == {"accuracy", "latency_ms"}
    assert single["sampler"] == "random" and set(single["best"]) == {"accuracy"}
    lines = out.splitlines()
    i = next(i for i, l in enumerate(lines) if l.startswith("tiny_mlp-synthetic-tpe: tiny_mlp / synthetic / tpe"))
    assert lines[i].endswith("COMPLETE 2")
    # two objectives: the front, trial by trial; per-objective bests are labelled as such
    assert lines[i + 1].startswith(f"  Pareto front ({multi['front']} trials): #") and "latency_ms" in lines[i + 1]
    assert lines[i + 2].startswith("  best per objective (may be different trials): accuracy")
    assert any(l.startswith("tiny_mlp-synthetic-random-acc: tiny_mlp / synthetic / random sampler") for l in lines)


def test_studies_never_creates_a_storage(tmp_path):
    missing = tmp_path / "nope.db"
    rc, out, err = run_cli(["studies", "--storage", f"sqlite:///{missing}"])
    assert rc == 2 and "does not exist" in err and not missing.exists()
    rc, out, err = run_cli(["studies", "--storage", f"journal:///{tmp_path / 'nope.log'}"])
    assert rc == 2 and not (tmp_path / "nope.log").exists()


def test_datasets_listing():
    rc, out, err = run_cli(["datasets", "--json"])
    listed = json.loads(out.strip().splitlines()[-1])
    assert rc == 0 and {"digits", "mnist1d", "synthetic", "cifar10"} <= set(listed)
    assert "needs --data-dir" in listed["cifar10"] and "needs --data-dir" not in listed["digits"]


def test_every_command_help_ends_with_examples():
    parser = build_parser(["search"])
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {"search", "spaces", "strategies", "datasets", "studies", "inspect", "profile",
                                "dashboard", "export", "train", "report"}
    for name, p in sub.choices.items():
        text = p.format_help().rstrip().splitlines()
        examples = text[text.index("examples:") + 1:]
        assert 2 <= len(examples) <= 4 and all(e.strip().startswith(("nas ", "PYTHONPATH=")) for e in examples), name


def test_cli_modules_import_only_the_python_api():
    """cli -> api: a command module imports from sparsenas.api, the top-level package, errors, config
    and log, its neighbours in cli, and the strategies' option declarations (search's flags)."""
    allowed = {"api", "errors", "config", "log", "", "strategies", "distributed"}
    for path in sorted((ROOT / "sparsenas" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2:  # from ..X import
                assert (node.module or "").split(".")[0] in allowed, f"{path.name} imports sparsenas.{node.module}"
