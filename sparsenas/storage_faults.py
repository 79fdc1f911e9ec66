"""Faults of the files behind a storage: a journal whose last record was cut short, a damaged sqlite
database, a full disk. :mod:`sparsenas.tracking` calls these while opening and using a storage, so
the study stays readable and a re-run resumes; every fault a user can fix is a
:class:`~sparsenas.errors.StorageError` that names the file and what to do.

Why the journal needs help: Optuna's ``JournalFileBackend`` skips a last line that has no newline
or is not JSON when it reads, but its next append is written straight after that half line, and
the glued line in the middle of the file makes every later read fail (docs/faults.md).
"""
from __future__ import annotations

import datetime as _dt
import errno
import json
import os
from typing import Any

from .atomic import write_atomic
from .errors import StorageError
from .log import logger

_BLOCK = 1 << 16


def _last_line_start(f: Any, size: int) -> int:
    """Offset of the first byte after the last newline that is not the file's final byte."""
    pos, buf = size, b""
    while pos > 0:
        step = min(_BLOCK, pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
        i = buf.rfind(b"\n", 0, len(buf) - 1)
        if i >= 0:
            return pos + i + 1
    return 0


def torn_tail(path: str) -> int | None:
    """Where the torn last record of a journal file starts, or None when the file ends in a complete
    record (a JSON object and a newline). A torn record is what a write cut short leaves: bytes
    without a newline, or a last line that is not a JSON object."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return None
    if size == 0:
        return None
    with open(path, "rb") as f:
        start = _last_line_start(f, size)
        f.seek(start)
        last = f.read()
    if last.endswith(b"\n"):
        try:
            if isinstance(json.loads(last), dict):
                return None
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            pass
    return start


def journal_backend(path: str, lock: Any) -> Any:
    """Optuna's JournalFileBackend for ``path`` that, under the journal's lock, sets a torn last
    record aside before each append: another worker may have been cut short mid-write (its disk
    filled, it was killed) while this one runs, and Optuna would glue the next record onto it."""
    from optuna.storages.journal import JournalFileBackend
    from optuna.storages.journal._file import get_lock_file

    class Backend(JournalFileBackend):
        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)  # Optuna's format
            with get_lock_file(self._lock):
                start = torn_tail(self._file_path)
                if start is not None:
                    _warn_set_aside(self._file_path, _set_aside(self._file_path, start))
                with open(self._file_path, "ab") as f:
                    f.write(text.encode("utf-8"))
                    f.flush()
                    os.fsync(f.fileno())

    return Backend(path, lock_obj=lock)


def _warn_set_aside(path: str, side: str) -> None:
    logger.warning(f"journal {path} ended in a torn record (a write that was cut short: a full disk, a killed "
                   f"process or a power cut); moved its {os.path.getsize(side)} bytes to {side} and kept every "
                   "complete record before it")


def repair_journal(path: str, lock: Any, *, read_only: bool = False) -> str | None:
    """Set a torn last record of the journal at ``path`` aside before anything is appended to it: the
    torn bytes go to ``<path>.torn-<UTC time>`` and the journal is cut back to its last complete
    record, under the journal's own lock (so a record being written now is not mistaken for a torn
    one). Returns the side file, or None when there was nothing to repair.

    ``read_only`` (commands that only read): a journal that cannot be repaired (no write permission)
    is read as it is, since Optuna skips a torn last record when reading."""
    if torn_tail(path) is None:  # the common case takes no lock
        return None
    from optuna.storages.journal._file import get_lock_file

    try:
        with get_lock_file(lock):
            start = torn_tail(path)
            if start is None:  # a writer finished its record while we waited for the lock
                return None
            side = _set_aside(path, start)
    except OSError as e:
        what = (f"journal {path} ends in a torn record (a write that was cut short), and it cannot be set aside: "
                f"{e.strerror or e}")
        if read_only:
            logger.warning(f"{what}; reading the journal as it is (the torn record is skipped)")
            return None
        raise StorageError(f"{what}. Nothing was changed; free space or fix the permissions and re-run") from None
    _warn_set_aside(path, side)
    return side


def _set_aside(path: str, start: int) -> str:
    """Copy the bytes from ``start`` to a new side file (written under a temporary name, then renamed),
    then truncate the journal at ``start``."""
    with open(path, "rb") as f:
        f.seek(start)
        torn = f.read()
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    side = f"{path}.torn-{stamp}"
    write_atomic(side, lambda f: f.write(torn))
    with open(path, "r+b") as f:
        f.truncate(start)
        f.flush()
        os.fsync(f.fileno())
    return side


def damaged_journal(path: str, e: BaseException) -> StorageError:
    """The error for a journal Optuna cannot replay: a damaged record in the middle of the file."""
    return StorageError(f"journal {path} cannot be read: a record in it is damaged ({type(e).__name__}: {e}); it is "
                        "not a torn last record, which sparsenas sets aside itself. The file was left as it is: "
                        "restore a copy, or move the damaged line out of a copy of it (each line is one record)")


def cause(e: BaseException | None, test: Any) -> BaseException | None:
    """The first exception in ``e``'s chain (itself, then what it was raised from or during) that
    passes ``test``. Optuna re-raises storage errors as its own, or loses them in an assertion of its
    trial loop (``Should not reach``); the cause says what happened."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if test(e):
            return e
        e = e.__cause__ or e.__context__
    return None


# ---------------------------------------------------------------- sqlite
def sqlite_damaged(e: BaseException) -> bool:
    """Whether a database error says the sqlite file is damaged (not locked, not missing)."""
    text = str(e).lower()
    return any(m in text for m in ("malformed", "file is not a database", "file is encrypted", "corrupt"))


def damaged_sqlite(path: str, e: BaseException) -> StorageError:
    first = str(getattr(e, "orig", None) or e).splitlines()[0] if str(e) else type(e).__name__
    return StorageError(
        f"sqlite database {path} is damaged ({first}); it was left untouched. Restore a copy of it, or let sqlite "
        f"recover what it can into a new file: sqlite3 {path} .recover | sqlite3 recovered.db, then pass "
        "--storage sqlite:///recovered.db")


# ---------------------------------------------------------------- full disks and I/O errors
_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG}
_SPACE_TEXT = ("database or disk is full", "disk i/o error", "no space left", "disk quota", "read-only file system")


def _os_space(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in _SPACE_ERRNOS


def out_of_space(e: BaseException) -> BaseException | None:
    """The full disk or I/O error in ``e``'s chain (an OSError, or a database's own words), or None."""
    return cause(e, _os_space) or cause(e, lambda x: any(m in str(x).lower() for m in _SPACE_TEXT))


def space_error(e: BaseException, where: list[str], kept: str) -> StorageError:
    """One paragraph for a search stopped by a full disk or an I/O error (``e`` from :func:`out_of_space`)."""
    if isinstance(e, OSError):
        what = f"{e.strerror or e}" + (f" ({e.filename})" if e.filename else "")
    else:
        what = str(getattr(e, "orig", None) or e).splitlines()[0]
    places = " and ".join(dict.fromkeys(p for p in where if p))
    return StorageError(f"the search stopped: {what}, while writing to {places}. {kept} Free space (or fix the "
                        "device) and re-run the same command to resume")
