"""Malformed files fed to every loader: only the documented error (a SparseNASError) comes out, and
nothing in them is executed. Property-based (hypothesis); >= 500 examples across the loaders."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsenas.data import load_dataset
from sparsenas.data.mnist import _IMAGES, _LABELS, read_idx
from sparsenas.errors import DatasetError, SparseNASError
from sparsenas.export import read_arch
from sparsenas.hwprofiles import LatencyTable
from sparsenas.search_spaces import get_space
from sparsenas.task import Task

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                derandomize=True)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                      max_size=4), max_leaves=12)


def _count(check, seen: list, n: int) -> None:
    """Run a @given test and make sure it really saw ``n`` examples."""
    check()
    assert len(seen) >= n


# ------------------------------------------------------------------ architecture JSON
ARCH = {"space": "g2g_mlp", "version": 1, "choices": {"depth": 1, "h1_width": 64, "ensembles": 1, "dst": "off"},
        "task": {"dataset": "synthetic", "input_shape": [1, 8, 8], "num_classes": 4}}


def _arch_docs():
    mutated = st.builds(lambda key, value: _set(ARCH, key, value),
                        st.sampled_from(["space", "version", "choices", "task", "choices.depth", "choices.h1_width",
                                         "choices.dst", "task.input_shape", "task.num_classes"]), json_values)
    deep = st.integers(1_000, 200_000).map(lambda n: b"[" * n + b"]" * n)
    return (st.binary(max_size=64) | deep | json_values.map(lambda v: json.dumps(v).encode())
            | mutated.map(lambda d: json.dumps(d).encode()))


def _set(doc: dict, dotted: str, value) -> dict:
    doc = json.loads(json.dumps(doc))
    *path, last = dotted.split(".")
    target = doc
    for p in path:
        target = target[p]
    target[last] = value
    return doc


def test_malformed_architecture_files(tmp_path):
    seen: list = []

    @settings(max_examples=150, **SETTINGS)
    @given(raw=_arch_docs())
    def check(raw):
        seen.append(1)
        path = tmp_path / "arch.json"
        path.write_bytes(raw)
        try:
            arch, task, _ = read_arch(path)
            get_space(arch.space).validate(arch, task or Task("synthetic", (1, 8, 8), 4))
        except SparseNASError:
            pass

    _count(check, seen, 150)


# ------------------------------------------------------------------ hardware profiles
def _profile_docs():
    shipped = json.loads(Path(LatencyTable.load(runtime="torch").path).read_text())
    cal_key, cal = next(iter(shipped["calibrations"].items()))
    small = {**shipped, "entries": dict(list(shipped["entries"].items())[:3]), "profiled": [],
             "calibrations": {cal_key: {k: v for k, v in cal.items() if k != "networks"}}}
    keys = ["schema", "name", "machine", "timing", "timing.metric", "entries", "calibrations", "sparsity_levels"]
    entry = next(iter(small["entries"]))
    keys += [f"entries.{entry}", f"entries.{entry}.impls", f"entries.{entry}.spec"]
    mutated = st.builds(lambda k, v: _set(small, k, v) if "." not in k or k.count(".") < 2 else _set_entry(small, k, v),
                        st.sampled_from(keys), json_values)
    deep = st.integers(1_000, 200_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n)
    return st.binary(max_size=64) | deep | json_values.map(lambda v: json.dumps(v).encode()) | mutated.map(
        lambda d: json.dumps(d).encode())


def _set_entry(doc: dict, dotted: str, value) -> dict:
    _, rest = dotted.split(".", 1)
    key, field = rest.rsplit(".", 1)
    doc = json.loads(json.dumps(doc))
    doc["entries"][key][field] = value
    return doc


def test_malformed_hardware_profiles(tmp_path):
    task = Task("digits", (1, 8, 8), 10)
    space = get_space("sparse_mbv2")
    layers = space.layers(space.default_arch(task), task)
    seen: list = []

    @settings(max_examples=120, **SETTINGS)
    @given(raw=_profile_docs())
    def check(raw):
        seen.append(1)
        path = tmp_path / "profile.json"
        path.write_bytes(raw)
        try:
            table = LatencyTable.load(path)
            table.missing(layers)  # a loaded profile is also usable for look-ups
        except SparseNASError:
            pass

    _count(check, seen, 120)


BAD_NUMBERS = st.sampled_from([float("nan"), float("inf"), -float("inf"), -1.0, -1e-9, 0.0, -29.95])


def test_profiles_with_non_finite_or_negative_numbers_are_refused_naming_the_entry(tmp_path):
    """A time that is NaN, infinite, zero or negative, or a calibration coefficient that is NaN, infinite
    or negative, is a ProfileError naming the first bad entry (never a latency of -29.95 ms)."""
    from sparsenas.hwprofiles import ProfileError

    shipped = json.loads(Path(LatencyTable.load(runtime="torch").path).read_text())
    cal_key, cal = next(iter(shipped["calibrations"].items()))
    small = {**shipped, "entries": dict(list(shipped["entries"].items())[:6]), "profiled": [],
             "calibrations": {cal_key: {k: v for k, v in cal.items() if k != "networks"}}}
    LatencyTable(small)  # the unmutated profile loads
    keys = list(small["entries"])
    seen: list = []

    @settings(max_examples=80, **SETTINGS)
    @given(where=st.sampled_from(["time", "coef"]), i=st.integers(0, 100), field=st.sampled_from(
        ["wall_ms", "cpu_ms", "cpu_p10_ms", "wall_p10_ms", "repeats", "cpu_iqr_ms"]), bad=BAD_NUMBERS)
    def check(where, i, field, bad):
        doc = json.loads(json.dumps(small))
        if where == "time":
            if "iqr" in field and bad in (0.0,):  # a spread of 0 is a fine spread
                bad = -1.0
            key = keys[i % len(keys)]
            impl = next(iter(doc["entries"][key]["impls"]))
            doc["entries"][key]["impls"][impl][field] = bad
            named = f"entry '{key}' impl '{impl}' has {field}="
        else:
            coef = doc["calibrations"][cal_key]["coef"]
            if bad == 0.0:  # one zero coefficient is fine; all of them is not
                coef[:] = [0.0] * len(coef)
                named = "only zero coefficients"
            else:
                j = [n for n, c in enumerate(coef) if c > 0][i % sum(c > 0 for c in coef)]
                coef[j] = bad
                named = f"coefficient {bad!r} for '{doc['calibrations'][cal_key]['features'][j]}'"
        seen.append(1)
        path = tmp_path / "profile.json"
        path.write_text(json.dumps(doc))  # NaN and Infinity as Python's json writes them
        with pytest.raises(ProfileError) as e:
            LatencyTable.load(path)
        assert named in str(e.value) and str(path) in str(e.value)

    _count(check, seen, 80)


# ------------------------------------------------------------------ journal files
@pytest.fixture(scope="module")
def journal_bytes(tmp_path_factory):
    """A real 3-trial Optuna journal (no training: a constant objective)."""
    import optuna

    from sparsenas.tracking import open_storage

    path = tmp_path_factory.mktemp("journal") / "j.log"
    study = optuna.create_study(storage=open_storage(f"journal:///{path}"), study_name="s")
    study.optimize(lambda t: t.suggest_categorical("c", [1, 2, 3]), n_trials=3)
    return path.read_bytes()


def test_truncated_and_torn_journals_open_keep_every_complete_record_and_take_appends(tmp_path, journal_bytes):
    import optuna

    from sparsenas.tracking import open_storage

    seen: list = []

    @settings(max_examples=60, **SETTINGS)
    @given(cut=st.integers(0, len(journal_bytes)), tail=st.sampled_from([b"", b"{", b'{"op_code": 4\n', b"\x00\xff",
                                                                         b"not json\n"]))
    def check(cut, tail):
        seen.append(1)
        for old in tmp_path.glob("j.log*"):
            old.unlink()
        path = tmp_path / "j.log"
        raw = journal_bytes[:cut] + tail
        path.write_bytes(raw)
        base = journal_bytes[:cut]
        complete = base[:base.rfind(b"\n") + 1]  # the whole records before the cut (the tail never is one)
        try:
            storage = open_storage(f"journal:///{path}")
        except SparseNASError:  # a record damaged before the last line cannot occur here
            raise AssertionError(f"cut {cut} tail {tail!r}: a torn last record must not make the journal unreadable")
        assert path.read_bytes() == complete  # every complete record kept, the torn one set aside
        study = optuna.create_study(storage=storage, study_name="s", load_if_exists=True)
        study.optimize(lambda t: t.suggest_categorical("c", [1, 2, 3]), n_trials=1)  # appending works
        again = optuna.load_study(study_name="s", storage=open_storage(f"journal:///{path}", must_exist=True))
        assert again.trials[-1].state.name == "COMPLETE"

    _count(check, seen, 60)


# ------------------------------------------------------------------ CIFAR pickles
class _RunsCode:
    """Unpickling it would call os.system (``touch SENTINEL``)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _evil_global(module: str, name: str, arg: str) -> bytes:
    """A protocol-0 pickle that imports ``module.name`` and calls it with ``arg``."""
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    from test_data import write_cifar

    return write_cifar(tmp_path_factory.mktemp("cifar"), n=8)


