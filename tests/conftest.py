import pytest
import torch

# 1 thread: on a loaded 2-core machine, 2 threads made tiny ops up to 100x slower (ops tests)
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _profile_cache(tmp_path_factory):
    """Kernels a search times for its profile go to a cache of this test session, not the user's
    (also for the `nas` processes tests start: they inherit the environment)."""
    import os

    from sparsenas.hwprofiles.cache import CACHE_ENV

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("sparsenas-cache"))
    yield
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before


@pytest.fixture(autouse=True)
def _library_logging():
    """Each test starts with the ``sparsenas`` logger as a library leaves it: propagating to the root
    logger (where pytest's caplog listens), with no CLI handler. A test that ran the CLI in this
    process (``nas ...`` via ``cli.main``) called ``log.setup``, which stops propagation."""
    import logging

    from sparsenas import log

    logger = logging.getLogger("sparsenas")
    for h in [h for h in logger.handlers if isinstance(h, log._StderrHandler)]:
        logger.removeHandler(h)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)
    yield


@pytest.fixture
def storage_url(tmp_path):
    return f"sqlite:///{tmp_path / 'nas.db'}"


# ------------------------------------------------------------------ PostgreSQL for the scale-out tests
# SPARSENAS_TEST_POSTGRES=postgresql://user:pw@host:port names a server to use; otherwise a throwaway
# cluster is made with initdb in a temporary folder and served on a free port of 127.0.0.1.
def _pg_binary(name: str) -> str | None:
    import glob
    import shutil

    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return versions[-1] if versions else None


@pytest.fixture(scope="session")
def postgres_server():
    import os
    import shutil
    import socket
    import subprocess
    import tempfile

    pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'sparsenas[postgres]')")
    if url := os.environ.get("SPARSENAS_TEST_POSTGRES"):
        yield url.rstrip("/")
        return
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found; .ci/run installs them from Debian's "
                    "postgresql package, or set SPARSENAS_TEST_POSTGRES")
    run_as: list[str] = []
    tmp = tempfile.mkdtemp(prefix="sparsenas-pg-")
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres system user
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(tmp)
            pytest.skip("running as root and there is no 'postgres' user to own a throwaway cluster")
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = os.path.join(tmp, "data")
    try:
        subprocess.run(run_as + [initdb, "-D", data, "-A", "trust", "-U", "postgres", "-N"], check=True,
                       capture_output=True, timeout=120)
        subprocess.run(run_as + [pg_ctl, "-D", data, "-l", os.path.join(tmp, "log"), "-w", "-t", "60", "-o",
                                 f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off "
                                 "-c max_connections=100", "start"], check=True, capture_output=True, timeout=120)
    except (subprocess.SubprocessError, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"could not start a throwaway PostgreSQL cluster: {e}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(run_as + [pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A new, empty database on the test server, as an Optuna storage URL."""
    import uuid

    import psycopg

    name = f"sparsenas_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.replace("postgresql+psycopg://", "postgresql://") + "/postgres",
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{postgres_server}/{name}"
