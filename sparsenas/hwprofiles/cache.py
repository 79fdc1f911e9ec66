"""The per-user profile cache: kernels a profile lacks, timed once on this machine, kept for next time.

A search whose profile does not cover its space and input (a 3-channel input on a profile made
for 1-channel images, a new input size, 100 classes instead of 10) times just the missing
kernels here, the profile's way (:func:`sparsenas.hwprofiles.profiler.profile_space`: its runtime,
1 thread, its warm-up/repeats/rounds), calibrates the space at that input when the profile has no
calibration for it, and merges the result into the table it predicts with. Nothing is measured
again on the next run: the additions live in a JSON file under the platform's cache folder,

    $SPARSENAS_CACHE_DIR, else $XDG_CACHE_HOME/sparsenas, else ~/.cache/sparsenas
    (~/Library/Caches/sparsenas on macOS, %LOCALAPPDATA%\\sparsenas\\cache on Windows)
      hwprofiles/<runtime>-<runtime version>/<machine>.json

keyed by machine (CPU model, cores), runtime and runtime version, since a timing means nothing on
another machine or another version of the runtime. The file has the shape of a profile
(:mod:`.profile`): ``entries`` are plain kernel timings, valid for any base profile of that
runtime; a calibration is fitted on the base profile's kernel timings plus the cached ones, so
``calibrations`` are kept per base profile (key ``<name>@<created>::<space>@<input>``).

Kernels a profile already has are never re-timed or overridden by the cache.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..log import logger
from ..ops.spec import LayerSpec
from ..runtimes.base import RuntimeNotInstalled
from ..task import Task
from .profile import ProfileError, calibration_key, machine_info, new_profile, now, profile_runtime, read_profile, write_json_atomic

__all__ = ["CACHE_ENV", "Coverage", "Extension", "ProfileCache", "cache_dir", "cache_path", "extend_profile", "timer_for"]

CACHE_ENV = "SPARSENAS_CACHE_DIR"

# a calibration fits 16 non-negative coefficients; the shipped profiles use 80 networks x 200 calls
# (36-83 s for sparse_mbv2 at one input on a quiet 2-core VM, minutes under load). A search pays it
# once per machine, so it keeps the shipped profiles' quality.
CALIBRATION_NETWORKS = 80
CALIBRATION_REPEATS = 200


@dataclass
class Extension:
    """What :func:`extend_profile` added to a profile for one space and input."""

    space: str
    input_shape: tuple[int, ...]
    kernels: list[str] = field(default_factory=list)   # keys timed now
    calibrated: bool = False                            # a calibration was fitted now
    seconds: float = 0.0

    @property
    def empty(self) -> bool:
        return not self.kernels and not self.calibrated

    def describe(self) -> str:
        shown = ", ".join(self.kernels[:6]) + (f" (and {len(self.kernels) - 6} more)" if len(self.kernels) > 6 else "")
        what = f"{len(self.kernels)} kernel(s)" + (f": {shown}" if self.kernels else "")
        cal = f" and a calibration for {calibration_key(self.space, self.input_shape)}" if self.calibrated else ""
        return f"timed {what}{cal} in {self.seconds:.2f} s"


def timer_for(data: dict[str, Any]) -> Any:
    """The profiler's kernel timer with the profile's own settings (runtime, threads, warm-up, repeats, rounds)."""
    from .profiler import KernelTimer

    t = data["timing"]
    return KernelTimer(warmup=int(t.get("warmup", 5)), repeats=int(t.get("repeats", 100)),
                       rounds=int(t.get("rounds", 5)), threads=int(t.get("threads", 1)), runtime=profile_runtime(data))


class _Quiet:
    """profile_space's saver, for a profile dict that lives in memory (it is saved by the caller)."""

    def maybe(self) -> None:
        pass

    def now(self) -> None:
        pass


