"""The process of one local worker (``python -m sparsenas.workers_main``, its settings in the
environment; started by :func:`sparsenas.workers.run_workers`): an entry point like the CLI, so it
sits above the API and calls it; :mod:`sparsenas.workers`, which the API calls, never imports the
API back."""
from __future__ import annotations

import json
import os
import sys

from .api import SearchConfig, search
from .errors import SparseNASError
from .workers import CONFIG_ENV, _die_with_parent, _sigterm_as_interrupt


def main(argv: list[str]) -> int:
    config = SearchConfig(**json.loads(os.environ[CONFIG_ENV]))
    try:
        with _sigterm_as_interrupt():
            _die_with_parent()
            return _run(config)
    except KeyboardInterrupt:
        return 130


def _run(config: SearchConfig) -> int:
    try:
        search(config, progress=False)
    except SparseNASError as e:
        print(f"nas search worker {config.worker}: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