def test_cifar_pickle_that_would_run_code_is_refused_unexecuted(cifar_dir, tmp_path):
    sentinel = tmp_path / "executed"
    target = cifar_dir / "data_batch_1"
    original = target.read_bytes()
    try:
        for payload in (pickle.dumps({b"data": _RunsCode(f"touch {sentinel}"), b"labels": []}, protocol=p)
                        for p in (0, 2, 4, 5)):
            target.write_bytes(payload)
            with pytest.raises(DatasetError, match="posix.system|os.system|refused, nothing was executed"):
                load_dataset("cifar10", data_dir=cifar_dir)
            assert not sentinel.exists()
    finally:
        target.write_bytes(original)


def _cifar_payloads(sentinel: Path):
    valid = pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}, protocol=2)
    flips = st.builds(lambda i, b: valid[:i % len(valid)] + bytes([b]) + valid[i % len(valid) + 1:],
                      st.integers(0, 10_000), st.integers(0, 255))
    truncated = st.integers(0, len(valid)).map(lambda i: valid[:i])
    evil = st.builds(_evil_global, st.sampled_from(["os", "posix", "subprocess", "builtins", "__builtin__", "numpy",
                                                    "shutil", "pickle", "importlib"]),
                     st.sampled_from(["system", "Popen", "eval", "exec", "getattr", "__import__", "load", "rmtree",
                                      "loads", "import_module"]), st.just(f"touch {sentinel}"))
    objects = json_values.map(lambda v: pickle.dumps(v, protocol=2))
    return st.binary(max_size=64) | flips | truncated | evil | objects


