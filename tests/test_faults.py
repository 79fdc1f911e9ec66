"""Faults lose nothing: torn journals, damaged databases, full disks, bad profiles, workers and
signals, exposed servers, secrets in URLs, broken checkpoints. Real files, real storages, real
processes; tiny searches (g2g_mlp on 64 synthetic samples, 1 epoch: ~0.3 s a trial)."""
from __future__ import annotations

import json
import sys
import os
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from _small_study import run_cli
from sparsenas.tracking import open_storage

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--space", "g2g_mlp", "--dataset", "synthetic", "--strategy", "random", "--epochs", "1", "--limit", "64",
        "--batch-size", "32", "--latency", "measured", "--no-progress", "--study", "f"]


def _study(url: str) -> optuna.Study:
    return optuna.load_study(study_name="f", storage=open_storage(url, must_exist=True))


def _search(url: str, trials: int, *extra: str) -> tuple[int, str, str]:
    return run_cli(["search", *TINY, "--trials", str(trials), "--storage", url, *extra])


# ------------------------------------------------------------------ torn journal
def test_a_journal_cut_mid_record_resumes_and_keeps_every_complete_trial(tmp_path):
    path = tmp_path / "f.journal"
    url = f"journal:///{path}"
    rc, _, err = _search(url, 2)
    assert rc == 0, err
    done = {t.number: t.params for t in _study(url).get_trials(states=(TrialState.COMPLETE,))}
    assert len(done) == 2
    size = path.stat().st_size
    os.truncate(path, size - 37)  # the last record (trial 1's COMPLETE) cut short, as a full disk leaves it
    assert not path.read_bytes().endswith(b"\n")

    rc, _, err = _search(url, 3)  # resume: the torn record is set aside, never glued to the next one
    assert rc == 0, err
    sides = list(tmp_path.glob("f.journal.torn-*"))
    assert len(sides) == 1 and sides[0].stat().st_size > 37
    assert f"moved its {sides[0].stat().st_size} bytes to {sides[0]}" in err and "torn record" in err
    after = {t.number: t for t in _study(url).trials}
    assert after[0].state == TrialState.COMPLETE and after[0].params == done[0]  # complete before the tear: kept
    assert sum(t.state == TrialState.COMPLETE for t in after.values()) == 3
    rc, out, err = run_cli(["studies", "--storage", url, "--json"])  # and the journal stays readable
    assert rc == 0 and "Traceback" not in err


def test_a_journal_ending_in_a_complete_record_is_not_touched(tmp_path):
    from sparsenas.storage_faults import torn_tail

    path = tmp_path / "j.log"
    path.write_bytes(b'{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}\n')
    before = path.read_bytes()
    assert torn_tail(str(path)) is None
    open_storage(f"journal:///{path}")
    assert path.read_bytes() == before and not list(tmp_path.glob("*.torn-*"))
    path.write_bytes(before + b'{"op_code": 4, "worker_id": "w", "stu\n')  # a last line that is not JSON
    assert torn_tail(str(path)) == len(before)


def test_a_record_torn_by_another_worker_mid_search_is_set_aside_before_the_next_append(tmp_path):
    path = tmp_path / "j.log"
    study = optuna.create_study(storage=open_storage(f"journal:///{path}"), study_name="s")  # open, repaired
    study.optimize(lambda t: t.suggest_int("x", 0, 9), n_trials=1)
    with open(path, "ab") as f:  # another worker's write, cut short while this one runs
        f.write(b'{"op_code":4,"worker_id":"other","study_id":0,"datetime_st')
    study.optimize(lambda t: t.suggest_int("x", 0, 9), n_trials=1)  # the same storage object appends
    assert [p.read_bytes() for p in tmp_path.glob("j.log.torn-*")] == [b'{"op_code":4,"worker_id":"other","study_id":0,'
                                                                        b'"datetime_st']
    again = optuna.load_study(study_name="s", storage=open_storage(f"journal:///{path}", must_exist=True))
    assert [t.state for t in again.trials] == [TrialState.COMPLETE] * 2