def extend_profile(data: dict[str, Any], space: Any, task: Task, *, specs: list[LayerSpec] | None = None,
                   calibrate: bool = True, calibration_networks: int = CALIBRATION_NETWORKS,
                   calibration_repeats: int = CALIBRATION_REPEATS, saver: Any = None, seed: int = 0) -> Extension:
    """Time the kernels of ``space`` at ``task``'s input that ``data`` (a profile dict) lacks, in its
    runtime and its way, and fit the space's calibration at that input when it has none and
    ``calibrate``; ``data`` is changed in place. Entries already there are not re-timed. With
    ``specs``: time those layers only (at their nominal sparsity), no calibration."""
    from .profiler import profile_space, time_specs

    t0 = time.monotonic()
    if specs is not None:
        todo = sorted({s.key(): s for s in specs if s.key() not in data["entries"]}.values(), key=lambda s: s.key())
        time_specs(data, todo, timer_for(data))
        data["sparsity_levels"] = sorted(set(data["sparsity_levels"]) | {s.sparsity for s in todo if not s.blocks})
        return Extension(space.name, tuple(task.input_shape), [s.key() for s in todo],
                         seconds=round(time.monotonic() - t0, 2))
    before = set(data["entries"])
    records = list(data["profiled"])
    key = calibration_key(space.name, task.input_shape)
    had_cal = key in data["calibrations"]
    profile_space(data, space, task, timer=timer_for(data), saver=saver or _Quiet(),
                  calibration_networks=calibration_networks if calibrate else 0,
                  calibration_repeats=calibration_repeats, seed=seed)
    ext = Extension(space.name, tuple(task.input_shape), sorted(set(data["entries"]) - before),
                    not had_cal and key in data["calibrations"], round(time.monotonic() - t0, 2))
    # profile_space replaces the space's record; an extension keeps the first one and adds its own
    # (which machine timed what matters once a profile holds timings of two)
    added = [{**p, "extended": True, "cpu_model": machine_info(1)["cpu_model"], "calibrated_now": ext.calibrated}
             for p in data["profiled"] if p.get("key") == key][-1:]
    data["profiled"] = records + (added if not ext.empty else [])
    return ext


