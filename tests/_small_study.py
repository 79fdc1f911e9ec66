"""One small real search shared by the export and dashboard tests (it takes ~15 s; run it once).

Not a test module: imported by test_export.py and test_dashboard.py, whose module-scoped fixtures
call :func:`small_study`.
"""
from __future__ import annotations

from pathlib import Path

import sparsenas

STUDY = "export-study"
_CACHE: dict[str, tuple[str, Path]] = {}


def small_study(tmp_path_factory) -> tuple[str, Path]:
    """(storage URL, db path) of a 2-trial, 1-epoch sparse_mbv2 search on the synthetic dataset."""
    if "study" not in _CACHE:
        db = tmp_path_factory.mktemp("study") / "t.db"
        url = f"sqlite:///{db}"
        sparsenas.search(space="sparse_mbv2", dataset="synthetic", trials=2, epochs=1, storage=url, study=STUDY,
                         latency="measured", progress=False)  # the report and export tests read measured latency
        _CACHE["study"] = (url, db)
    return _CACHE["study"]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `nas ARGV` run in this process."""
    import contextlib
    import io

    from sparsenas.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()
