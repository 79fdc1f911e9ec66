"""`nas dashboard` serves a real search: optuna-dashboard over HTTP, its JSON API, artifacts, and a
headless Chromium screenshot of the study page (skipped when Chromium is absent)."""
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from _small_study import STUDY, small_study

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    url, db = small_study(tmp_path_factory)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log = open(db.parent / "dashboard.log", "w")
    # the real command, in its own process (run_server blocks); default host 127.0.0.1
    proc = subprocess.Popen([sys.executable, "-m", "sparsenas.cli", "dashboard", "--storage", url, "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            meta = json.loads(get(f"{base}/api/meta", timeout=2))
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"nas dashboard did not answer: {(db.parent / 'dashboard.log').read_text()}")
            time.sleep(0.3)
    yield base, meta, url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def study_id(base: str) -> int:
    summaries = json.loads(get(f"{base}/api/studies"))["study_summaries"]
    return next(s["study_id"] for s in summaries if s["study_name"] == STUDY)


def test_api_lists_the_study_with_its_attrs(server):
    base, meta, _ = server
    assert meta["artifact_is_available"] is True  # nas dashboard passed the artifact store
    summaries = json.loads(get(f"{base}/api/studies"))["study_summaries"]
    s = next(s for s in summaries if s["study_name"] == STUDY)
    assert s["directions"] == ["maximize", "minimize"]
    attrs = {a["key"]: a["value"] for a in s["user_attrs"]}
    assert attrs["space"] == "sparse_mbv2" and attrs["dataset"] == "synthetic"


def test_api_study_has_trials_values_attrs_and_weight_artifacts(server):
    base, _, url = server
    sid = study_id(base)
    detail = json.loads(get(f"{base}/api/studies/{sid}"))
    assert detail["name"] == STUDY and detail["objective_names"] == ["accuracy", "latency_ms"]
    trials = detail["trials"]
    assert [t["number"] for t in trials] == [0, 1] and all(t["state"] == "Complete" for t in trials)
    for t in trials:
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        assert {"arch", "arch_digest", "accuracy", "latency_ms", "params", "nnz", "weights_artifact"} <= set(attrs)
        assert float(attrs["accuracy"]) == t["values"][0] and float(attrs["latency_ms"]) == t["values"][1]
        assert json.loads(attrs["arch"])["space"] == "sparse_mbv2"
        assert [a["artifact_id"] for a in t["artifacts"]] == [attrs["weights_artifact"]]
        assert t["artifacts"][0]["filename"] == f"trial-{t['number']}-weights.pt"
        assert sorted(int(k["step"]) for k in t["intermediate_values"]) == [1]
    assert {t["number"] for t in detail["best_trials"]} <= {0, 1} and detail["best_trials"]
    # the artifact downloads through the dashboard and loads as a state_dict
    t0 = trials[0]
    blob = get(f"{base}/artifacts/{sid}/{t0['trial_id']}/{t0['artifacts'][0]['artifact_id']}")
    state = torch.load(io.BytesIO(blob), weights_only=True)
    assert any(k.endswith(".mask") for k in state) and all(isinstance(v, torch.Tensor) for v in state.values())


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000", "--virtual-time-budget=15000"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed (.ci/run installs it)")
def test_chromium_screenshot_of_the_study_page(server, tmp_path):
    import matplotlib.image

    base, _, _ = server
    page = f"{base}/dashboard/studies/{study_id(base)}"
    shot = tmp_path / "study.png"
    run = subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          f"--screenshot={shot}", page], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    img = matplotlib.image.imread(shot)
    assert img.shape[:2] == (1000, 1400)
    # the dashboard rendered: its blue app bar across the top, and far more than a blank page below it
    bar = img[10:50, 300:1300, :3]
    assert abs(bar[..., 2].mean() - 0.95) < 0.06 and bar[..., 0].mean() < 0.3
    body = img[100:, 100:, :3].reshape(-1, 3)
    assert len({tuple(p) for p in (body[::97] * 255).astype(int).tolist()}) > 50
    # and it is the study page: the rendered DOM names the study and its Pareto-front plot
    dom = subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", page],
                         capture_output=True, text=True, timeout=120).stdout
    assert STUDY in dom and "Pareto Front" in dom
