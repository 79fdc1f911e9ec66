"""`nas storage-proxy`: workers that reach the database only through Optuna's gRPC proxy."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_workers import assert_exactly, finish, nas

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_workers_through_the_grpc_proxy_reach_exactly_the_target(tmp_path):
    pytest.importorskip("grpc", reason="grpcio not installed (pip install 'sparsenas[grpc]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = f"sqlite:///{tmp_path / 'p.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proxy = subprocess.Popen([sys.executable, "-m", "sparsenas.cli", "storage-proxy", "--storage", db, "--port",
                              str(port)], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # until it listens
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        url = f"grpc://127.0.0.1:{port}"
        finish([nas("--trials", "6", "--storage", url, cwd=tmp_path) for _ in range(2)])
        assert_exactly(url, 6)
        assert_exactly(db, 6)  # the trials are in the database behind the proxy
    finally:
        proxy.send_signal(signal.SIGINT)
        proxy.wait(timeout=30)
