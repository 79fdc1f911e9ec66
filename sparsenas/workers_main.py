"""The process of one local worker (``python -m sparsenas.workers_main CONFIG``, started by
:func:`sparsenas.workers.run_workers`): an entry point like the CLI, so it sits above the API and
calls it; :mod:`sparsenas.workers`, which the API calls, never imports the API back."""
from __future__ import annotations

import json
import sys

from .api import SearchConfig, search
from .errors import SparseNASError


def main(argv: list[str]) -> int:
    config = SearchConfig(**json.loads(argv[0]))
    try:
        search(config, progress=False)
    except SparseNASError as e:
        print(f"nas search worker {config.worker}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
