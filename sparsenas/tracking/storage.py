"""Where studies live: storage URLs, opening a storage (sqlite, journal, servers, the gRPC proxy),
and loading a study read-only."""
from __future__ import annotations

import contextlib
import os
import re
import warnings
from typing import Any, Iterator

import optuna
from optuna.trial import TrialState

from ..errors import SparseNASError, StorageError


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    """Heartbeats and metric names are marked experimental; they are the documented way to do both."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield



# query parameters whose value is a secret (libpq's password, a token, an API key...), by name parts
_SECRET_PARAMS = ("pass", "pwd", "secret", "token", "key", "auth", "credential")


def _url_secrets(url: str) -> tuple[str | None, list[tuple[int, int]]]:
    """(the user-info password, the spans of secret query values) of a storage URL."""
    scheme, rest = url.split("://", 1)
    netloc, _, tail = rest.partition("/")
    password = None
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        if ":" in userinfo:
            password = userinfo.split(":", 1)[1]
    spans = []
    start = url.find("?", len(scheme) + 3 + netloc.rfind("@") + 1)  # the query begins after the user info
    if start >= 0:
        pos = start + 1
        for pair in re.split(r"[&;]", url[start + 1:]):
            name, eq, value = pair.partition("=")
            if eq and value and any(p in name.lower() for p in _SECRET_PARAMS):
                spans.append((pos + len(name) + 1, pos + len(pair)))
            pos += len(pair) + 1
    return password, spans


def mask_url(url: str) -> str:
    """``url`` with its secrets replaced by ``***`` (the password of its user info, and query values
    such as ``password=``, ``token=``, ``secret=``, ``sslkey=``), for messages and stored settings."""
    if not isinstance(url, str) or "://" not in url:
        return str(url)
    password, spans = _url_secrets(url)
    for a, b in reversed(spans):
        url = url[:a] + "***" + url[b:]
    if password is None:
        return url
    scheme, rest = url.split("://", 1)
    netloc, sep, tail = rest.partition("/")
    userinfo, host = netloc.rsplit("@", 1)
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}{sep}{tail}"


def _file_path(url: str) -> str | None:
    """The file behind a sqlite or journal URL (None for servers and in-memory sqlite)."""
    scheme, rest = url.split("://", 1)
    if scheme == "journal":  # journal:///abs/path (also with 4 slashes, as sqlite) or journal://rel/path
        return "/" + rest.lstrip("/") if rest.startswith("/") else (rest or "nas.journal")
    if scheme.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        return path if path and path != ":memory:" else None
    return None


# Several workers starting at once on a new database race to create its tables ("table version_info
# already exists", a duplicate key in version_info or alembic_version): the loser retries, and by then
# the tables are there. Errors that persist (a wrong password, an unreachable host) still surface.
_CREATE_RETRIES = 12


def _retry(what: str, fn: Any) -> Any:
    import random
    import time

    for attempt in range(_CREATE_RETRIES):
        try:
            return fn()
        except Exception as e:  # SQLAlchemy OperationalError/IntegrityError, psycopg errors...
            text = str(e).lower()
            racy = any(m in text for m in ("already exists", "database is locked", "unique", "duplicate"))
            if not racy or attempt == _CREATE_RETRIES - 1:
                raise
            time.sleep(random.uniform(0.02, 0.1) * (attempt + 1))
    raise AssertionError(what)  # unreachable


def open_storage(url: str, *, heartbeat: bool = True, must_exist: bool = False) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``: any SQLAlchemy URL Optuna supports, or ``journal:///path``.

    RDB storages get heartbeats, so trials of a killed worker are failed and retried by the next
    ``optimize`` that runs on the study. ``must_exist`` (read-only commands): a file
    storage that does not exist is an error instead of a new empty file, and no tables are created.
    """
    if not isinstance(url, str) or "://" not in url:
        raise StorageError(f"bad storage URL {mask_url(url)!r}: expected an Optuna storage URL such as "
                           "sqlite:///nas.db, postgresql://user@host/db or journal:///path/to/file.log")
    shown = mask_url(url)
    scheme = url.split("://", 1)[0]
    if not (scheme in ("journal", "grpc") or scheme.startswith(("sqlite", "postgresql", "mysql"))):
        raise StorageError(f"bad storage URL {shown!r}: unsupported scheme '{scheme}'; use sqlite:///FILE, "
                           "postgresql://..., mysql://..., journal:///FILE or grpc://HOST:PORT (nas storage-proxy)")
    if scheme == "grpc":
        return _grpc_client(url, shown)
    path = _file_path(url)
    if path is not None:
        _check_parent(path, shown)
        if must_exist and not os.path.isfile(path):
            raise StorageError(f"storage {shown!r} does not exist (no file {os.path.abspath(path)}); pass the "
                               "--storage a search wrote to")
    if scheme == "journal":
        return _journal(path, read_only=must_exist)
    url = _with_driver(url)
    try:
        with _quiet_experimental():
            kwargs: dict[str, Any] = {}
            if heartbeat:
                kwargs = {"heartbeat_interval": HEARTBEAT_INTERVAL, "grace_period": HEARTBEAT_GRACE,
                          "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)}
            if must_exist:
                kwargs["skip_table_creation"] = True
            storage = _retry("open", lambda: optuna.storages.RDBStorage(url, **kwargs))
            if scheme.startswith("sqlite") and path is not None:
                _fast_sqlite(storage, path)
            return storage
    except SparseNASError:
        raise
    except ImportError as e:
        hint = " (install the driver: pip install 'sparsenas[postgres]')" if scheme.startswith("postgres") else ""
        raise StorageError(f"cannot open storage {shown!r}: {_masked(e, url)}{hint}") from None
    except Exception as e:  # SQLAlchemy raises many types for unreachable/invalid databases
        from ..storage_faults import cause, damaged_sqlite, sqlite_damaged

        if scheme.startswith("sqlite") and path is not None and (bad := cause(e, sqlite_damaged)) is not None:
            raise damaged_sqlite(path, bad) from None
        first = _masked(e, url).splitlines()[0] if str(e) else ""
        if must_exist:
            raise StorageError(f"cannot read storage {shown!r}: it holds no Optuna studies, or cannot be opened "
                               f"({type(e).__name__}: {first})") from None
        raise StorageError(f"cannot open storage {shown!r}: {type(e).__name__}: {first}") from None


def _journal(path: str, *, read_only: bool) -> optuna.storages.BaseStorage:
    """A journal file's storage, with a torn last record set aside first (storage_faults)."""
    from optuna.storages.journal import JournalFileOpenLock

    from ..storage_faults import damaged_journal, journal_backend, repair_journal

    lock = JournalFileOpenLock(path)
    repair_journal(path, lock, read_only=read_only)
    try:
        return optuna.storages.JournalStorage(journal_backend(path, lock))
    except (ValueError, KeyError, TypeError, RecursionError) as e:  # a damaged record before the last one
        raise damaged_journal(path, e) from None


def _grpc_client(url: str, shown: str) -> optuna.storages.BaseStorage:
    """A client of `nas storage-proxy` (Optuna's gRPC storage proxy) at ``grpc://HOST:PORT``."""
    host, _, port = url.split("://", 1)[1].strip("/").rpartition(":")
    if not host or not port.isdigit():
        raise StorageError(f"bad storage URL {shown!r}: expected grpc://HOST:PORT of a running `nas storage-proxy`")
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise StorageError("grpc:// storages need grpcio: pip install 'sparsenas[grpc]'") from None
    with _quiet_experimental():
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=int(port))
    try:
        proxy.get_all_studies()  # fail here, clearly, when no proxy listens there
    except Exception as e:
        raise StorageError(f"cannot reach the storage proxy at {shown!r} ({type(e).__name__}); start it with "
                           f"`nas storage-proxy --storage URL --host {host} --port {port}`") from None
    return proxy