# ---------------------------------------------------------------------------------------- where it lives
def cache_dir() -> Path:
    """The platform's per-user cache folder for sparsenas (``$SPARSENAS_CACHE_DIR`` overrides it)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "sparsenas"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "sparsenas" / "cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "sparsenas"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "unknown"


def machine_key() -> str:
    """``amd-epyc-2c-1a2b3c``: the CPU model and core count, readable, plus a digest of the exact
    CPU string and platform (two models with one slug stay apart)."""
    info = machine_info(1)
    exact = f"{info['cpu_model']}|{info['cores']}|{info['machine']}"
    return f"{_slug(info['cpu_model'])[:40]}-{info['cores']}c-{hashlib.sha1(exact.encode()).hexdigest()[:6]}"


def cache_path(runtime: str, version: str) -> Path:
    """The cache file of this machine for ``runtime`` at ``version``."""
    return cache_dir() / "hwprofiles" / f"{_slug(runtime)}-{_slug(version)}" / f"{machine_key()}.json"


def base_id(data: dict[str, Any]) -> str:
    """Which profile a cached calibration was fitted with (its name and creation stamp)."""
    return f"{data['name']}@{data.get('created', '?')}"


# ---------------------------------------------------------------------------------------- the cache
@dataclass
class Coverage:
    """Whether a table covers a space at an input (``nas profile --check``)."""

    space: str
    input_shape: tuple[int, ...]
    num_classes: int
    kernels: int                                        # distinct kernels the space can run there
    missing: list[str]                                  # kernel keys neither the profile nor the cache has
    from_cache: int                                     # kernels the cache supplies
    calibration: str | None                             # "profile", "cache" or None (would be fitted)

    @property
    def covered(self) -> bool:
        return not self.missing and self.calibration is not None

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "covered": self.covered, "kernels": self.kernels, "missing": len(self.missing),
                "missing_keys": self.missing, "from_cache": self.from_cache, "calibration": self.calibration}


class ProfileCache:
    """The cache file of this machine and the table's runtime, merged into ``table`` (in memory: the
    profile file itself is never written). :meth:`cover` and :meth:`add_layers` time what the
    table still lacks and save it; with ``fill`` False the cache is only read."""

    def __init__(self, table: Any, fill: bool = True, log: Callable[[str], None] | None = None) -> None:
        self.table, self.fill = table, fill
        self.log = log or logger.info
        self.runtime = table.runtime
        try:
            self.version = self.runtime.version()
        except RuntimeNotInstalled:  # predicting needs no runtime; the cache then holds nothing for it
            self.version, self.fill = "not-installed", False
        self.path = cache_path(self.runtime.name, self.version)
        self.base = base_id(table.data)
        self.supplied: set[str] = set()  # entries and calibrations the cache put into the table
        self.merge()

    # ------------------------------------------------------------------ file
    def read(self) -> dict[str, Any] | None:
        """The cache file, or None when there is none (or it is unreadable: then it is started again)."""
        if not self.path.is_file():
            return None
        try:
            data = read_profile(self.path)
        except ProfileError as e:
            logger.warning(f"hardware-profile cache {self.path} is unreadable and will be started again ({e})")
            return None
        rt = data.get("runtime", {})
        if rt.get("name") != self.runtime.name or rt.get("version") != self.version:
            logger.warning(f"hardware-profile cache {self.path} holds {rt.get('name')} {rt.get('version')}, not "
                           f"{self.runtime.name} {self.version}; it will be started again")
            return None
        return data

    def _fresh(self) -> dict[str, Any]:
        t = self.table.data["timing"]
        return new_profile(f"cache-{machine_key()}", int(t.get("threads", 1)),
                           {k: v for k, v in t.items() if k in ("warmup", "repeats", "rounds")},
                           {"name": self.runtime.name, "version": self.version}, self.table.metric)

    def merge(self) -> None:
        """Put the cache's kernels (those the profile lacks) and its calibrations fitted with this
        profile (for inputs the profile lacks) into the table."""
        cached = self.read()
        if cached is None:
            return
        t = self.table
        for key, entry in cached["entries"].items():
            if key not in t.entries:
                t.entries[key] = entry
                self.supplied.add(key)
        for mine, cal in cached["calibrations"].items():
            base, _, key = mine.rpartition("::")
            if base == self.base and key not in t.data["calibrations"]:
                t.data["calibrations"][key] = cal
                self.supplied.add(key)
        self._levels(cached["sparsity_levels"])

    def _levels(self, more: list[float]) -> None:
        levels = sorted(set(self.table.data["sparsity_levels"]) | set(more))
        self.table.data["sparsity_levels"] = levels
        self.table.levels = [float(v) for v in levels]

    def save(self, ext: Extension) -> None:
        """Add what ``ext`` timed into the table to the cache file (read again first: another
        process may have added to it meanwhile; written atomically)."""
        data = self.read() or self._fresh()
        t = self.table
        for key in ext.kernels:
            data["entries"][key] = t.entries[key]
        key = calibration_key(ext.space, ext.input_shape)
        if ext.calibrated:
            data["calibrations"][f"{self.base}::{key}"] = t.data["calibrations"][key]
        levels = {t.entries[k]["spec"]["sparsity"] for k in ext.kernels if not t.entries[k]["spec"].get("blocks")}
        data["sparsity_levels"] = sorted(set(data["sparsity_levels"]) | levels)
        data["profiled"].append({"key": key, "profile": self.base, "kernels": ext.kernels,
                                 "calibrated": ext.calibrated, "seconds": ext.seconds, "date": now(),
                                 "load_avg": machine_info(1)["load_avg"]})
        data["updated"] = now()
        write_json_atomic(self.path, data)
        self.supplied |= set(ext.kernels) | ({key} if ext.calibrated else set())

    # ------------------------------------------------------------------ coverage
    def coverage(self, space: Any, task: Task) -> Coverage:
        """What the table (profile + cache) lacks for ``space`` at ``task``'s input; times nothing."""
        specs = space.kernel_specs(task)
        t = self.table
        keys = {t.snap(s).key() for s in specs}
        key = calibration_key(space.name, task.input_shape)
        cal = None if key not in t.data["calibrations"] else "cache" if key in self.supplied else "profile"
        return Coverage(space.name, tuple(task.input_shape), task.num_classes, len(keys), t.missing(specs),
                        len(keys & self.supplied), cal)

    def _time(self, space: Any, task: Task, what: str, **kw: Any) -> Extension:
        if not self.fill:
            return Extension(space.name, tuple(task.input_shape))
        self.runtime.require()
        self.log(f"hardware profile '{self.table.name}' lacks {what} for {space.name} at input "
                 f"{'x'.join(map(str, task.input_shape))}: timing them once on this machine in "
                 f"{self.runtime.name} {self.version} (kept in {self.path})")
        import torch

        with torch.random.fork_rng():  # building and timing draw from torch's generator; a search's must not notice
            ext = extend_profile(self.table.data, space, task, **kw)
        self._levels([])
        if not ext.empty:
            self.save(ext)
        self.log(f"hardware-profile cache: {ext.describe()} ({self.path})")
        return ext

    def cover(self, space: Any, task: Task) -> Extension:
        """Before predicting ``space`` at ``task``'s input: without a calibration for it, time every
        kernel the space can run there that the table lacks and fit the calibration (once per machine;
        the shipped profiles need this only for inputs no built-in dataset gives by default). With
        one, nothing is done here: a network's missing kernels are timed when met (:meth:`add_layers`)."""
        if calibration_key(space.name, task.input_shape) in self.table.data["calibrations"]:
            return Extension(space.name, tuple(task.input_shape))
        return self._time(space, task, f"a calibration (and its kernels, {CALIBRATION_NETWORKS} networks measured "
                                       "end to end: a minute or more)", calibration_networks=CALIBRATION_NETWORKS,
                          calibration_repeats=CALIBRATION_REPEATS)

    def add_layers(self, space: Any, task: Task, layers: list[LayerSpec]) -> Extension:
        """Time the layers of one network that the table lacks (at their nominal sparsity)."""
        t = self.table
        todo = {t.snap(s).key(): t.snap(s) for s in layers if t.timings(s) is None}
        if not todo:
            return Extension(space.name, tuple(task.input_shape))
        return self._time(space, task, f"{len(todo)} kernel(s)", specs=list(todo.values()))
