"""The hardware-profile file: its schema, reading (with checks) and atomic writing.

This is the one place that reads and writes profiles. A profile is JSON::

    {"schema": "sparsenas-hwprofile/1", "name": ..., "created": ..., "updated": ...,
     "runtime": {"name": "onnxruntime", "version": "1.32.0"},
     "machine": {"cpu_model", "cores", "threads", "torch", "python", "platform", "load_avg", "runtime"},
     "timing": {"metric": "cpu_p10_ms", "statistic": "p10", "threads": 1, "batch": 1, ...},
     "sparsity_levels": [0.0, 0.5, ...],
     "entries": {LayerSpec.key(): {"spec": {...}, "impls": {impl: {"wall_ms", "cpu_ms",
                                                 "wall_iqr_ms", "cpu_iqr_ms", "wall_p10_ms", "cpu_p10_ms", "repeats"}}}},
     "calibrations": {"<space>@<C>x<H>x<W>": {"features": [...], "coef": [...], "networks": [...], ...}},
     "profiled": [{"space", "input_shape", "kernels", "seconds", "date"}]}

A profile belongs to one machine and one inference runtime (``runtime``; profiles written before
runtimes existed have none and are ``torch``). ``impl`` is one the runtime has for the layer
(:meth:`sparsenas.runtimes.Runtime.impls`): ``"native"`` (the runtime's own dense conv/gemm with the
masked weight), ``"grouped"`` (a block-diagonal layer as a grouped conv), or for ``torch`` a name of
:data:`sparsenas.ops.KERNELS` (sparse linear and 1x1 convs, as ``to_inference`` builds them). Keys use the *nominal* sparsity of the grid the profile was measured
at (``sparsity_levels``); a traced layer is snapped to the nearest level when looked up.

``timing.metric`` is the field predictions use. New profiles use ``cpu_p10_ms``, the 10th percentile
of per-call thread CPU time (why: :mod:`sparsenas.timing`); profiles written with the median
(``cpu_ms``) still load and predict in it.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import SparseNASError

__all__ = ["SCHEMA", "SHIPPED", "profile_runtime", "FEATURES", "TIMING_FIELDS", "METRICS", "DEFAULT_METRIC", "DEFAULT_PROFILE", "ProfileError",
           "machine_info", "new_profile",
           "read_profile", "write_json_atomic", "default_profile_path", "calibration_key", "check_profile"]

SCHEMA = "sparsenas-hwprofile/1"
TIMING_FIELDS = ("wall_ms", "cpu_ms", "wall_iqr_ms", "cpu_iqr_ms", "repeats")  # every profile has these
METRICS = {"cpu_p10_ms": "p10", "wall_p10_ms": "p10", "cpu_ms": "median", "wall_ms": "median"}
DEFAULT_METRIC = "cpu_p10_ms"
DEFAULT_PROFILE = "cpu-x86-2core.json"  # shipped inside this package (torch; named before runtimes existed)
SHIPPED = {"torch": DEFAULT_PROFILE, "onnxruntime": "cpu-x86-2core-onnxruntime.json", "mnn": "cpu-x86-2core-mnn.json"}  # runtime -> shipped file
# Calibration inputs (see table.py): kernel sum, layer counts (all, and per implementation: native,
# then the names of sparsenas.ops.KERNELS), output activations in millions, depthwise (grouped) layers
# and their output activations (each carries BN + activation + often a residual add that no
# profiled kernel covers), constant.
FEATURES = ("sum_ms", "layers", "layers_native", "layers_dense", "layers_torch_csr", "layers_scipy_csr",
            "act_melems", "dw_layers", "dw_act_melems", "one", "layers_grouped", "sum_pw_ms", "sum_dw_ms",
            "sum_other_ms", "pw_mmacs", "dw_mmacs", "sum_grouped_ms", "gather_melems", "sum_sparse_ms",
            "layers_sparse1", "layers_sparse4")


class ProfileError(SparseNASError):
    """A profile file is missing, corrupt, foreign or lacks what was asked of it."""


def default_profile_path(runtime: str | None = None) -> Path:
    """The profile shipped with the package for ``runtime`` (None: the default runtime), used when no
    ``--hw`` file is given."""
    from ..runtimes import DEFAULT_RUNTIME

    runtime = runtime or DEFAULT_RUNTIME
    name = SHIPPED.get(runtime)
    if name is None:
        raise ProfileError(f"sparsenas ships no hardware profile for runtime '{runtime}' (it ships: "
                           f"{', '.join(SHIPPED)}); make one on this machine with "
                           f"`nas profile --runtime {runtime} --space SPACE --out my-{runtime}.json` and pass --hw")
    return Path(str(resources.files(__package__).joinpath(name)))


def profile_runtime(data: dict[str, Any]) -> str:
    """The runtime a profile's timings belong to (``torch`` for profiles older than runtimes)."""
    from ..runtimes import PRE_RUNTIME

    rt = data.get("runtime")
    return rt.get("name", PRE_RUNTIME) if isinstance(rt, dict) else PRE_RUNTIME


