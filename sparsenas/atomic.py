"""Files written whole or not at all: write under a temporary name in the same folder, flush to
disk, rename. A reader (or a re-run after a full disk or a kill) sees the old file or the new one,
never half of one, and a failed write leaves nothing behind. A writer killed outright (SIGKILL, a
lost machine) cannot clean up: the next write of the same file removes the temporary files that
writers on this host left when they died."""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

_SUFFIX = ".tmp"


def _host() -> str:
    """This host as a temporary file's name carries it (no dots: the name's fields are dot-separated)."""
    return socket.gethostname().replace(".", "_")


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object], mode: int = 0o644) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``."""
    final = os.path.abspath(path)
    prefix = f".{os.path.basename(final)}."
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{_host()}-{os.getpid()}.", suffix=_SUFFIX, dir=os.path.dirname(final))
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
    _remove_dead_writers(Path(final).parent, prefix)


def _remove_dead_writers(folder: Path, prefix: str) -> None:
    """Remove ``prefix<host>-<pid>.*.tmp`` files whose writer ran on this host and is gone. Another
    host's files are left alone (a shared folder: its pid means nothing here), as are a live
    process's (it may be writing)."""
    host = _host()
    for p in folder.glob(f"{prefix}{host}-*{_SUFFIX}"):
        pid = p.name[len(prefix) + len(host) + 1:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            p.unlink(missing_ok=True)  # another writer may have removed it first


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
