"""Bring your own components: a space and a dataset from examples/, found by module:attr and through
entry points, searched without touching the package; bad plug-in names are exit-2 errors."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _small_study import run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _nas(args: list[str], extra_path: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    """`python -m sparsenas ARGS` in a fresh process whose path also holds ``extra_path``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *map(str, extra_path)])}
    return subprocess.run([sys.executable, "-m", "sparsenas", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def _search_args(space: str, dataset: str, db: Path) -> list[str]:
    return ["search", "--space", space, "--dataset", dataset, "--trials", "2", "--epochs", "1",
            "--storage", f"sqlite:///{db}", "--no-progress", "--json"]


@pytest.mark.slow
def test_example_space_and_dataset_by_module_attr(tmp_path):
    from sparsenas.hwprofiles.cache import CACHE_ENV

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(EXAMPLES)]), CACHE_ENV: str(tmp_path / "cache")}
    with open(tmp_path / "log", "w") as log:  # `nas search ... > log`: stdout is a file, not a terminal
        r = subprocess.run([sys.executable, "-m", "sparsenas", *_search_args("tiny_space:TinyMLP", "tiny_dataset:stripes",
                                                                             tmp_path / "a.db")],
                           env=env, cwd=tmp_path, stdout=log, stderr=subprocess.PIPE, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = (tmp_path / "log").read_text()
    # off a terminal nothing is cut or wrapped: the table's header whole, the export command on one line
    assert "latency ms (onnxruntime)" in out and "…" not in out
    export = next(line for line in out.splitlines() if line.startswith("Export an architecture:"))
    assert export.endswith("--out found/") and f"--storage sqlite:///{tmp_path / 'a.db'} --study tiny_mlp-stripes-tpe" in export
    # a plug-in space the shipped profile does not know: its kernels are timed once into the cache, logged
    assert "set-up: data stripes" in r.stderr and "set-up: latency table in onnxruntime" in r.stderr
    assert "hardware-profile cache: timed" in r.stderr
    res = json.loads(out.strip().splitlines()[-1])
    # studies are named by the space's and the dataset's own names, not the import paths
    assert res["study"] == "tiny_mlp-stripes-tpe" and res["states"] == {"COMPLETE": 2}
    assert 0.0 <= res["front"][0]["accuracy"] <= 1.0
    # later commands find the plug-in through the path the search recorded
    r = _nas(["export", "--storage", f"sqlite:///{tmp_path / 'a.db'}", "--best", "--out", str(tmp_path / "found"),
              "--format", "json,pt"], [EXAMPLES], tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "found" / "arch.json").read_text())
    assert doc["space"] == "tiny_mlp" and doc["plugins"] == {"space": "tiny_space:TinyMLP",
                                                              "dataset": "tiny_dataset:stripes"}
    # the export alone, in a fresh process: load (with the input contract), inspect and retrain it
    found, retrained = tmp_path / "found", tmp_path / "re"
    script = textwrap.dedent(f"""
        import sys
        import sparsenas
        from sparsenas.cli import main
        from sparsenas.data import raw_split
        m = sparsenas.load({str(found)!r})
        x, y = raw_split("tiny_dataset:stripes", "test")
        print("ACC", float((m(m.preprocess(x)).argmax(1).numpy() == y).mean()))
        sys.exit(main(["inspect", {str(found / "arch.json")!r}, "--json"])
                 or main(["train", {str(found)!r}, "--epochs", "1", "--out", {str(retrained)!r}, "--format",
                          "json,pt", "--no-measure", "--no-progress"]))
        """)
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(EXAMPLES)])})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    acc = float(next(line for line in lines if line.startswith("ACC")).split()[1])
    assert abs(acc - res["front"][0]["test_accuracy"]) <= 0.005  # --best: the front's first trial
    inspected = json.loads(next(line for line in lines if line.startswith('{"arch"')))
    assert inspected["arch"]["space"] == "tiny_mlp" and inspected["task"]["dataset"] == "stripes"
    assert json.loads((retrained / "arch.json").read_text())["plugins"]["space"] == "tiny_space:TinyMLP"


@pytest.mark.slow
def test_example_space_and_dataset_through_entry_points(tmp_path):
    # what `pip install` of a plug-in package leaves: a dist-info folder with entry_points.txt
    site = tmp_path / "site"
    dist = site / "tiny_plugins-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [sparsenas.spaces]
        tiny = tiny_space:TinyMLP

        [sparsenas.datasets]
        stripes = tiny_dataset:stripes
        """))
    listing = _nas(["spaces", "--json"], [EXAMPLES, site], tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "tiny" in json.loads(listing.stdout.strip().splitlines()[-1])
    r = _nas(_search_args("tiny", "stripes", tmp_path / "b.db"), [EXAMPLES, site], tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["states"] == {"COMPLETE": 2}


@pytest.mark.parametrize("flag,name,message", [
    ("--space", "no_such_module_xyz:Space", "cannot import module 'no_such_module_xyz'"),
    ("--space", "sparsenas.arch:NoSuchClass", "has no attribute 'NoSuchClass'"),
    ("--space", "sparsenas.arch:Arch", "not a subclass of sparsenas.search_spaces.base.SearchSpace"),
    ("--space", "sparsenas.search_spaces.base:SearchSpace", "does not implement: build, choices"),
    ("--strategy", "sparsenas.arch:Arch", "not a subclass of sparsenas.strategies.base.Strategy"),
    ("--dataset", "sparsenas.arch:Arch", "expected a loader function"),
    ("--space", "nope", "unknown search space 'nope'"),
])
def test_bad_plug_in_names_are_one_paragraph_errors(flag, name, message, tmp_path):
    rc, out, err = run_cli(["search", flag, name, "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--no-progress"])
    assert rc == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.db").exists()  # nothing half-written
