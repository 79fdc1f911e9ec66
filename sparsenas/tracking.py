"""The one place that talks to Optuna storage.

Every search is an Optuna study: one trial per evaluated architecture, params = the architecture's
choices, values = (accuracy, latency_ms) or (accuracy,), user attrs = architecture JSON and costs,
intermediate values = validation accuracy per epoch.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from .arch import Arch
from .errors import SparseNASError, StorageError
from .evaluators.result import EvalResult
from .pruners.mo_asha import MOASHAPruner, report, should_prune


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    """Heartbeats and metric names are marked experimental; they are the documented way to do both."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


from .config import DEFAULT_STORAGE  # noqa: E402  (defined once, importable without optuna)
MULTI = ("accuracy", "latency_ms")
SINGLE = ("accuracy",)
DIRECTIONS = {"accuracy": "maximize", "latency_ms": "minimize", "model_bytes": "minimize"}
OBJECTIVE_NAMES = {"accuracy": "accuracy", "latency": "latency_ms", "size": "model_bytes"}  # flag name -> field


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
        from .storage_faults import cause, damaged_sqlite, sqlite_damaged

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

    from .storage_faults import damaged_journal, journal_backend, repair_journal

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
        from .storage_faults import damaged_sqlite, sqlite_damaged

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


def _write_rdb(backend: optuna.storages.RDBStorage, trial_id: int, buffered: "_BufferedStorage") -> None:
    """One session, one commit, one look-up of the trial: Optuna's own ``*_without_commit`` helpers
    look the trial up again for every row, which cost more than the commits they save."""
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(backend.scoped_session) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        backend.check_trial_is_updatable(trial_id, trial.state)
        session.add_all([models.TrialParamModel(trial_id=trial_id, param_name=name, param_value=value,
                                                distribution_json=distribution_to_json(dist))
                         for name, value, dist in buffered.params])
        for model, attrs in ((models.TrialUserAttributeModel, buffered.user_attrs),
                             (models.TrialSystemAttributeModel, buffered.system_attrs)):
            if not attrs:
                continue
            existing = {a.key: a for a in session.query(model).filter(model.trial_id == trial_id,
                                                                      model.key.in_(list(attrs)))}
            for key, value in attrs.items():
                if key in existing:
                    existing[key].value_json = json.dumps(value)
                else:
                    session.add(model(trial_id=trial_id, key=key, value_json=json.dumps(value)))


class _BufferedStorage:
    """Stands in for a RUNNING trial's storage (``Trial.storage``) while the trial is filled in: its
    parameters and attributes are kept here and written by :func:`_write_buffered` in one transaction.
    Everything else goes to the real storage."""

    def __init__(self, storage: optuna.storages.BaseStorage) -> None:
        self.storage = storage
        self.params: list[tuple[str, float, Any]] = []
        self.user_attrs: dict[str, Any] = {}
        self.system_attrs: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)

    def set_trial_param(self, trial_id: int, name: str, value: float, distribution: Any) -> None:
        self.params.append((name, value, distribution))

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.user_attrs[key] = value

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.system_attrs[key] = value


def _write_buffered(buffered: _BufferedStorage, trial_id: int) -> None:
    """Write what ``buffered`` kept for a RUNNING trial: in one transaction on an RDB storage (Optuna
    commits each parameter and attribute on its own: the 69 choices of a sparse_mbv2 trial were 69
    commits. Optuna also checks each parameter's distribution against the study's earlier trials;
    the study's space and version are checked when it is opened, which covers that), one call each
    elsewhere (a journal appends them to one file; in-memory and gRPC storages have no batch call)."""
    storage = buffered.storage
    backend = getattr(storage, "_backend", storage)  # Optuna wraps RDB storages in a read cache
    if not (buffered.params or buffered.user_attrs or buffered.system_attrs):
        return
    if isinstance(backend, optuna.storages.RDBStorage):
        _write_rdb(backend, trial_id, buffered)
        return
    for name, value, dist in buffered.params:
        storage.set_trial_param(trial_id, name, value, dist)
    for key, value in buffered.user_attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
    for key, value in buffered.system_attrs.items():
        storage.set_trial_system_attr(trial_id, key, value)


