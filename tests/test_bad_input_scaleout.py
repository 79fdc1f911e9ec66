"""Bad scale-out flags: one paragraph, exit 2, no traceback, nothing written."""
from __future__ import annotations

import pytest

from sparsenas.cli import main


def run(argv: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of `nas ARGV`, argparse's own errors included."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse rejects a bad --port before main() runs a command
            rc = e.code
    return rc, err.getvalue()

SEARCH = ["search", "--space", "sparse_mbv2", "--dataset", "synthetic", "--epochs", "1", "--no-progress"]


@pytest.mark.parametrize("argv, says", [
    ([*SEARCH, "--workers", "0"], "--workers must be at least 1"),
    ([*SEARCH, "--workers", "-3"], "--workers must be at least 1"),
    ([*SEARCH, "--workers", "2", "--strategy", "dass"], "--workers applies to the sampler strategies"),
    ([*SEARCH, "--seed", "-1"], "--seed must be between 0"),
    ([*SEARCH, "--storage", "nas.db"], "bad storage URL"),
    ([*SEARCH, "--storage", "redis://localhost/0"], "unsupported scheme 'redis'"),
    (["dashboard", "--port", "0"], "between 1 and 65535"),
    (["storage-proxy", "--storage", "sqlite:///x.db", "--port", "99999"], "between 1 and 65535"),
])
def test_bad_scale_out_input_exits_2_with_one_paragraph(tmp_path, monkeypatch, argv, says):
    monkeypatch.chdir(tmp_path)
    rc, err = run(argv)
    assert rc == 2
    assert "Traceback" not in err
    assert says in err
    assert list(tmp_path.iterdir()) == []  # no storage, no artifacts