def calibration_key(space: str, input_shape: tuple[int, ...]) -> str:
    """``sparse_mbv2@1x16x16``: calibrations are per space and input shape (no batch)."""
    return f"{space}@{'x'.join(str(int(v)) for v in input_shape)}"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):  # no /proc on macOS/Windows
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict[str, Any]:
    """What the timings belong to: CPU model, core count, threads used, torch/python versions."""
    import torch

    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu_model": _cpu_model(), "cores": os.cpu_count(), "threads": threads,
            "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "machine": platform.machine(), "load_avg": load,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_profile(name: str, threads: int, timing: dict[str, Any], runtime: dict[str, str],
                metric: str = DEFAULT_METRIC) -> dict[str, Any]:
    """An empty profile of ``runtime`` (its :meth:`~sparsenas.runtimes.Runtime.info`)."""
    stamp = now()
    return {"schema": SCHEMA, "name": name, "created": stamp, "updated": stamp, "runtime": runtime,
            "machine": {**machine_info(threads), "runtime": runtime},
            "timing": {"metric": metric, "statistic": METRICS[metric], "threads": threads, "batch": 1,
                       **timing},
            "sparsity_levels": [], "entries": {}, "calibrations": {}, "profiled": []}


def _bad(path: str | Path, problem: str) -> ProfileError:
    return ProfileError(f"hardware profile '{path}' {problem}. A profile is the JSON file written by `nas profile` "
                        f"(schema {SCHEMA}); make one with `nas profile --space SPACE --out FILE`, or leave out --hw "
                        "to use the profile shipped with sparsenas")