@dataclass
class StudySpec:
    """What a study is about; a resumed study must match it."""

    space: str
    space_version: int
    dataset: str
    task: dict
    objectives: tuple[str, ...]
    runtime: str = "torch"        # whose latencies the study's values are

    def attrs(self) -> dict[str, Any]:
        return {"space": self.space, "space_version": self.space_version, "dataset": self.dataset,
                "task": self.task, "objectives": list(self.objectives), "runtime": self.runtime}


class Tracker:
    """A study plus the conventions sparsenas stores in it."""

    def __init__(self, storage: str | optuna.storages.BaseStorage, study_name: str, spec: StudySpec, *,
                 sampler: optuna.samplers.BaseSampler | None = None,
                 pruner: optuna.pruners.BasePruner | None = None, extra_attrs: dict | None = None,
                 artifact_dir: str | None = None, settings: dict[str, Any] | None = None,
                 resume_anyway: bool = False) -> None:
        self.storage = open_storage(storage) if isinstance(storage, str) else storage
        # trained weights go to a file artifact store beside file storages, or to --artifact-dir
        self.artifact_dir = artifact_dir or (default_artifact_dir(storage) if isinstance(storage, str) else None)
        self.spec = spec
        self.objectives = tuple(spec.objectives)
        self._mine: set[int] = set()  # ids of the trials this tracker started (record_worker)
        self.pruner = pruner
        self._artifact_dir_recorded = False
        self._store: optuna.artifacts.FileSystemArtifactStore | None = None
        # with a successive-halving pruner of sparsenas's own, the trial target counts architectures
        # trained to full fidelity (COMPLETE); otherwise PRUNED trials count too
        self.full_fidelity = isinstance(pruner, MOASHAPruner)
        # load_if_exists: workers started together all join the one study; the retry covers sqlite's
        # "database is locked" while another worker is creating it
        self.study = _retry("create", lambda: optuna.create_study(
            storage=self.storage, study_name=study_name, sampler=sampler, pruner=pruner,
            directions=[DIRECTIONS[o] for o in self.objectives], load_if_exists=True))
        self._check_or_set(spec.attrs(), extra_attrs or {})
        if settings and not resume_anyway:
            self._check_settings(settings)
        with _quiet_experimental():
            self.study.set_metric_names(list(self.objectives))

    def _check_or_set(self, attrs: dict[str, Any], extra: dict[str, Any]) -> None:
        old = self.study.user_attrs
        if "space" in old:
            for key in ("space", "space_version", "task", "objectives", "runtime"):
                if key == "runtime" and key not in old:  # a study from before runtimes: torch, not checked
                    continue
                if json.dumps(old.get(key)) != json.dumps(attrs[key]):
                    raise SparseNASError(
                        f"study '{self.study.study_name}' already holds a search with {key}={old.get(key)!r}, but this "
                        f"run asks for {key}={attrs[key]!r}; resume it with the same settings or pass another --study")
            return
        if len(self.study.directions) != len(self.objectives):
            raise SparseNASError(f"study '{self.study.study_name}' exists with {len(self.study.directions)} objectives; "
                                 "pass another --study")
        # "space" goes last: a worker that sees it knows every other attr is written
        for k, v in sorted({**attrs, **extra}.items(), key=lambda kv: kv[0] == "space"):
            self.study.set_user_attr(k, v)

    def _check_settings(self, settings: dict[str, Any]) -> None:
        """A resumed study must be searched the way it started (budget, seed, strategy): trials of two
        budgets in one study are not comparable. The first run's settings are the study's ``config``."""
        old = self.study.user_attrs.get("config")
        if not isinstance(old, dict):
            return
        diff = [k for k, v in settings.items() if k in old and json.dumps(old[k], sort_keys=True) != json.dumps(v, sort_keys=True)]
        if diff:
            was = ", ".join(f"{k}={old[k]!r}" for k in diff)
            now = ", ".join(f"{k}={settings[k]!r}" for k in diff)
            raise SparseNASError(f"study '{self.study.study_name}' was searched with {was}, but this run asks for {now}; "
                                 "re-run with the study's settings, pass another --study, or --resume-anyway to add "
                                 "trials of the new settings to it (--trials and --timeout may change freely)")

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def set_study_attr(self, key: str, value: Any) -> None:
        self.study.set_user_attr(key, value)

    @contextlib.contextmanager
    def batch(self, trial: optuna.Trial) -> Iterator[None]:
        """Inside, the parameters a RUNNING ``trial`` is suggested and the attributes (and artifacts)
        recorded on it are kept, then written at the end in one storage transaction; the trial object
        sees them at once. Nothing inside may rely on reading them back from the storage."""
        if isinstance(trial.storage, _BufferedStorage):  # already inside a batch: one write at its end
            yield
            return
        buffered = _BufferedStorage(trial.storage)
        trial.storage = buffered  # type: ignore[assignment]  # Trial writes through this attribute
        try:
            yield
        finally:
            trial.storage = buffered.storage
            _write_buffered(buffered, trial._trial_id)

    # -- trials run through optimize()/ask()
    def record_epoch(self, trial: optuna.Trial, epoch: int, value: float) -> bool:
        """Log validation accuracy after ``epoch``; True when the pruner says to stop the trial.

        Optuna refuses ``report()``/``should_prune()`` in multi-objective studies; there the value goes
        through the storage as an intermediate value (the dashboard plots it) and the pruner, when the
        study has one (mo-asha), is asked directly."""
        report(trial, value, epoch)
        if self.multi_objective and self.pruner is None:
            return False
        return should_prune(trial)

    def record_stopped(self, trial: optuna.Trial, epoch: int, value: float, reason: str) -> None:
        """A trial stopped after ``epoch`` (about to be PRUNED): its reason and its last validation
        accuracy (Optuna stores no values for a PRUNED multi-objective trial; read back as
        TrialRecord.accuracy, beside the latency recorded before training)."""
        with self.batch(trial):
            trial.set_user_attr("accuracy", _jsonable(float(value)))
            trial.set_user_attr("epochs", int(epoch))
            self.record_reason(trial, "pruned", reason)

    def record_arch(self, trial: optuna.Trial, arch: Arch, **attrs: Any) -> None:
        trial.set_user_attr("arch", arch.to_json())
        trial.set_user_attr("arch_digest", arch.digest())
        for k, v in attrs.items():
            trial.set_user_attr(k, _jsonable(v))

    def record_result(self, trial: optuna.Trial, result: EvalResult) -> None:
        for k, v in result.to_attrs().items():
            trial.set_user_attr(k, _jsonable(v))

    def record_latency(self, trial: optuna.Trial, ms: float, model_bytes: int | None = None) -> None:
        """The latency (and exported size) of a trial's network, known before it trains, so a pruner can
        rank trials on them (read back as TrialRecord.latency_ms, TrialRecord.model_bytes)."""
        trial.set_user_attr("latency_ms", _jsonable(float(ms)))
        if model_bytes is not None:
            trial.set_user_attr("model_bytes", int(model_bytes))

    def record_reason(self, trial: optuna.Trial, state: str, reason: str) -> None:
        """Why a trial is about to be ``"pruned"`` or has ``"failed"`` (read back as TrialRecord.reason)."""
        if state not in ("pruned", "failed"):
            raise ValueError(f"state must be 'pruned' or 'failed', got {state!r}")
        trial.set_user_attr("pruned_reason" if state == "pruned" else "fail_reason", reason)

    def twin(self, canonical_digest: str) -> FrozenTrial | None:
        """A COMPLETE trial of this study that built the same network (same ``canonical_digest``)."""
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.user_attrs.get("canonical_digest") == canonical_digest:
                return t
        return None

    def record_duplicate(self, trial: optuna.Trial, twin: FrozenTrial) -> list[float]:
        """Give ``trial`` the results (and saved weights) of ``twin``, the same network under another
        encoding, instead of training it again; returns the twin's values."""
        own = {"arch", "arch_digest", "canonical_digest", "strategy", WORKER_ATTR, CLAIM_ATTR}  # this trial's own
        for k, v in twin.user_attrs.items():
            if k not in own:
                trial.set_user_attr(k, v)
        trial.set_user_attr("duplicate_of", twin.number)
        return list(twin.values)

    def values(self, result: EvalResult) -> list[float]:
        return [float(getattr(result, o)) for o in self.objectives]

    def save_weights(self, trial: optuna.Trial, state_dict: dict[str, Any]) -> str | None:
        """Upload ``state_dict`` as an artifact of the RUNNING ``trial`` (Optuna refuses artifacts on
        finished trials); returns the artifact id, or None when there is no artifact
        store (a database storage without ``artifact_dir``)."""
        if self.artifact_dir is None:
            return None
        import tempfile

        import torch

        if self._store is None:
            self._store = _file_store(self.artifact_dir, create=True)
        store = self._store
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"trial-{trial.number}-weights.pt")
            torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, path)
            artifact_id = optuna.artifacts.upload_artifact(artifact_store=store, file_path=path, study_or_trial=trial,
                                                           mimetype="application/x-pytorch")
        trial.set_user_attr(WEIGHTS_ATTR, artifact_id)
        if not self._artifact_dir_recorded:  # a study attr read is a query: once per process
            if self.study.user_attrs.get("artifact_dir") != os.path.abspath(self.artifact_dir):
                self.set_study_attr("artifact_dir", os.path.abspath(self.artifact_dir))
            self._artifact_dir_recorded = True
        return artifact_id

    # -- architectures evaluated outside optimize() (supernet strategies)
    def log_arch(self, arch: Arch, choices: dict[str, list], result: EvalResult, **attrs: Any) -> FrozenTrial:
        """Record an architecture a one-shot strategy evaluated as a finished trial; the stored trial."""
        dists = {k: CategoricalDistribution(v) for k, v in choices.items()}
        ft = optuna.trial.create_trial(
            params=dict(arch.choices), distributions=dists, values=self.values(result),
            user_attrs={"arch": arch.to_json(), "arch_digest": arch.digest(),
                        **{k: _jsonable(v) for k, v in {**result.to_attrs(), **attrs}.items()}},
            intermediate_values={i + 1: v for i, v in enumerate(result.history)})
        # Study.add_trial through the storage, which returns the stored trial (its number is the
        # study's; the template's is -1), found by id even when other workers add trials meanwhile
        study_id = self.storage.get_study_id_from_name(self.study.study_name)
        return self.storage.get_trial(self.storage.create_new_trial(study_id, template_trial=ft))

    # -- the study's trial target, shared by every worker on it
    # The target counts COMPLETE and PRUNED trials: Optuna's MaxTrialsCallback with
    # states=(COMPLETE, PRUNED). A FAIL trial (a diverged network, a killed worker's trial) does not
    # count, so another trial takes its place.
    def record_worker(self, trial: optuna.Trial) -> None:
        """Which process runs ``trial`` (host:pid), so a dead local worker's trial can be failed later."""
        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        self._mine.add(trial._trial_id)

    def fail_stale(self) -> None:
        """Fail RUNNING trials whose worker is gone: by heartbeat on RDB storages (Optuna re-queues them,
        up to 2 retries); on storages without heartbeats (journal), those whose worker process ran on
        this machine and no longer exists."""
        from optuna.storages._heartbeat import is_heartbeat_enabled

        if is_heartbeat_enabled(self.storage):
            with _quiet_experimental():
                optuna.storages.fail_stale_trials(self.study)
            return
        host = socket.gethostname()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            who, _, pid = str(t.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
            if who != host or not pid.isdigit():
                continue
            # this very process, but not this tracker: an earlier search here that stopped on an error
            # (a full disk) before it could fail its trial
            gone = t._trial_id not in self._mine if int(pid) == os.getpid() else not _alive(int(pid))
            if gone:
                with contextlib.suppress(Exception):  # another worker failed it first
                    self.storage.set_trial_user_attr(t._trial_id, "fail_reason", "its worker process died")
                    self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)

    def counts(self) -> tuple[int, list[int]]:
        """(trials that count towards the target, numbers of the RUNNING trials)."""
        counted = (TrialState.COMPLETE,) if self.full_fidelity else (TrialState.COMPLETE, TrialState.PRUNED)
        trials = self.study.get_trials(deepcopy=False, states=(*counted, TrialState.RUNNING))
        running = [t.number for t in trials if t.state == TrialState.RUNNING]
        return len(trials) - len(running), running

    def _committed(self, before: int | None = None) -> int:
        """Trials that count towards the target, plus RUNNING ones that claimed a place
        (:meth:`claim_completion`), of those numbered below ``before`` when given."""
        counted = (TrialState.COMPLETE,) if self.full_fidelity else (TrialState.COMPLETE, TrialState.PRUNED)
        n = 0
        for t in self.study.get_trials(deepcopy=False, states=(*counted, TrialState.RUNNING)):
            if t.state != TrialState.RUNNING:
                n += 1
            elif t.user_attrs.get(CLAIM_ATTR) and (before is None or t.number < before):
                n += 1
        return n

    def surplus(self, trial: optuna.Trial, target: int) -> bool:
        """True when ``trial`` is beyond ``target``: the finished trials and the RUNNING ones started
        before it (lower numbers; the storage numbers trials atomically) already make the target. Two
        workers that start the last trial at the same moment agree on which one is surplus. With a
        pruner counting full fidelity, RUNNING trials may still be pruned: only those that claimed a
        place count."""
        if self.full_fidelity:
            return self._committed() >= target
        done, running = self.counts()
        return done + sum(1 for n in running if n < trial.number) >= target

    def target_reached(self, target: int) -> bool:
        """Full-fidelity counting: the study holds ``target`` COMPLETE trials or claims, so a RUNNING
        trial that has not claimed a place can stop."""
        return self.full_fidelity and self._committed() >= target

    def claim_completion(self, trial: optuna.Trial, target: int) -> bool:
        """Full-fidelity counting: ``trial`` finished training; claim a place among the ``target``
        architectures. The claim is written before the others are read, so of two trials claiming the
        last place at once both see both claims and the lower number keeps it. False: no place left
        (the trial is surplus)."""
        if not self.full_fidelity:
            return True
        trial.set_user_attr(CLAIM_ATTR, True)
        if self._committed(before=trial.number) >= target:
            trial.set_user_attr(CLAIM_ATTR, False)
            return False
        return True

    def mark_surplus(self, trial: optuna.Trial, target: int) -> None:
        trial.set_user_attr("fail_reason", f"surplus: the study reached its target of {target} trials while "
                                           "this worker was starting it")
        trial.set_user_attr("surplus", True)

    def wait_for_slot(self, target: int, deadline: float | None = None, poll: float = 1.0) -> bool:
        """Block while other workers' RUNNING trials would make the target; True when a trial may start,
        False when the target is reached (or ``deadline``, a time.time(), passed)."""
        import time

        stale_checked = False
        while True:
            done, running = self.counts()
            if done >= target:
                self.fail_stale()  # leave no dead worker's trial RUNNING in a finished study
                return False
            if self.full_fidelity:
                # asynchronous: a RUNNING trial may yet be pruned, so only claimed places (trials
                # already trained, being told) are waited for
                if self._committed() < target:
                    return True
            elif done + len(running) < target:
                return True
            # a dead worker's RUNNING trial may be what fills the target (looked for only then: with
            # heartbeats, Optuna's optimize() fails stale trials itself before each trial)
            if not stale_checked:
                self.fail_stale()
                stale_checked = True
                continue
            if deadline is not None and time.time() >= deadline:
                return False
            time.sleep(poll)
            stale_checked = False

    # -- reading
    def finished(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))

    def front(self) -> list[FrozenTrial]:
        return pareto_front(self.study)