def test_a_journal_damaged_in_the_middle_is_exit_2_and_left_as_it_is(tmp_path):
    path = tmp_path / "f.journal"
    rc, _, err = _search(f"journal:///{path}", 1)
    assert rc == 0, err
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2][:20] + lines[3]  # a torn record glued to the next one (what Optuna alone leaves)
    path.write_bytes(b"".join(lines))
    before = path.read_bytes()
    rc, _, err = run_cli(["studies", "--storage", f"journal:///{path}"])
    assert rc == 2 and "Traceback" not in err
    assert str(path) in err and "damaged" in err
    assert path.read_bytes() == before


# ------------------------------------------------------------------ bad hardware profiles
@pytest.mark.parametrize("bad", [-29.95, float("nan")])
def test_a_profile_with_negative_or_nan_times_is_exit_2_before_any_training(tmp_path, bad):
    from sparsenas.hwprofiles import LatencyTable

    doc = json.loads(Path(LatencyTable.load(runtime="torch").path).read_text())
    key = sorted(doc["entries"])[7]
    impl = next(iter(doc["entries"][key]["impls"]))
    doc["entries"][key]["impls"][impl]["cpu_p10_ms"] = bad
    hw = tmp_path / "bad.json"
    hw.write_text(json.dumps(doc))
    db = tmp_path / "x.db"
    rc, out, err = run_cli(["search", "--space", "sparse_mbv2", "--dataset", "digits", "--input-size", "8",
                            "--runtime", "torch", "--hw", str(hw), "--trials", "1", "--epochs", "1", "--no-progress",
                            "--storage", f"sqlite:///{db}"])
    assert rc == 2 and "Traceback" not in err
    assert f"entry '{key}' impl '{impl}' has cpu_p10_ms={bad!r}" in err and str(hw) in err
    assert not db.exists()  # refused before the study (and any training) existed


