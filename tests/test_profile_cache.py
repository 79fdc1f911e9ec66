"""The per-user profile cache: what a profile lacks is timed once on this machine, kept, and predicted."""
from __future__ import annotations

import json
import logging

import pytest

import sparsenas
from sparsenas.hwprofiles import default_profile_path
from sparsenas.hwprofiles import cache as profile_cache
from sparsenas.hwprofiles.cache import CACHE_ENV, ProfileCache, cache_dir, cache_path
from sparsenas.search_spaces import get_space
from sparsenas.task import Task
from sparsenas.hwprofiles.table import LatencyTable

from _small_study import run_cli
from test_data import write_cifar

# every sparse_mbv2 network on 8x8 grey images with 4 classes runs these two
STEM, HEAD = "conv2d:c1-16:k3:s1:g1:in8x8:sp0:b1", "linear:c320-4:sp0:b1"


def test_cache_dir_follows_the_override_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if cache_dir().parent == tmp_path / "xdg":  # Linux and the BSDs; macOS and Windows have their own place
        assert cache_dir() == tmp_path / "xdg" / "sparsenas"
    path = cache_path("onnxruntime", "1.32.0")
    assert path.parent.name == "onnxruntime-1.32.0" and path.suffix == ".json"


def _search(hw, url, study, trials=2):
    return sparsenas.search(space="sparse_mbv2", strategy="random", dataset="synthetic", trials=trials, epochs=1,
                            limit=16, batch_size=16, storage=url, study=study, hw=str(hw), runtime="onnxruntime",
                            hw_anchor=False, progress=False)