WORKER_ATTR = "worker"
CLAIM_ATTR = "full_fidelity_claim"  # a RUNNING trial trained to the end holds a place in the target


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """Best trials: the Pareto front (multi-objective) or the best trial, sorted by accuracy."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    best = study.best_trials if len(study.directions) > 1 else [study.best_trial]
    return sorted(best, key=lambda t: -t.values[0])


def arch_of(trial: FrozenTrial) -> Arch:
    if "arch" not in trial.user_attrs:
        raise SparseNASError(f"trial {trial.number} has no architecture recorded")
    return Arch.from_json(trial.user_attrs["arch"])


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


# ---------------------------------------------------------------- artifacts (trained weights)
WEIGHTS_ATTR = "weights_artifact"


def default_artifact_dir(storage_url: str) -> str | None:
    """``<file stem>-artifacts/`` beside a sqlite or journal file; None for database servers."""
    if not isinstance(storage_url, str) or "://" not in storage_url:
        return None
    path = _file_path(storage_url)
    if path is None:
        return None
    return os.path.splitext(path)[0] + "-artifacts"


def checkpoint_dir_for(storage_url: str, study_name: str, checkpoint_dir: str | None = None) -> str | None:
    """The folder of a study's supernet checkpoints: ``<checkpoint_dir>/<study>/`` when given, else
    ``<file stem>-checkpoints/<study>/`` beside a sqlite or journal file; None for database servers."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study_name) or "study"
    if checkpoint_dir:
        return os.path.join(checkpoint_dir, safe)
    artifacts = default_artifact_dir(storage_url)
    return None if artifacts is None else os.path.join(artifacts[:-len("-artifacts")] + "-checkpoints", safe)


