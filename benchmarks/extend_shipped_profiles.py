"""Extend the shipped hardware profiles to inputs they do not cover, timing only what is missing.

For every (runtime, space, input shape, classes) job, the kernels the shipped profile lacks are
timed in its runtime and its way (:func:`sparsenas.hwprofiles.cache.extend_profile`, the code a
search's profile cache uses) and, when the profile has no calibration for the space at that input,
80 random networks are measured end to end and fitted. Entries already in the profile are never
re-timed. The profile is rewritten (atomically) after every job, so an interrupted run keeps what
it finished; jobs already covered cost nothing.

    python benchmarks/extend_shipped_profiles.py [--runtime onnxruntime --runtime torch]
                                                 [--only sparse_mbv2@3x32x32] [--dry] [--json]

With ``--json`` the last line of stdout is one JSON object: per job, kernels added, seconds, load.
"""
from __future__ import annotations

import argparse
import json
import os

from sparsenas.hwprofiles import default_profile_path, read_profile
from sparsenas.hwprofiles.cache import extend_profile
from sparsenas.hwprofiles.profile import calibration_key, write_json_atomic
from sparsenas.hwprofiles.table import LatencyTable
from sparsenas.search_spaces import get_space
from sparsenas.task import Task

# What the built-in datasets give by default (digits 1x16, synthetic 1x8 with 4 classes, mnist and
# fashion_mnist 1x28, cifar10/100 3x32 with 10/100 classes, mnist1d 1x40) and the 3-channel
# counterparts of the sizes sparse_mbv2 is built for; most urgent first (CIFAR, then what the
# test suite and the quick-start searches run: synthetic and mnist1d).
JOBS: list[tuple[str, tuple[int, ...], int]] = [
    ("sparse_mbv2", (3, 32, 32), 10), ("sparse_mbv2", (3, 32, 32), 100), ("sparse_mbv2", (1, 8, 8), 4),
    ("sparse_mbv2", (3, 16, 16), 10), ("sparse_mbv2", (3, 8, 8), 10),
    ("pooling_resnet20", (1, 8, 8), 4), ("sparse_darts", (1, 8, 8), 4), ("g2g_mlp", (1, 8, 8), 4),
    ("g2g_mlp", (1, 40), 10), ("sparse_darts", (1, 8, 8), 10), ("pooling_resnet20", (1, 8, 8), 10),
    ("pooling_resnet20", (1, 16, 16), 10), ("sparse_darts", (1, 16, 16), 10), ("g2g_mlp", (1, 16, 16), 10),
    ("pooling_resnet20", (3, 32, 32), 10), ("sparse_darts", (3, 32, 32), 10),
    ("sparse_mbv2", (1, 28, 28), 10), ("pooling_resnet20", (1, 28, 28), 10), ("sparse_darts", (1, 28, 28), 10),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runtime", action="append", default=None, help="runtime(s) (default: onnxruntime, torch)")
    ap.add_argument("--only", action="append", default=None, help="jobs by calibration key, e.g. sparse_mbv2@3x32x32")
    ap.add_argument("--dry", action="store_true", help="say what each job would time, time nothing")
    ap.add_argument("--recalibrate", action="store_true",
                    help="measure the calibration networks of the --only jobs again (e.g. after a run under heavy "
                         "load); their kernels are kept")
    ap.add_argument("--calibration-networks", type=int, default=80,
                    help="random networks measured end to end per calibration (default 80, as `nas profile`)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    done = []
    for name, shape, classes in JOBS:  # both runtimes job by job: the most urgent input first in both
        key = calibration_key(name, shape)
        if args.only and key not in args.only:
            continue
        for runtime in args.runtime or ["onnxruntime", "torch"]:
            path = default_profile_path(runtime)
            space, task = get_space(name), Task("default", shape, classes)
            data = read_profile(path)
            if args.dry:
                table = LatencyTable(data, path)
                missing = table.missing(space.kernel_specs(task))
                rec = {"runtime": runtime, "key": key, "classes": classes, "missing": len(missing),
                       "calibrated": key in data["calibrations"]}
            else:
                if args.recalibrate and args.only:
                    data["calibrations"].pop(key, None)
                ext = extend_profile(data, space, task, calibration_networks=args.calibration_networks)
                if not ext.empty:
                    write_json_atomic(path, data)
                rec = {"runtime": runtime, "key": key, "classes": classes, "kernels": len(ext.kernels),
                       "calibrated_now": ext.calibrated, "seconds": ext.seconds, "load_avg": list(os.getloadavg())}
                cal = data["calibrations"].get(key, {})
                rec["leave_one_out_within_10"] = cal.get("leave_one_out", {}).get("within_10")
            print(rec, flush=True)
            done.append(rec)
    if args.json:
        print(json.dumps({"jobs": done}))


if __name__ == "__main__":
    main()