def serve_storage_proxy(url: str, *, host: str = "127.0.0.1", port: int = 13000) -> None:
    """Serve the storage at ``url`` to workers on ``grpc://HOST:PORT`` (Optuna's gRPC storage proxy:
    one process holds the database connections, so hundreds of workers do not each open their own)."""
    if url.startswith("grpc://"):
        raise StorageError("--storage of the proxy is the database it serves, not another grpc:// proxy")
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise StorageError("nas storage-proxy needs grpcio: pip install 'sparsenas[grpc]'") from None
    storage = open_storage(url, heartbeat=False)
    if isinstance(storage, optuna.storages.RDBStorage):
        storage = optuna.storages.get_storage(storage)  # Optuna's in-process cache, as its docs advise
    with _quiet_experimental():
        try:
            optuna.storages.run_grpc_proxy_server(storage, host=host, port=port)
        except RuntimeError as e:  # grpc cannot bind (port in use...)
            raise StorageError(f"cannot serve on {host}:{port}: {e}; pass another --port or --host") from None


def _fast_sqlite(storage: optuna.storages.RDBStorage, path: str) -> None:
    """WAL journal, synchronous=NORMAL: a commit no longer waits for the disk. Optuna commits once per
    suggested parameter and attribute (~110 commits for a sparse_mbv2 trial); with sqlite's default
    (rollback journal, FULL) each took ~19 ms here, about 2 s per trial. WAL keeps the database
    consistent when a worker is killed (a committed trial survives SIGKILL; only a power cut may lose
    the last ones) and lets readers run beside the one writer."""
    from sqlalchemy import event

    def pragmas(conn: Any, _record: Any) -> None:
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    def damaged(ctx: Any) -> None:  # a damaged page met by any later query: exit 2, not a traceback
        from ..storage_faults import damaged_sqlite, sqlite_damaged

        if sqlite_damaged(ctx.original_exception):
            raise damaged_sqlite(path, ctx.original_exception)

    event.listen(storage.engine, "connect", pragmas)
    event.listen(storage.engine, "handle_error", damaged)
    storage.engine.dispose()  # connections opened before the listener reconnect with it


