"""Peak training memory and step time: entangled supernet vs DARTS mixed ops vs the largest child.

Three networks over the sparse_mbv2 space (``--size`` x ``--size`` inputs, ``--batch`` images):

- ``entangled``: :class:`~sparsenas.supernets.entangled.EntangledMBV2` in gradient mode, every
  decision mixed at once (kernel x expansion x sparsity x width x depth; expansion 1 is the skip);
- ``darts``: a DARTS-style supernet over the same choices, built here: each decision a mixed op
  whose candidates are separate modules with their own weights, all run, outputs softmax-weighted
  and summed (DASS's mixed op; coupled decisions such as expansion x sparsity have one candidate
  per pair); depth mixes block outputs;
- ``largest``: the largest child (expansion 6, kernel 7, full depth and width, dense) alone.

A training step is forward + cross-entropy + backward + SGD step (for the supernets the alphas
get gradients in the same backward).

How memory is measured. On CPU, every network runs in a **fresh subprocess**: it builds the
network, optimiser and batch, reads its resident set size (VmRSS), runs ``--steps`` steps and
reports ``ru_maxrss`` minus that baseline (peak RSS delta: activations + gradients + optimiser
state + allocator slack). Beside it, the exact bytes of distinct tensors autograd saves for
backward (``torch.autograd.graph.saved_tensors_hooks``, parameters excluded) -- noise-free. With
``--device cuda`` the peak is ``torch.cuda.max_memory_allocated`` minus the allocation before
training. Step times are measured in this process, the three networks interleaved
(:func:`sparsenas.timing.time_interleaved`, 1 thread, thread CPU time beside wall). The time goal is
judged on the 10th percentile of per-step thread CPU time (the machine's undisturbed speed; other
tenants of a shared VM only add time, see :mod:`sparsenas.timing`); medians are printed beside it.
With 6 steps per network the median ratio of the same code moved between 1.04 and 1.24 across runs.

    python benchmarks/supernet_memory.py [--quick] [--space g2g_mlp] [--json]

``--space g2g_mlp`` measures :class:`~sparsenas.supernets.entangled_mlp.EntangledG2GMLP` in gradient
mode (widths and depth mixed, connectivity sampled per step) against its largest child (3 x 512,
dense) on MNIST-1D-shaped inputs (1 x 40); there is no DARTS baseline for that space.

Goal (issue 5): entangled <= 1.1x largest in peak memory and <= 1.2x in step time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from sparsenas.arch import Arch
from sparsenas.ops import SparseConv2d
from sparsenas.search_spaces import get_space
from sparsenas.search_spaces.sparse_mbv2 import (
    EXPANSIONS, HEAD_CHANNELS, KERNELS, SPARSITIES, STAGE_CHANNELS, STAGE_MAX_DEPTH, WIDTHS, make_divisible,
)
from sparsenas.supernets.entangled import EntangledMBV2
from sparsenas.supernets.entangled_mlp import EntangledG2GMLP
from sparsenas.task import Task

CONFIGS = ("entangled", "darts", "largest")
SPACE_CONFIGS = {"sparse_mbv2": CONFIGS, "g2g_mlp": ("entangled", "largest")}


# ---------------------------------------------------------------- the DARTS-style baseline
def _pad(x: torch.Tensor, c: int) -> torch.Tensor:
    return x if x.shape[1] == c else F.pad(x, (0, 0, 0, 0, 0, c - x.shape[1]))


def _pointwise(cin: int, cout: int, sparsity: float) -> nn.Module:
    return nn.Conv2d(cin, cout, 1, bias=False) if sparsity <= 0 else SparseConv2d(cin, cout, 1, bias=False,
                                                                                 sparsity=sparsity)


class MixedOp(nn.Module):
    """DARTS mixed op: every candidate runs on the input; outputs, zero-padded to ``channels``,
    are summed with the given weights. (B, C_in, H, W) -> (B, channels, H', W')."""

    def __init__(self, candidates: list[nn.Module], channels: int) -> None:
        super().__init__()
        self.ops, self.channels = nn.ModuleList(candidates), channels

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * _pad(op(x), self.channels) for w, op in zip(weights, self.ops))

    def extra_repr(self) -> str:
        return f"candidates={len(self.ops)}, channels={self.channels}"


class DartsBlock(nn.Module):
    """Inverted residual whose three layers are mixed ops: expand (identity for expansion 1, else
    one conv per expansion x sparsity), depthwise (one per kernel), project (one per width x sparsity)."""

    def __init__(self, cin: int, cout: int, widths: list[int], stride: int) -> None:
        super().__init__()
        h = cin * max(EXPANSIONS)
        self.cin, self.cout, self.hidden, self.stride = cin, cout, h, stride
        exp = [nn.Identity() if e == 1 else
               nn.Sequential(_pointwise(cin, cin * e, s), nn.BatchNorm2d(cin * e), nn.ReLU6(inplace=True))
               for e in EXPANSIONS for s in ([0.0] if e == 1 else SPARSITIES)]
        self.expand = MixedOp(exp, h)
        self.dw = MixedOp([nn.Sequential(nn.Conv2d(h, h, k, stride, k // 2, groups=h, bias=False), nn.BatchNorm2d(h),
                                         nn.ReLU6(inplace=True)) for k in KERNELS], h)
        self.project = MixedOp([nn.Sequential(_pointwise(h, c, s), nn.BatchNorm2d(c))
                                for c in widths for s in SPARSITIES], cout)

    def forward(self, x: torch.Tensor, p_e: torch.Tensor, p_k: torch.Tensor, p_s: torch.Tensor,
                p_w: torch.Tensor, residual: torch.Tensor | float) -> torch.Tensor:
        we = torch.cat([p_e[:1], torch.outer(p_e[1:], p_s).flatten()])
        y = self.project(self.dw(self.expand(x, we), p_k), torch.outer(p_w, p_s).flatten())
        if self.stride != 1 or (isinstance(residual, float) and residual == 0.0):
            return y
        return y + residual * _pad(x, self.cout)


class DartsMBV2(nn.Module):
    """DARTS-style mixed-op supernet of sparse_mbv2 at one downsampling placement."""

    def __init__(self, task: Task, downsample: str) -> None:
        super().__init__()
        down = set(downsample.split("+"))
        self.stem = nn.Sequential(nn.Conv2d(task.input_shape[0], 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU6(inplace=True))
        self.widths = {s: [make_divisible(STAGE_CHANNELS[s - 1] * w) for w in WIDTHS] for s in range(1, 6)}
        blocks, cin = {}, 16
        for s in range(1, 6):
            for b in range(1, STAGE_MAX_DEPTH[s - 1] + 1):
                blocks[f"s{s}b{b}"] = DartsBlock(cin, max(self.widths[s]), self.widths[s],
                                                 2 if b == 1 and f"s{s}" in down else 1)
                cin = max(self.widths[s])
        self.blocks = nn.ModuleDict(blocks)
        self.head = MixedOp([nn.Sequential(_pointwise(cin, HEAD_CHANNELS, s), nn.BatchNorm2d(HEAD_CHANNELS),
                                           nn.ReLU6(inplace=True)) for s in SPARSITIES], HEAD_CHANNELS)
        self.classifier = nn.Linear(HEAD_CHANNELS, task.num_classes)
        names = {"head_sparsity": len(SPARSITIES)}
        for s in range(1, 6):
            names[f"s{s}_depth"], names[f"s{s}_width"] = STAGE_MAX_DEPTH[s - 1], len(WIDTHS)
            for b in range(1, STAGE_MAX_DEPTH[s - 1] + 1):
                names.update({f"s{s}b{b}_expand": len(EXPANSIONS), f"s{s}b{b}_kernel": len(KERNELS),
                              f"s{s}b{b}_sparsity": len(SPARSITIES)})
        self.alphas = nn.ParameterDict({k: nn.Parameter(1e-3 * torch.randn(n)) for k, n in names.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = {k: F.softmax(a, 0) for k, a in self.alphas.items()}
        x = self.stem(x)
        p_in, in_sizes = torch.ones(1), [16]
        for s in range(1, 6):
            outs = []
            for b in range(1, STAGE_MAX_DEPTH[s - 1] + 1):
                key = f"s{s}b{b}"
                if b == 1:
                    same = [p_in[i] * p[f"s{s}_width"][j] for i, ci in enumerate(in_sizes)
                            for j, co in enumerate(self.widths[s]) if ci == co]
                    residual = torch.stack(same).sum() if same else 0.0
                else:
                    residual = 1.0
                x = self.blocks[key](x, p[f"{key}_expand"], p[f"{key}_kernel"], p[f"{key}_sparsity"],
                                     p[f"s{s}_width"], residual)
                outs.append(x)
            x = sum(beta * o for beta, o in zip(p[f"s{s}_depth"], outs))
            p_in, in_sizes = p[f"s{s}_width"], self.widths[s]
        x = self.head(x, p["head_sparsity"])
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------- building and stepping
def build(config: str, size: int, seed: int = 0, space_name: str = "sparse_mbv2") -> tuple[nn.Module, Task]:
    torch.manual_seed(seed)
    if space_name == "g2g_mlp":
        space, task = get_space("g2g_mlp"), Task("mnist1d", (1, 40), 10)
        net = EntangledG2GMLP(space, task)
        if config == "entangled":
            return net.set_mixed(), task
        return space.build(net.extreme(largest=True), task), task
    space = get_space("sparse_mbv2")
    task = Task("digits", (1, size, size), 10)
    placement = space.choices(task)["downsample"][0]
    if config == "entangled":
        return EntangledMBV2(space, task, downsample=placement).set_mixed(), task
    if config == "darts":
        return DartsMBV2(task, placement), task
    if config == "largest":
        sup = EntangledMBV2(space, task, downsample=placement)
        return space.build(sup.extreme(largest=True, downsample=placement), task), task
    raise SystemExit(f"unknown config {config!r}; one of {', '.join(CONFIGS)}")


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()

    return step


def saved_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of the distinct non-parameter storages autograd keeps for backward (one forward)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    return sum(seen.values())


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def worker(config: str, batch: int, size: int, steps: int, device: str, space_name: str) -> dict:
    """Run in a fresh process: peak training memory of one configuration."""
    torch.set_num_threads(1)
    model, task = build(config, size, space_name=space_name)
    model.to(device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *task.input_shape, generator=g).to(device)
    y = torch.randint(0, task.num_classes, (batch,), generator=g).to(device)
    step = make_step(model, x, y)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = rss_bytes()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        how = "cuda max_memory_allocated delta"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        how = "ru_maxrss - VmRSS before training (fresh process)"
    saved = saved_bytes(model, x, y)
    n_params = sum(p.numel() for p in model.parameters())
    return {"config": config, "peak_mb": peak / 2**20, "saved_mb": saved / 2**20, "params": n_params, "memory": how}


def measure_memory(args: argparse.Namespace) -> dict[str, dict]:
    out = {}
    for config in SPACE_CONFIGS[args.space]:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", config, "--batch", str(args.batch),
               "--size", str(args.size), "--steps", str(args.steps), "--device", args.device, "--space", args.space]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            raise RuntimeError(f"worker {config} failed:\n{proc.stderr}")
        out[config] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def measure_time(args: argparse.Namespace) -> dict[str, dict]:
    from sparsenas.timing import time_interleaved

    fns = {}
    for config in SPACE_CONFIGS[args.space]:
        model, task = build(config, args.size, space_name=args.space)
        model.to(args.device)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(args.batch, *task.input_shape, generator=g).to(args.device)
        y = torch.randint(0, task.num_classes, (args.batch,), generator=g).to(args.device)
        step = make_step(model, x, y)
        if args.device.startswith("cuda"):
            fns[config] = lambda step=step: (step(), torch.cuda.synchronize())
        else:
            fns[config] = step
    t = time_interleaved(fns, warmup=1, repeats=args.repeats, rounds=args.rounds,
                         threads=1 if args.device == "cpu" else None)
    return {k: v.to_dict() for k, v in t.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=16, help="input size (digits default 16)")
    p.add_argument("--steps", type=int, default=3, help="training steps per memory measurement")
    p.add_argument("--repeats", type=int, default=24, help="timed steps per network")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="8x8 inputs, batch 16, fewer repeats")
    p.add_argument("--space", choices=sorted(SPACE_CONFIGS), default="sparse_mbv2",
                   help="g2g_mlp: the entangled MLP against its largest child (--size is ignored)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.batch, args.repeats, args.rounds, args.steps = 8, 16, 3, 3, 2
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch, args.size, args.steps, args.device, args.space)))
        return 0
    load_before = os.getloadavg()
    start = time.perf_counter()
    mem = measure_memory(args)
    tim = measure_time(args)
    ref_m, ref_t = mem["largest"], tim["largest"]
    rows = {}
    for c in SPACE_CONFIGS[args.space]:
        rows[c] = {**mem[c], "step_wall_ms": tim[c]["wall_ms"], "step_cpu_ms": tim[c]["cpu_ms"],
                   "step_cpu_p10_ms": tim[c]["cpu_p10_ms"],
                   "peak_ratio": mem[c]["peak_mb"] / ref_m["peak_mb"],
                   "saved_ratio": mem[c]["saved_mb"] / ref_m["saved_mb"],
                   "time_ratio_wall": tim[c]["wall_ms"] / ref_t["wall_ms"],
                   "time_ratio_cpu": tim[c]["cpu_ms"] / ref_t["cpu_ms"],
                   "time_ratio_cpu_p10": tim[c]["cpu_p10_ms"] / ref_t["cpu_p10_ms"]}
    e = rows["entangled"]
    goal = {"peak_ratio<=1.1": e["peak_ratio"] <= 1.1, "time_ratio_cpu_p10<=1.2": e["time_ratio_cpu_p10"] <= 1.2}
    result = {"benchmark": "supernet_memory", "space": args.space, "device": args.device, "batch": args.batch,
              "size": args.size,
              "rows": rows, "goal": goal, "load_before": load_before, "load_after": os.getloadavg(),
              "seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "memory_method": ref_m["memory"]}
    from rich.console import Console
    from rich.table import Table

    shape = "1x40" if args.space == "g2g_mlp" else f"{args.size}x{args.size}"
    table = Table(title=f"training step, {args.space}, batch {args.batch}, {shape}, {args.device} "
                        f"(ratios vs the largest child)")
    for col in ("network", "params", "peak MB", "peak x", "saved MB", "saved x", "step ms (cpu p10)",
                "time x (cpu p10)", "time x (cpu median)"):
        table.add_column(col, justify="right")
    for c, r in rows.items():
        table.add_row(c, f"{r['params']:,}", f"{r['peak_mb']:.1f}", f"{r['peak_ratio']:.2f}", f"{r['saved_mb']:.1f}",
                      f"{r['saved_ratio']:.2f}", f"{r['step_cpu_p10_ms']:.0f}", f"{r['time_ratio_cpu_p10']:.2f}",
                      f"{r['time_ratio_cpu']:.2f}")
    console = Console(stderr=args.json)
    console.print(table)
    console.print(f"memory: {ref_m['memory']}; load average before/after: {load_before} / {os.getloadavg()}")
    console.print(f"goal entangled <= 1.1x peak and <= 1.2x time: {goal}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