class _AtomicFileStore(optuna.artifacts.FileSystemArtifactStore):
    """Optuna's file artifact store, writing each artifact under a temporary name and renaming it: a
    write cut short (a full disk) leaves no partial weights file under the artifact's name."""

    def write(self, artifact_id: str, content_body: Any) -> None:
        import shutil

        from .atomic import write_atomic

        # Optuna's check that the id stays inside the folder
        write_atomic(self._get_filepath(artifact_id), lambda f: shutil.copyfileobj(content_body, f))


def _file_store(path: str, *, create: bool = False) -> optuna.artifacts.FileSystemArtifactStore:
    if create:
        os.makedirs(path, exist_ok=True)
    return _AtomicFileStore(path)


def artifact_dir_for(storage_url: str, artifact_dir: str | None = None,
                     study: optuna.Study | None = None) -> str | None:
    """Where the artifacts of ``storage_url`` live: ``artifact_dir`` when given, else the folder the
    search recorded in the study (``artifact_dir`` study attr), else the default beside a file storage."""
    if artifact_dir:
        return artifact_dir
    if study is not None and study.user_attrs.get("artifact_dir"):
        return str(study.user_attrs["artifact_dir"])
    return default_artifact_dir(storage_url)


def storage_artifact_dir(storage_url: str, artifact_dir: str | None = None) -> str | None:
    """The existing artifact folder of a storage, for optuna-dashboard: ``artifact_dir`` when given,
    else the default beside a file storage, else the one folder its studies recorded; None if none."""
    if artifact_dir:
        if not os.path.isdir(artifact_dir):
            raise SparseNASError(f"artifact folder {artifact_dir} does not exist; pass the --artifact-dir the search "
                                 "wrote its weights to")
        return artifact_dir
    path = default_artifact_dir(storage_url)
    if path is None or not os.path.isdir(path):
        st = open_storage(storage_url, heartbeat=False, must_exist=True)
        recorded = {s.user_attrs.get("artifact_dir") for s in optuna.get_all_study_summaries(st)} - {None}
        path = next(iter(recorded)) if len(recorded) == 1 else path
    return path if path and os.path.isdir(path) else None


