"""The `nas` command: bad input is one clear paragraph and exit code 2, never a traceback."""
import json
import subprocess
import sys

import pytest

from sparsenas.cli import main


@pytest.mark.parametrize("argv,needle", [
    (["search", "--space", "nope"], "unknown search space 'nope'; available: g2g_mlp, pooling_resnet20, sparse_darts, sparse_mbv2"),
    (["search", "--strategy", "nope"], "unknown strategy 'nope'; available:"),
    (["search", "--dataset", "nope"], "unknown dataset 'nope'; available:"),
    (["search", "--dataset", "cifar10"], "--data-dir"),
    (["search", "--dataset", "cifar10", "--data-dir", "/does/not/exist"], "/does/not/exist"),
    (["search", "--storage", "not-a-url"], "bad storage URL 'not-a-url'"),
    (["search", "--storage", "sqlite:////no/such/folder/x.db"], "folder /no/such/folder does not exist"),
    (["search", "--storage", "redis://localhost"], "unsupported scheme 'redis'"),
    (["search", "--dataset", "mnist1d"], "needs image data"),
    (["search", "--max-latency-ms", "3"], "--objective accuracy"),
    (["search", "--device", "cuda:0"] if not __import__("torch").cuda.is_available() else ["search", "--device", "tpu"],
     "device"),
])
def test_bad_search_input_exits_2_with_a_clear_message(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv + ["--no-progress", "--trials", "1", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert err.count("\n") == 1  # one paragraph
    assert not (tmp_path / "nas.db").exists()  # refused before anything was written


def test_malformed_and_missing_arch_files(tmp_path, capsys):
    bad = tmp_path / "a.json"
    bad.write_text('{"space": "sparse_mbv2", "version": 1')
    assert main(["inspect", str(bad)]) == 2
    assert "malformed architecture JSON" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "missing.json")]) == 2
    assert "no architecture file at" in capsys.readouterr().err
    wrong = tmp_path / "w.json"
    wrong.write_text(json.dumps({"space": "sparse_mbv2", "version": 1, "choices": {"s1_depth": 9}}))
    assert main(["inspect", str(wrong)]) == 2
    assert "invalid architecture" in capsys.readouterr().err


def test_inspect_lists_layers_and_cost(tmp_path, capsys):
    from sparsenas.search_spaces import get_space
    from sparsenas.task import Task

    arch = get_space("sparse_mbv2").default_arch(Task("digits", (1, 16, 16), 10)).replace(head_sparsity=0.9)
    path = tmp_path / "arch.json"
    path.write_text(arch.to_json())
    assert main(["inspect", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["digest"] == arch.digest() and out["flops"] > out["effective_flops"] > 0
    assert any(l["sparsity"] > 0.85 and l["cout"] == 320 for l in out["layers"])


def test_listing_commands(capsys):
    assert main(["spaces", "--json"]) == 0
    assert "sparse_mbv2" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["strategies", "--json"]) == 0
    assert {"random", "tpe", "nsga2"} <= set(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))


def test_help_does_not_import_torch():
    code = "import sys; from sparsenas.cli import build_parser; build_parser(); print('torch' in sys.modules, 'optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_real_process_bad_input_has_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sparsenas.cli", "search", "--space", "nope"], capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 2 and "unknown search space" in r.stderr and "Traceback" not in r.stderr
