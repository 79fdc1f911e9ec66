"""`nas profile`: time a space's kernels on this machine, or check a profile's predictions."""
from __future__ import annotations

import argparse

from ..errors import SparseNASError
from .common import console as stdout_console, print_json


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s}")
    return v


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile", help="time every kernel a space can emit on this machine (a hardware profile)",
        description="Time every distinct kernel (conv/linear shape, stride, sparsity, implementation) a space can "
                    "emit, with 1 thread, and fit the calibration that turns them into end-to-end latency; writes a "
                    "JSON hardware profile for `nas search --hw FILE`. An interrupted run resumes from FILE.partial. "
                    "With --validate FILE: build random architectures, measure them end to end and report how far "
                    "the profile's predictions are, with a scatter plot.")
    p.add_argument("--space", action="append", default=None, help="search space to profile (repeatable; "
                                                                  "default sparse_mbv2)")
    p.add_argument("--dataset", default=None, help="dataset that fixes channels and classes (default: the space's)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files (cifar*, mnist, fashion_mnist)")
    p.add_argument("--input-size", type=_positive_int, action="append", default=None,
                   help="input size SxS to profile (repeatable; default: the dataset's, 16 for digits)")
    p.add_argument("--out", default=None, metavar="FILE", help="profile to write (extended if it exists)")
    p.add_argument("--runtime", default=None,
                   help="inference runtime to time: onnxruntime (default: the exported model.onnx, as deployed), "
                        "torch (PyTorch eager with CSR kernels), openvino or mnn (MNN, sparse 1x1 kernels); with --validate, "
                        "default: the profile's")
    p.add_argument("--name", default=None, help="profile name (default: the file name)")
    p.add_argument("--repeats", type=_positive_int, default=100, help="timed calls per kernel (default 100)")
    p.add_argument("--calibration-networks", type=int, default=80,
                   help="random networks measured end to end to calibrate the table (default 80)")
    p.add_argument("--network-repeats", type=_positive_int, default=200,
                   help="timed calls per network, calibration and validation (default 200: on a shared machine "
                        "the median of 100 calls still moved by ~5%%)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: also time dense vs 2:4 semi-structured kernels on the GPU")
    p.add_argument("--seed", type=int, default=0)
    c = p.add_argument_group("coverage")
    c.add_argument("--check", action="store_true",
                   help="say whether a profile (--profile, default: the one shipped for --runtime) covers a search "
                        "of --space on --dataset at --input-size, and what the search would time first; times "
                        "nothing. Exit code 0: covered, 1: not covered")
    c.add_argument("--profile", "--hw", dest="profile", default=None, metavar="FILE",
                   help="with --check: the profile to check (default: the shipped one)")
    v = p.add_argument_group("validation")
    v.add_argument("--validate", default=None, metavar="FILE", help="check this profile instead of writing one")
    v.add_argument("--n", type=_positive_int, default=50, help="random architectures to measure (default 50)")
    v.add_argument("--plot", default=None, metavar="PNG",
                   help="scatter plot of predicted vs measured (default: ./NAME-validate-SPACE-SIZE.png)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.set_defaults(func=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    if args.check:
        if args.out is not None or args.validate is not None:
            raise SparseNASError("--check says what a profile lacks and times nothing: give it without --out and "
                                 "--validate (the profile to check goes in --profile FILE)")
        return _check(args)
    if args.profile is not None:
        raise SparseNASError("--profile FILE names the profile for --check; to write a profile use --out FILE, to "
                             "check its predictions --validate FILE")
    if args.validate is None and args.out is None:
        raise SparseNASError("nas profile needs --out FILE (the profile to write), or --validate FILE (a profile to "
                             "check against networks measured end to end)")
    if args.validate is not None and args.out is not None:
        raise SparseNASError("give either --out FILE (write a profile) or --validate FILE (check one), not both")
    return _validate(args) if args.validate is not None else _profile(args)


def _profile(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..api import profile

    console = Console(stderr=True)
    data = profile(args.out, spaces=args.space, dataset=args.dataset, data_dir=args.data_dir,
                   input_sizes=args.input_size, name=args.name, repeats=args.repeats,
                   calibration_networks=args.calibration_networks, network_repeats=args.network_repeats,
                   seed=args.seed, device=args.device, runtime=args.runtime, progress=not args.no_progress,
                   log=lambda s: console.print(s))
    out = stdout_console()
    rt = data["runtime"]
    out.print(f"wrote {args.out}: {len(data['entries'])} kernels of runtime {rt['name']} {rt['version']} on "
              f"{data['machine']['cpu_model']} ({data['machine']['cores']} cores, {data['timing']['threads']} thread)")
    summary = []
    for rec in data["profiled"]:
        cal = data["calibrations"].get(rec["key"], {})
        loo = cal.get("leave_one_out", {})
        summary.append({**rec, "calibration_networks": len(cal.get("networks", [])), "leave_one_out": loo,
                        "plain_sum": cal.get("plain_sum")})
        if loo:
            out.print(f"  {rec['key']}: {rec['kernels']} kernels, {rec['seconds']:.0f} s; calibration on "
                      f"{len(cal['networks'])} networks, leave-one-out within ±10%: {loo['within_10']:.0%} "
                      f"(plain sum: {cal['plain_sum']['within_10']:.0%})")
    out.print(f"Check it:  nas profile --validate {args.out} --space {data['spaces'][0]} --n 50")
    out.print(f"Use it:    nas search --space {data['spaces'][0]} --runtime {rt['name']} --hw {args.out}")
    if args.json:
        print_json({"out": args.out, "kernels": len(data["entries"]), "machine": data["machine"], "profiled": summary})
    return 0


def _validate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..api import validate_profile

    console = stdout_console()
    reports = validate_profile(args.validate, spaces=args.space, dataset=args.dataset, data_dir=args.data_dir,
                               input_sizes=args.input_size, n=args.n, seed=args.seed,
                               network_repeats=args.network_repeats, plot=args.plot, runtime=args.runtime,
                               log=lambda s: Console(stderr=True).print(s) if not args.no_progress else None)
    for r in reports:
        t = Table(title=f"{r['table']} ({r['runtime_name']}) on {r['space']} {tuple(r['input_shape'])}: {r['n']} random networks, "
                        f"{r['metric']} ({r['metric_label']} of {r['repeats']} calls)")
        for col in ("model", "MAPE", "within ±10%", "Spearman", "median pred/meas"):
            t.add_column(col, justify="right")
        for label, f in r["rows"]:
            t.add_row(label, f"{f['mape']:.1%}", f"{f['within_10']:.0%}", f"{f['spearman']:.3f}",
                      f"{f['median_ratio']:.2f}")
        console.print(t)
        verdict = "meets" if r["passed"] else "misses"
        console.print(f"{verdict} the bar (>= {r['bar']['within_10']:.0%} within ±10% and Spearman >= "
                      f"{r['bar']['spearman']}); the machine runs x{r['speed']:.2f} the time it took when profiled "
                      f"(speed anchor: {r['anchor']['networks']} calibration networks); "
                      f"{r['with_sparse_kernels']:.0%} of the networks run layers on sparse kernels; plot: {r['plot']}")
    if args.json:
        print_json({"profile": args.validate, "reports": [{k: v for k, v in r.items() if k not in ("networks", "rows")}
                                                          for r in reports]})
    return 0


def _check(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..api import profile_coverage

    reports = profile_coverage(spaces=args.space, dataset=args.dataset, data_dir=args.data_dir,
                               input_sizes=args.input_size, hw=args.profile, runtime=args.runtime)
    out = Console(highlight=False, soft_wrap=True)
    for r in reports:
        where = (f"{r['space']} on {r['dataset']} {'x'.join(map(str, r['input_shape']))} "
                 f"({r['num_classes']} classes)")
        head = f"{r['profile']} ({r['runtime']})"
        if r["covered"]:
            cache = f", {r['from_cache']} of them from this machine's cache" if r["from_cache"] else ""
            out.print(f"{head} covers {where}: {r['kernels']:,} kernels{cache}, calibration from the {r['calibration']}")
            continue
        shown = ", ".join(r["missing_keys"][:8]) + (f" (and {r['missing'] - 8} more)" if r["missing"] > 8 else "")
        if r["calibration"] is None:
            todo = (f"time the {r['missing']} of its {r['kernels']:,} kernels the profile lacks ({shown}) and fit "
                    "a calibration (random networks measured end to end: a minute or more) before its first trial")
        else:
            todo = (f"time, as its networks meet them, up to {r['missing']} of its {r['kernels']:,} kernels ({shown})")
        out.print(f"{head} does not cover {where}: a search would {todo}, once on this machine, and keep them "
                  f"in {r['cache']}")
    if args.json:
        print_json({"covered": all(r["covered"] for r in reports), "reports": reports})
    return 0 if all(r["covered"] for r in reports) else 1