def artifact_store_for(storage_url: str, artifact_dir: str | None = None) -> optuna.artifacts.FileSystemArtifactStore | None:
    """The file artifact store of a storage (see :func:`storage_artifact_dir`), or None."""
    path = storage_artifact_dir(storage_url, artifact_dir)
    return _file_store(path) if path else None


def load_weights(storage_url: str, study: optuna.Study, trial: FrozenTrial,
                 artifact_dir: str | None = None) -> dict[str, Any] | None:
    """The trained state_dict saved for ``trial`` (None when the trial has none), loaded with
    ``torch.load(weights_only=True)``."""
    import tempfile

    import torch

    artifact_id = trial.user_attrs.get(WEIGHTS_ATTR)
    if artifact_id is None:
        return None
    path = artifact_dir_for(storage_url, artifact_dir, study)
    if path is None or not os.path.isdir(path):
        raise SparseNASError(f"trial {trial.number} has saved weights (artifact {artifact_id}), but the artifact folder "
                             f"{path or '(unknown for this storage)'} is missing; pass --artifact-dir DIR, or --train "
                             "to retrain the architecture")
    with tempfile.TemporaryDirectory() as tmp:
        dst = os.path.join(tmp, "weights.pt")
        try:
            optuna.artifacts.download_artifact(artifact_store=_file_store(path), artifact_id=artifact_id, file_path=dst)
        except Exception as e:  # the store raises ArtifactNotFound, OSError...
            raise SparseNASError(f"cannot read the weights of trial {trial.number} (artifact {artifact_id}) from {path}: "
                                 f"{type(e).__name__}: {e}; pass --train to retrain the architecture") from None
        try:
            state = torch.load(dst, weights_only=True)
        except Exception as e:  # a damaged file in the artifact folder
            state = e
        if not isinstance(state, dict):
            what = f"{type(state).__name__}: {str(state).splitlines()[0] if str(state) else ''}" \
                if isinstance(state, Exception) else f"it holds a {type(state).__name__}, not a state_dict"
            raise SparseNASError(f"the weights of trial {trial.number} ({os.path.join(path, artifact_id)}) cannot be "
                                 f"read ({what}); pass --train to retrain the architecture") from None
        return state


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