@pytest.mark.slow
def test_missing_kernels_are_timed_once_cached_and_predicted(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    shipped = json.loads(default_profile_path("onnxruntime").read_text())
    for k in (STEM, HEAD):
        del shipped["entries"][k]
    hw = tmp_path / "cut.json"
    hw.write_text(json.dumps(shipped))
    url = f"sqlite:///{tmp_path / 'nas.db'}"

    with caplog.at_level(logging.INFO, logger="sparsenas"):
        study = _search(hw, url, "first")
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(trials) == 2
    name = shipped["name"]
    assert all(t.user_attrs["latency_source"] == f"table:{name}" for t in trials)  # predicted, not measured
    assert all(t.user_attrs["hw_cache_kernels"] == 2 for t in trials)
    cache = ProfileCache(LatencyTable.load(hw))
    assert set(json.loads(cache.path.read_text())["entries"]) == {STEM, HEAD}  # just those, timed here
    added = [r.getMessage() for r in caplog.records if "hardware-profile cache: timed" in r.getMessage()]
    assert len(added) == 1 and STEM in added[0] and HEAD in added[0] and " s (" in added[0], added
    assert json.loads(hw.read_text())["entries"].keys() == shipped["entries"].keys()  # the profile itself untouched

    caplog.clear()
    before = cache.path.read_text()
    with caplog.at_level(logging.INFO, logger="sparsenas"):
        again = _search(hw, url, "second", trials=1)
    assert all(t.user_attrs["latency_source"] == f"table:{name}" for t in again.trials)
    assert not [r for r in caplog.records if "hardware-profile cache" in r.getMessage()]
    assert cache.path.read_text() == before  # nothing added, nothing rewritten


def _cut_profile(tmp_path, *keys: str):
    data = json.loads(default_profile_path("onnxruntime").read_text())
    for k in keys:
        del data["entries"][k]
    path = tmp_path / "cut.json"
    path.write_text(json.dumps(data))
    return path


CIFAR_STEM = "conv2d:c3-16:k3:s1:g1:in32x32:sp0:b1"


def test_check_says_whether_a_profile_covers_a_search_and_what_it_would_add(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    write_cifar(tmp_path / "data", n=4)
    cifar = ["profile", "--check", "--space", "sparse_mbv2", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
             "--json"]
    rc, out, err = run_cli(cifar)  # the shipped ONNX Runtime profile covers CIFAR-shaped input
    report = json.loads(out.strip().splitlines()[-1])
    assert rc == 0 and report["covered"], err
    (r,) = report["reports"]
    assert r["input_shape"] == [3, 32, 32] and r["runtime"] == "onnxruntime" and r["calibration"] == "profile"
    assert r["missing"] == 0 and r["kernels"] > 2000

    rc, out, err = run_cli(cifar + ["--profile", str(_cut_profile(tmp_path, CIFAR_STEM))])
    (r,) = json.loads(out.strip().splitlines()[-1])["reports"]
    assert rc == 1 and not r["covered"] and r["missing_keys"] == [CIFAR_STEM] and r["missing"] == 1
    assert "does not cover sparse_mbv2 on cifar10 3x32x32" in out and CIFAR_STEM in out and r["cache"] in out
    assert not (tmp_path / "cache").exists()  # a check times nothing and writes nothing

    rc, _, err = run_cli(["profile", "--check", "--out", str(tmp_path / "p.json")])
    assert rc == 2 and "--check" in err and "Traceback" not in err


@pytest.mark.slow
def test_cifar_shaped_search_is_predicted_from_the_shipped_profile(monkeypatch, tmp_path):
    """3-channel 32x32 input, the default runtime and profile: every trial predicted, nothing to add."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    write_cifar(tmp_path / "data", n=8)
    study = sparsenas.search(space="sparse_mbv2", strategy="random", dataset="cifar10", data_dir=str(tmp_path / "data"),
                             trials=3, epochs=1, batch_size=16, storage=f"sqlite:///{tmp_path / 'c.db'}",
                             hw_anchor=False, progress=False)
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(trials) == 3 and study.user_attrs["task"]["input_shape"] == [3, 32, 32]
    assert all(t.user_attrs["latency_source"] == "table:cpu-x86-2core-onnxruntime" for t in trials)
    assert not any("hw_cache" in t.user_attrs for t in trials) and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_an_input_without_calibration_is_calibrated_once_and_kept_per_profile(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(profile_cache, "CALIBRATION_NETWORKS", 12)  # few and short: this test is about the flow
    monkeypatch.setattr(profile_cache, "CALIBRATION_REPEATS", 20)
    data = json.loads(default_profile_path("onnxruntime").read_text())
    del data["calibrations"]["sparse_mbv2@1x8x8"]
    del data["entries"][STEM]
    hw = tmp_path / "nocal.json"
    hw.write_text(json.dumps(data))
    space, task = get_space("sparse_mbv2"), Task("synthetic", (1, 8, 8), 4)

    cache = ProfileCache(LatencyTable.load(hw))
    assert cache.coverage(space, task).calibration is None
    ext = cache.cover(space, task)
    assert ext.calibrated and ext.kernels == [STEM]
    stored = json.loads(cache.path.read_text())
    assert list(stored["calibrations"]) == [f"{data['name']}@{data['created']}::sparse_mbv2@1x8x8"]
    assert len(stored["calibrations"][list(stored["calibrations"])[0]]["networks"]) == 12

    again = ProfileCache(LatencyTable.load(hw))  # a new search on this machine: found, nothing timed
    cov = again.coverage(space, task)
    assert cov.covered and cov.calibration == "cache" and cov.from_cache == 1
    assert again.cover(space, task).empty
    layers = space.layers(space.sample(__import__("random").Random(0), task), task)
    assert again.table.predict(layers, space.name, task.input_shape).calibration == "sparse_mbv2@1x8x8"

    data["created"] = "another profile"  # a calibration fits its profile's kernel timings: not shared
    hw.write_text(json.dumps(data))
    assert ProfileCache(LatencyTable.load(hw)).coverage(space, task).calibration is None


def test_a_layer_snaps_to_the_nearest_level_it_was_profiled_at():
    """g2g_mlp's free densities put levels (0.675) next to sparse_mbv2's (0.7) in one profile."""
    from sparsenas.ops.spec import LayerSpec
    from test_hwprofiles import hand_profile

    at = lambda sp: LayerSpec("conv2d", 16, 32, 1, 1, 1, (4, 4), sp)  # noqa: E731
    table = LatencyTable(hand_profile({at(0.7): {"dense": 1.0}}, levels=(0.0, 0.675, 0.7)))
    assert table.snap(at(0.68)).sparsity == 0.7 and table.snap(at(0.675)).sparsity == 0.7
    assert table.missing([at(0.6875)]) == [] and table.snap(at(0.6)).sparsity == 0.6  # beyond tolerance: as traced


def test_dass_latency_term_times_the_kernels_the_profile_lacks_in_its_runtime(monkeypatch, tmp_path, caplog):
    """The DASS supernet's own shapes (sparse_darts' stride-2 reduction ops) are not in the shipped
    profile: they are timed once in the profile's runtime through the cache, in one go, like a
    trial's kernels, never in torch eager beside ONNX Runtime figures."""
    from sparsenas.evaluators.latency import TableLatency
    from sparsenas.strategies import dass
    from sparsenas.supernets.mixed import build_mixed_supernet

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))

    def no_torch_timing(spec):
        raise AssertionError(f"{spec.key()} timed in torch eager")

    monkeypatch.setattr(dass, "measured_op_latency", no_torch_timing)
    space, task = get_space("sparse_darts"), Task("digits", (1, 16, 16), 10)
    latency = TableLatency(runtime="onnxruntime", anchor=False)
    net = build_mixed_supernet(space, task)
    specs: list = []
    net.candidate_latency(lambda s: specs.append(s) or 0.0)
    missing = latency.table.missing(specs)
    assert missing, "the supernet runs kernels the shipped profile lacks"
    op_latency = dass.ProfiledOpLatency(latency.table, latency.cache, space, task)
    with caplog.at_level(logging.INFO, logger="sparsenas"):
        table = net.candidate_latency(op_latency)
    added = [r.getMessage() for r in caplog.records if "hardware-profile cache: timed" in r.getMessage()]
    assert len(added) == 1 and all(k in added[0] for k in missing), added
    assert set(missing) <= set(json.loads(latency.cache.path.read_text())["entries"])
    assert all(float(ms.max()) > 0 for _, _, ms in table)  # ("none" and "skip" run no kernel)
    # the term's figure for a kernel is the profile's fastest implementation of it
    spec = next(s for s in specs if latency.table.snap(s).key() == missing[0])
    assert op_latency(spec) == min(latency.table.timings(spec).values())
