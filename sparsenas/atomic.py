"""Files written whole or not at all: write under a temporary name in the same folder, flush to
disk, rename. A reader (or a re-run after a full disk or a kill) sees the old file or the new one,
never half of one, and a failed write leaves nothing behind."""
from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object], mode: int = 0o644) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``."""
    final = os.path.abspath(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(final)}.", suffix=".tmp", dir=os.path.dirname(final))
    try:
        os.fchmod(fd, mode)  # mkstemp makes it private; these files are as readable as the study beside them
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