def summarize(trials: Iterable[FrozenTrial], keys: Sequence[str]) -> list[dict[str, Any]]:
    return [{"trial": t.number, **{k: t.user_attrs.get(k) for k in keys}} for t in trials]


# ---------------------------------------------------------------- listing the studies of a storage
def _storage_exists(url: str) -> bool:
    """False for a sqlite or journal file that is not there (opening would create it)."""
    if not isinstance(url, str) or "://" not in url:
        return True  # open_storage says what is wrong with it
    scheme, rest = url.split("://", 1)
    if scheme == "journal":
        return os.path.isfile(rest or "nas.journal")
    if scheme.startswith("sqlite") and "///" in url:
        path = url.split("///", 1)[1]
        return path in ("", ":memory:") or os.path.isfile(path)
    return True


def study_overview(storage: str) -> list[dict[str, Any]]:
    """Each study of ``storage``: name, what it searched (space, dataset, strategy, runtime when
    recorded), trials by state and the best value of each objective. A sqlite or journal file that
    does not exist is an error, not a new empty storage."""
    if not _storage_exists(storage):
        raise StorageError(f"no storage at {mask_url(storage)!r}: the file does not exist (nothing was created); "
                           "pass the --storage a search wrote to")
    st = open_storage(storage, heartbeat=False)
    out = []
    for summary in optuna.get_all_study_summaries(st, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=st)
        rec = study_record(study)
        trials = study.get_trials(deepcopy=False)
        states: dict[str, int] = {}
        for t in trials:
            states[t.state.name] = states.get(t.state.name, 0) + 1
        best: dict[str, float] = {}
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
        for i, (name, direction) in enumerate(zip(rec.objectives, study.directions)):
            vals = [t.values[i] for t in done if len(t.values) > i]
            if vals:
                best[name] = max(vals) if direction == optuna.study.StudyDirection.MAXIMIZE else min(vals)
        out.append({"study": rec.name, "space": rec.space, "dataset": rec.dataset, "strategy": rec.strategy,
                    "sampler": rec.config.get("sampler"), "runtime": rec.runtime, "trials": len(trials),
                    "states": states, "best": best,
                    "front": len(pareto_front(study)) if done else 0})
    return out