def test_malformed_cifar_pickles(cifar_dir, tmp_path):
    sentinel = tmp_path / "executed"
    target = cifar_dir / "data_batch_1"
    original = target.read_bytes()

    seen: list = []

    @settings(max_examples=150, **SETTINGS)
    @given(raw=_cifar_payloads(sentinel))
    def check(raw):
        seen.append(1)
        target.write_bytes(raw)
        try:
            load_dataset("cifar10", data_dir=cifar_dir)
        except DatasetError:
            pass
        assert not sentinel.exists()

    try:
        _count(check, seen, 150)
    finally:
        target.write_bytes(original)


# ------------------------------------------------------------------ IDX files (MNIST, Fashion-MNIST)
def _idx_payloads():
    header = st.builds(lambda magic, dims: magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims),
                       st.sampled_from([_IMAGES, _LABELS, 0x0803, 0x0903, 0x08FF, 0]),
                       st.lists(st.integers(0, 2 ** 32 - 1) | st.integers(0, 6), max_size=4))
    return st.builds(lambda h, body: h + body, header, st.binary(max_size=80)) | st.binary(max_size=64)


def test_malformed_idx_files(tmp_path):
    seen: list = []

    @settings(max_examples=120, **SETTINGS)
    @given(raw=_idx_payloads(), gz=st.booleans(), images=st.booleans())
    def check(raw, gz, images):
        seen.append(1)
        import gzip

        path = tmp_path / ("f.gz" if gz else "f")
        path.write_bytes(gzip.compress(raw) if gz and raw[:1] != b"x" else raw)
        try:
            read_idx("mnist", path, _IMAGES if images else _LABELS)
        except DatasetError:
            pass

    _count(check, seen, 120)
