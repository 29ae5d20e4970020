#!/usr/bin/env python
"""What pays for a training step on this CPU: each candidate measured alone, one run.

One SGD step (forward, cross-entropy, backward, Nesterov SGD step) of the project's network
on a fixed batch -- no data loading, so only the arithmetic differs -- in:

    fp32             NCHW, float32 (what torchreid's ImageSoftmaxEngine runs)
    fp32+cl          channels-last memory layout
    bf16             bf16 autocast
    bf16+cl          bf16 autocast + channels-last (train.precision=auto where bf16 is native)
    fp32+fused       fp32 with the fused (single-kernel) SGD step
    fp32 again       a second copy of fp32: the spread between the two is the noise floor
    fp32+compile     torch.compile of the network (fp32)    [--compile]
    fp32+cl+compile  torch.compile with channels-last       [--compile]
    bf16+cl+compile  torch.compile of the bf16+cl step       [--compile, native bf16 only]

Median img/s of --steps steps after --warmup steps, variants alternating over --repeats.
Also the CPU's measured matmul peak (fp32 and bf16, 2048^3 GEMMs) and the fraction of it a
training step reaches (3 x forward FLOPs per image: forward + two backward products).

    python benchmarks/bench_train_step.py                             # small_reid and resnet50
    python benchmarks/bench_train_step.py --models resnet50 --compile
"""

import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import torch
import torch.nn.functional as F
from bench_record import describe, metadata, result_path, write_json

from reid_srdl.core.precision import cpu_supports_bf16
from reid_srdl.models import build_model

SIZES = {"small_reid": (128, 64), "resnet50": (256, 128), "densenet121": (256, 128)}
BASE = ("fp32", "fp32+cl", "bf16", "bf16+cl", "fp32+fused", "fp32 again")
COMPILED = ("fp32+compile", "fp32+cl+compile", "bf16+cl+compile")


def matmul_peak(dtype, n=2048, repeats=5) -> float:
    """Measured GFLOP/s of an n x n x n GEMM (median of ``repeats``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def forward_flops(net, x) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net.eval()(x[:1])
    net.train()
    return int(counter.get_total_flops())


class Step:
    """One variant's training step on its own copy of the network."""

    def __init__(self, variant: str, model: str, classes: int, batch: torch.Tensor, labels: torch.Tensor):
        torch.manual_seed(0)
        self.variant = variant
        self.net = build_model(model, classes, feature_dim=512 if model != "small_reid" else 128).train()
        self.channels_last = "+cl" in variant
        self.bf16 = variant.startswith("bf16")
        self.x = batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch
        self.y = labels
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.net) if "compile" in variant else self.net
        fused = {"fused": True} if "fused" in variant else {}
        self.opt = torch.optim.SGD(
            self.net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=2e-4, **fused
        )

    def __call__(self) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            logits, _ = self.forward(self.x)
            loss = F.cross_entropy(logits.float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - start


def measure(model: str, args) -> dict:
    height, width = SIZES[model]
    g = torch.Generator().manual_seed(0)
    batch = torch.randn(args.batch_size, 3, height, width, generator=g)
    labels = torch.randint(0, 751, (args.batch_size,), generator=g)
    variants = BASE + (COMPILED if args.compile else ())
    if not (cpu_supports_bf16() or args.emulated_bf16):
        # Emulated bf16 runs at a fraction of a GFLOP/s (see the GEMM peak): a step would take
        # minutes, and train.precision=auto never picks it on such a CPU.
        variants = tuple(v for v in variants if not v.startswith("bf16"))
    steps = {v: Step(v, model, 751, batch, labels) for v in variants}
    for v, step in steps.items():
        for _ in range(args.warmup):
            step()
        print(f"  {model} {v}: warmed up", flush=True)
    times = {v: [] for v in variants}
    for r in range(args.repeats):
        order = list(variants) if r % 2 == 0 else list(variants)[::-1]
        for v in order:
            times[v] += [steps[v]() for _ in range(args.steps)]
    flops = forward_flops(steps["fp32"].net, batch)
    out = {"model": model, "input": f"{height}x{width}", "batch": args.batch_size, "forward_flops_per_image": flops}
    for v in variants:
        seconds = statistics.median(times[v])
        out[v] = {
            "img_s": args.batch_size / seconds,
            "step_s": seconds,
            "train_gflop_s": 3 * flops * args.batch_size / seconds / 1e9,
        }
        print(f"  {model} {v}: {out[v]['img_s']:.2f} img/s", flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["small_reid", "resnet50"], choices=list(SIZES))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="steps per variant per repeat")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also torch.compile variants (minutes of compilation)")
    p.add_argument(
        "--emulated-bf16",
        action="store_true",
        help="time the bf16 variants even where this CPU only emulates bf16 (very slow)",
    )
    p.add_argument("--json", default=result_path("bench_train_step"))
    args = p.parse_args()
    peaks = {"fp32_gflop_s": matmul_peak(torch.float32), "bf16_gflop_s": matmul_peak(torch.bfloat16)}
    info = metadata(threads=torch.get_num_threads(), bf16_native=cpu_supports_bf16(), peaks=peaks)
    print(json.dumps(info), flush=True)
    results = {"info": info, "models": [measure(m, args) for m in args.models]}
    write_json(args.json, results)
    variants = [v for v in BASE + COMPILED if v in results["models"][0]]
    if not any(v.startswith("bf16") for v in variants):
        print(
            "\nbf16 variants skipped: this CPU has no native bf16 (emulated GEMM "
            f"{peaks['bf16_gflop_s']:.2f} GFLOP/s); train.precision=auto runs fp32 here"
        )
    print(
        f"\n{describe(info)}, {info['threads']} threads, bf16 native: {info['bf16_native']}; measured GEMM peak "
        f"fp32 {peaks['fp32_gflop_s']:.0f} GFLOP/s, bf16 {peaks['bf16_gflop_s']:.0f} GFLOP/s"
    )
    print("\n| model | " + " | ".join(variants) + " |\n|---|" + "---|" * len(variants))
    for r in results["models"]:
        cells = [f"{r[v]['img_s']:.2f} ({r[v]['img_s'] / r['fp32']['img_s']:.2f}x)" for v in variants]
        print(f"| {r['model']} {r['input']} b{r['batch']} | " + " | ".join(cells) + " |")
    best = max(peaks.values())
    for r in results["models"]:
        top = max(variants, key=lambda v: r[v]["img_s"])
        print(
            f"{r['model']}: fastest {top}, {r[top]['train_gflop_s']:.0f} GFLOP/s = "
            f"{100 * r[top]['train_gflop_s'] / best:.0f}% of the best measured GEMM peak"
        )


if __name__ == "__main__":
    main()