def search_fault(e: BaseException, storage: str, artifact_dir: str | None = None) -> SparseNASError | None:
    """What to tell the user when a search stopped on ``e``: a damaged database met mid-search, or a
    full disk or I/O error (naming where it wrote and what the storage kept); None for anything else
    (a bug keeps its traceback). Optuna's trial loop can bury both under its own errors."""
    from .storage_faults import cause, out_of_space, space_error

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


# ---------------------------------------------------------------- typed views of the attrs sparsenas writes
def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@dataclass(frozen=True)
class TrialRecord:
    """A trial as sparsenas records it: the readers (CLI, report, export, logs) use these fields
    instead of spelling user-attr keys, so the keys live here and in the writers above."""

    number: int
    state: str
    values: tuple[float, ...]
    arch_json: str | None
    accuracy: float | None          # validation accuracy (the first objective)
    latency_ms: float | None        # the network's latency (an objective or not: objectives may be accuracy,size)
    test_accuracy: float | None
    params: int | None
    nnz: int | None
    flops: float | None
    effective_flops: float | None
    latency_source: str | None      # "table:<profile>" or "measured"
    predicted_latency_ms: float | None  # the table's prediction (also when the objective was measured)
    predicted_metric: str | None
    measured_latency_ms: float | None
    measured_latency_cpu_ms: float | None
    strategy: str | None
    stage: str | None               # supernet strategies: estimate, inherited, retrained...
    reason: str | None              # why a trial was pruned or failed
    weights_artifact: str | None
    runtime: str | None             # the inference runtime the latency is that of (when recorded)
    model_bytes: int | None         # exported weights in the runtime's smallest encoding (when recorded)

    @property
    def arch(self) -> Arch | None:
        return Arch.from_json(self.arch_json) if self.arch_json else None

    def measured(self, metric: str | None = None) -> float | None:
        """The measured latency in ``metric`` (wall_ms, cpu_ms...; default the predicted one)."""
        return _float(self._attrs.get(f"measured_latency_{metric or self.predicted_metric or 'wall_ms'}",
                                      self.measured_latency_ms))

    _attrs: dict = field(default_factory=dict, repr=False, compare=False)  # raw attrs, for measured()