# ------------------------------------------------------------------ damaged sqlite, full disks
def test_a_damaged_sqlite_file_is_exit_2_naming_it_and_left_untouched(tmp_path):
    import hashlib

    db = tmp_path / "f.db"
    url = f"sqlite:///{db}"
    rc, _, err = _search(url, 2)
    assert rc == 0, err
    with open(db, "r+b") as f:  # the header intact, 20 kB of garbage inside
        f.seek(4096)
        f.write(os.urandom(20_000))
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    for argv in (["studies"], ["report", "--out", str(tmp_path / "r")], ["search", *TINY, "--trials", "3"]):
        rc, out, err = run_cli([*argv, "--storage", url])
        assert rc == 2 and "Traceback" not in err, (argv, err)
        assert f"sqlite database {db} is damaged" in err and ".recover" in err, (argv, err)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs (we are root in CI; elsewhere the test is skipped)."""
    import subprocess

    where = tmp_path / "disk"
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(disk: Path, leave: int) -> Path:
    st = os.statvfs(disk)
    ballast = disk / "ballast"
    ballast.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return ballast


@pytest.mark.slow
@pytest.mark.parametrize("full", ["weights", "storage"])
def test_a_full_disk_is_exit_2_and_the_search_resumes_after_space_is_freed(tmp_path, small_disk, full):
    import torch

    db = (small_disk if full == "storage" else tmp_path) / "f.db"
    url = f"sqlite:///{db}"
    weights = small_disk / "weights"
    extra = ["--artifact-dir", str(weights)]
    rc, _, err = _search(url, 2, *extra)
    assert rc == 0, err
    done = {t.number: t.params for t in _study(url).get_trials(states=(TrialState.COMPLETE,))}
    ballast = _fill(small_disk, 40_000 if full == "storage" else 20_000)

    rc, out, err = _search(url, 4, *extra)
    assert rc == 2 and "Traceback" not in err, err
    assert "the search stopped: " in err and str(small_disk) in err and "re-run the same command" in err
    assert "keeps 2 finished trials of study 'f'" in err
    study = _study(url)
    saved = {t.user_attrs["weights_artifact"] for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert {p.name for p in weights.iterdir()} == saved  # no partial weights file, under any name
    for name in saved:
        torch.load(weights / name, weights_only=True)

    ballast.unlink()
    rc, _, err = _search(url, 4, *extra)
    assert rc == 0, err
    after = {t.number: t for t in _study(url).trials}
    assert all(after[n].params == p and after[n].state == TrialState.COMPLETE for n, p in done.items())
    assert sum(t.state == TrialState.COMPLETE for t in after.values()) == 4


# ------------------------------------------------------------------ workers started together
def _nas(argv: list[str], cwd: Path, **kw) -> "subprocess.Popen":
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "sparsenas.cli", *argv], cwd=cwd, env=env, **kw)


def _digests(url: str) -> dict[int, str]:
    return {t.number: t.user_attrs["arch_digest"] for t in _study(url).trials if "arch_digest" in t.user_attrs}


def test_workers_started_together_on_one_seed_draw_different_architectures(tmp_path):
    """Three machines' workers, each with the same seed and no worker index, start on one new study (a
    real sqlite storage): their samplers are alike, the trial numbers the storage gives are not."""
    from sparsenas.search_spaces import get_space
    from sparsenas.strategies.samplers import make_sampler, reseed_for_trial
    from sparsenas.task import Task

    space, task = get_space("sparse_mbv2"), Task("digits", (1, 8, 8), 10)
    storage = open_storage(f"sqlite:///{tmp_path / 'w.db'}", heartbeat=False)

    def first_draws(reseed: bool, name: str) -> list[str]:
        workers = [optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                       sampler=make_sampler(kind, {}, 0, 10)) for kind in ("tpe",) * 3]
        trials = [w.ask() for w in workers]  # all asked before any draws: started together
        if reseed:
            for w, t in zip(workers, trials):
                reseed_for_trial(w.sampler, 0, t.number)
        return [space.suggest(t, task).digest() for t in trials]

    assert len(set(first_draws(False, "a"))) == 1  # what Optuna alone does: one architecture, three times
    draws = first_draws(True, "b")
    assert len(set(draws)) == 3
    assert first_draws(True, "c") == draws  # reproducible: trial N of a study draws the same for a given seed


@pytest.mark.slow
def test_sigterm_to_search_workers_stops_every_worker_and_fails_their_trials(tmp_path):
    """`nas search --workers 2`: the workers' first trials are two architectures; SIGTERM to the parent
    ends the workers (their RUNNING trials FAIL) and no process is left."""
    import signal
    import subprocess
    import time

    url = f"journal:///{tmp_path / 'w.journal'}"  # no heartbeats: only the workers can fail their trials
    proc = _nas(["search", *TINY, "--epochs", "200", "--trials", "30", "--workers", "2", "--storage", url], tmp_path,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, running = time.time() + 240, []
    while time.time() < deadline and proc.poll() is None and len(running) < 2:
        time.sleep(0.3)
        if (tmp_path / "w.journal").exists():
            running = [t for t in _study(url).get_trials(states=(TrialState.RUNNING,)) if "arch_digest" in t.user_attrs]
    assert len(running) == 2, "the two workers did not start their trials"
    assert len({t.user_attrs["arch_digest"] for t in running}) == 2
    workers = [int(k) for k in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    assert len(workers) == 2
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()
                and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]  # nothing keeps running
    after = {t.number: t.state for t in _study(url).trials}
    assert all(after[t.number] == TrialState.FAIL for t in running)


# ------------------------------------------------------------------ servers, secrets, checkpoints
@pytest.mark.parametrize("command", ["dashboard", "storage-proxy"])
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "nas-host"])
def test_serving_beyond_loopback_needs_allow_remote(tmp_path, command, host):
    url = f"sqlite:///{tmp_path / 'missing.db'}"
    rc, out, err = run_cli([command, "--host", host, "--storage", url])
    assert rc == 2 and "Traceback" not in err
    assert "--allow-remote" in err and "no authentication" in err and f"--host {host}" in err
    assert not (tmp_path / "missing.db").exists()  # refused before anything was opened
    # allowed: a warning, then the command goes on (here to a storage URL it refuses, which stops it)
    rc, out, err = run_cli([command, "--host", host, "--allow-remote", "--storage", "nope://x"])
    assert "WARNING" in err and "no authentication" in err and rc == 2 and "unsupported scheme 'nope'" in err


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_hosts_need_no_allow_remote(tmp_path, host):
    rc, _, err = run_cli(["dashboard", "--host", host, "--storage", f"sqlite:///{tmp_path / 'missing.db'}"])
    assert rc == 2 and "does not exist" in err and "--allow-remote" not in err


def test_secret_query_parameters_are_masked_in_errors_and_urls():
    from sparsenas.tracking import mask_url

    url = "postgresql://nas@127.0.0.1:1/nas?sslmode=disable&password=TopSecret42&application_name=x&token=T0k3n"
    assert mask_url(url) == "postgresql://nas@127.0.0.1:1/nas?sslmode=disable&password=***&application_name=x&token=***"
    assert mask_url("mysql://h/db?passwd=a;pwd=b&sslkey=c&user=me") == "mysql://h/db?passwd=***;pwd=***&sslkey=***&user=me"
    pytest.importorskip("psycopg")
    rc, out, err = run_cli(["studies", "--storage", url])  # port 1: refused at once; drivers echo the DSN
    assert rc == 2 and "TopSecret42" not in out + err and "T0k3n" not in out + err and "Traceback" not in err


def test_a_supernet_checkpoint_missing_keys_is_exit_2_naming_it(tmp_path):
    import torch

    ckpt = tmp_path / "ck" / "x" / "supernet.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"format": 1, "trainer": {}}, ckpt)  # a valid torch file, without settings, epoch, rng...
    rc, _, err = run_cli(["search", "--space", "g2g_mlp", "--strategy", "entangled", "--dataset", "synthetic",
                          "--limit", "32", "--trials", "1", "--search-epochs", "1", "--retrain-epochs", "0",
                          "--storage", f"sqlite:///{tmp_path / 'c.db'}", "--study", "x", "--checkpoint-dir",
                          str(tmp_path / "ck"), "--no-progress"])
    assert rc == 2 and "Traceback" not in err
    assert f"supernet checkpoint {ckpt} cannot be resumed: it lacks settings, epoch" in err


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    """SIGKILL mid-write leaves the old file whole and a temporary file beside it; the next write of
    that file removes it. A live writer's temporary file, and another host's, are left alone."""
    import socket
    import subprocess

    from sparsenas.atomic import write_atomic

    target = tmp_path / "supernet.pt"
    write_atomic(target, lambda f: f.write(b"old"))
    host = socket.gethostname().replace(".", "_")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / f".supernet.pt.{host}-{int(dead.stdout)}.abc123.tmp"  # what a killed writer leaves
    left.write_bytes(b"half")
    live = tmp_path / f".supernet.pt.{host}-{os.getpid()}.def456.tmp"
    live.write_bytes(b"writing")
    elsewhere = tmp_path / f".supernet.pt.otherhost-{int(dead.stdout)}.ghi789.tmp"
    elsewhere.write_bytes(b"on a shared folder")
    other_file = tmp_path / f".study.db.{host}-{int(dead.stdout)}.jkl000.tmp"
    other_file.write_bytes(b"not this file's")
    write_atomic(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"
    assert not left.exists() and live.exists() and elsewhere.exists() and other_file.exists()