def _with_driver(url: str) -> str:
    """``postgresql://`` means psycopg2 to SQLAlchemy; the postgres extra installs psycopg 3, so use it
    when psycopg2 is absent."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None \
            and importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


# A worker records a heartbeat every HEARTBEAT_INTERVAL s; a RUNNING trial silent for HEARTBEAT_GRACE s
# is failed and re-queued (up to 2 retries) by the next worker that starts a trial on the study.
HEARTBEAT_INTERVAL = 10
HEARTBEAT_GRACE = 30


def _masked(e: BaseException, url: str) -> str:
    """An exception's text with the URL's password masked (drivers echo the URL or DSN back)."""
    text = str(e)
    if "://" in url:
        password, spans = _url_secrets(url)
        for secret in [password or "", *(url[a:b] for a, b in spans)]:
            if secret:
                text = text.replace(secret, "***")
    return text


def _check_parent(path: str, shown: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise StorageError(f"cannot open storage {shown!r}: folder {parent} does not exist")




def load_study(storage: str, study_name: str | None) -> optuna.Study:
    """A study of an existing storage, for read-only commands: nothing is created."""
    st = open_storage(storage, heartbeat=False, must_exist=True)
    names = [s.study_name for s in optuna.get_all_study_summaries(st)]
    shown = mask_url(storage)
    if study_name is None:
        if len(names) != 1:
            raise SparseNASError(f"storage {shown} holds {len(names)} studies; pass --study, one of: {', '.join(names) or '(none)'}")
        study_name = names[0]
    if study_name not in names:
        raise SparseNASError(f"no study '{study_name}' in {shown}; studies there: {', '.join(names) or '(none)'}")
    return optuna.load_study(study_name=study_name, storage=st)





# ---------------------------------------------------------------- a search stopped by the storage
def search_fault(e: BaseException, storage: str, artifact_dir: str | None = None) -> SparseNASError | None:
    """What to tell the user when a search stopped on ``e``: a damaged database met mid-search, or a
    full disk or I/O error (naming where it wrote and what the storage kept); None for anything else
    (a bug keeps its traceback). Optuna's trial loop can bury both under its own errors."""
    from ..storage_faults import cause, out_of_space, space_error
    from .weights import default_artifact_dir

    if (own := cause(e, lambda x: isinstance(x, StorageError))) is not None:
        return own  # type: ignore[return-value]
    full = out_of_space(e)
    if full is None:
        return None
    path = _file_path(storage) if isinstance(storage, str) and "://" in storage else None
    return space_error(full, [path or mask_url(storage), artifact_dir or default_artifact_dir(storage)],
                       _kept(storage))


def _kept(storage: str) -> str:
    """What ``storage`` holds now, read back after a failed write (reading needs no space)."""
    try:
        st = open_storage(storage, heartbeat=False, must_exist=True)
        counts = []
        for s in optuna.get_all_study_summaries(st, include_best_trial=False):
            study = optuna.load_study(study_name=s.study_name, storage=st)
            counts.append(f"{len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))} finished "
                          f"trials of study '{s.study_name}'")
        held = "; ".join(counts) or "no study yet"
    except Exception:  # a storage that cannot even be read now: say what is known
        return ("Every trial that finished before this is in the storage; no partial weights file was left under "
                "its name.")
    return f"The storage keeps {held} (every trial that finished before this); no partial weights file was left."