def check_profile(data: Any, path: str | Path = "<profile>") -> dict[str, Any]:
    """Raise :class:`ProfileError` unless ``data`` has the shape of a version-1 profile."""
    if not isinstance(data, dict):
        raise _bad(path, f"is not a JSON object (it holds a {type(data).__name__})")
    schema = data.get("schema")
    if schema != SCHEMA:
        what = "has no 'schema' field" if schema is None else f"has schema {schema!r}, not {SCHEMA!r}"
        raise _bad(path, f"is not a sparsenas hardware profile: it {what}")
    for field, kind in (("name", str), ("machine", dict), ("timing", dict), ("entries", dict),
                        ("calibrations", dict), ("sparsity_levels", list)):
        if not isinstance(data.get(field), kind):
            raise _bad(path, f"is corrupt: field '{field}' is missing or not a {kind.__name__}")
    rt = data.get("runtime")
    if rt is not None and not (isinstance(rt, dict) and isinstance(rt.get("name"), str)):
        raise _bad(path, "is corrupt: field 'runtime' must be an object with a 'name' string")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data["sparsity_levels"]):
        raise _bad(path, "is corrupt: sparsity_levels must be a list of numbers")
    metric = data["timing"].get("metric")
    if not isinstance(metric, str) or metric not in METRICS:
        raise _bad(path, f"is corrupt: timing.metric is {metric!r}; allowed: {', '.join(METRICS)}")
    fields = (*TIMING_FIELDS, metric)
    runtime = _runtime_of(data, path)
    for key, entry in data["entries"].items():
        impls = entry.get("impls") if isinstance(entry, dict) else None
        if not isinstance(impls, dict) or not impls or not isinstance(entry.get("spec"), dict):
            raise _bad(path, f"is corrupt: entry '{key}' needs a 'spec' object and a non-empty 'impls' object")
        for impl, t in impls.items():
            if not isinstance(t, dict) or not all(_number(t.get(f)) for f in fields):
                raise _bad(path, f"is corrupt: entry '{key}' impl '{impl}' needs numbers {', '.join(dict.fromkeys(fields))}")
            if problem := _timing_problem(t):
                raise _bad(path, f"is corrupt: entry '{key}' impl '{impl}' has {problem}")
        _check_impls(runtime, key, entry, path)
    for key, cal in data["calibrations"].items():
        if not (isinstance(cal, dict) and isinstance(cal.get("features"), list) and isinstance(cal.get("coef"), list)
                and len(cal["features"]) == len(cal["coef"])
                and all(_number(c) for c in cal["coef"]) and set(cal["features"]) <= set(FEATURES)):
            raise _bad(path, f"is corrupt: calibration '{key}' needs equally long 'features' "
                       f"(from {', '.join(FEATURES)}) and numeric 'coef' lists")
        # every feature is >= 0 (times, counts, sizes), so finite coefficients >= 0, not all 0, can
        # predict neither a negative nor a NaN latency
        bad = [(f, c) for f, c in zip(cal["features"], cal["coef"]) if not math.isfinite(c) or c < 0]
        if bad or not any(c > 0 for c in cal["coef"]):
            what = (f"coefficient {bad[0][1]!r} for '{bad[0][0]}'" if bad else "only zero coefficients")
            raise _bad(path, f"is corrupt: calibration '{key}' has {what}; a calibration's coefficients are finite "
                       "and >= 0 (not all 0), or it could predict a negative, zero or NaN latency")
    return data


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _timing_problem(t: dict[str, Any]) -> str | None:
    """What is wrong with one implementation's timings: times are finite and > 0 (a spread >= 0),
    repeats at least 1. JSON readers accept NaN and Infinity, so this is checked here."""
    for f, v in t.items():
        if not f.endswith("_ms") and f != "repeats":
            continue
        if not _number(v) or not math.isfinite(v):
            return f"{f}={v!r} (not a finite number)"
        low_ok = v >= 0 if "iqr" in f else v >= 1 if f == "repeats" else v > 0
        if not low_ok:
            return f"{f}={v!r} (" + ("a spread must be >= 0" if "iqr" in f else "repeats must be >= 1"
                                     if f == "repeats" else "a time must be > 0") + ")"
    return None


def _runtime_of(data: dict[str, Any], path: str | Path) -> Any:
    """The registered runtime a profile times (its ``runtime.name``; ``torch`` for older profiles)."""
    from ..runtimes import RUNTIMES, get_runtime

    name = profile_runtime(data)
    if name not in RUNTIMES.names():  # never RUNTIMES.get(name): a "module:Class" name would import it
        raise _bad(path, f"times runtime '{name}', which is not a runtime here (known: {', '.join(RUNTIMES.names())})")
    return get_runtime(name, check=False)


def _check_impls(runtime: Any, key: str, entry: dict[str, Any], path: str | Path) -> None:
    """An entry's spec is a layer, and it times at least one implementation its runtime has for it."""
    from ..ops.spec import LayerSpec

    try:
        spec = LayerSpec(**entry["spec"])
    except (SparseNASError, TypeError, ValueError) as e:
        raise _bad(path, f"is corrupt: entry '{key}' has a spec that is not a layer ({e})") from None
    has = runtime.impls(spec)
    if not set(entry["impls"]) & set(has):
        raise _bad(path, f"is corrupt: entry '{key}' times {', '.join(entry['impls'])}, none of which runtime "
                   f"'{runtime.name}' has for this layer (it has: {', '.join(has)})")


def read_profile(path: str | Path) -> dict[str, Any]:
    """Load and check a profile file; every problem is a :class:`ProfileError` naming the file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ProfileError(f"hardware profile '{path}' does not exist (or is not a file). Make one with "
                           f"`nas profile --space SPACE --out {path}`, or leave out --hw to use the shipped profile")
    try:
        data = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(path, f"is not valid JSON ({e})") from None
    except RecursionError:
        raise _bad(path, "is not a profile: its JSON is nested too deeply") from None
    return check_profile(data, path)


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> None:
    """Write through a temporary file in the same folder and rename: a reader never sees half a file."""
    from ..atomic import write_atomic

    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(p, lambda f: f.write((json.dumps(data, indent=1, sort_keys=False) + "\n").encode()))