def trial_record(t: FrozenTrial) -> TrialRecord:
    a = t.user_attrs
    values = tuple(float(v) for v in (t.values or ()))
    source = a.get("latency_source")
    predicted = a.get("predicted_latency_ms")
    if predicted is None and str(source or "").startswith("table"):
        predicted = a.get("latency_ms")
    rec = TrialRecord(
        number=t.number, state=t.state.name, values=values, arch_json=a.get("arch"),
        accuracy=values[0] if values else _float(a.get("accuracy")),
        latency_ms=_float(a.get("latency_ms")) if a.get("latency_ms") is not None else (values[1] if len(values) > 1 else None),
        test_accuracy=_float(a.get("test_accuracy")), params=_int(a.get("params")), nnz=_int(a.get("nnz")),
        flops=_float(a.get("flops")), effective_flops=_float(a.get("effective_flops")),
        latency_source=str(source) if source else None, predicted_latency_ms=_float(predicted),
        predicted_metric=a.get("predicted_metric"), measured_latency_ms=_float(a.get("measured_latency_ms")),
        measured_latency_cpu_ms=_float(a.get("measured_latency_cpu_ms")), strategy=a.get("strategy"),
        stage=a.get("stage") or a.get("phase"), reason=a.get("pruned_reason") or a.get("fail_reason"),
        weights_artifact=a.get(WEIGHTS_ATTR), runtime=a.get("runtime"), model_bytes=_int(a.get("model_bytes")),
        _attrs=a)
    return rec


@dataclass(frozen=True)
class StudyRecord:
    """What a study records about its search (study user attrs)."""

    name: str
    space: str | None
    space_version: int | None
    dataset: str | None
    task: dict | None
    objectives: tuple[str, ...]
    strategy: str | None
    config: dict
    runtime: str | None

    @property
    def searched_space(self) -> str | None:
        """The space as the search named it (``module:Class`` for a plug-in), else its own name."""
        return self.config.get("space") or self.space


def study_record(study: optuna.Study) -> StudyRecord:
    sa = study.user_attrs
    config = sa.get("config") or {}
    return StudyRecord(name=study.study_name, space=sa.get("space"), space_version=sa.get("space_version"),
                       dataset=sa.get("dataset"), task=sa.get("task"),
                       objectives=tuple(sa.get("objectives") or [f"value{i}" for i in range(len(study.directions))]),
                       strategy=sa.get("strategy"), config=config, runtime=sa.get("runtime") or config.get("runtime"))
