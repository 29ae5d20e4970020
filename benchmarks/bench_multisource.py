#!/usr/bin/env python
"""Training cost per image: one source (Market-1501) vs two (Market-1501 + DukeMTMC-reID).

The same network, image size, batch size and workers; each side trains the same number of
batches from the same initial weights (``--batches``; default: one epoch of the smaller,
single-source set), the order of the two alternates over repeats and the median seconds per
training image is reported with their ratio (multi / single; 1.00 = no extra cost).  Data
loading is included.  Synthetic data sets are written under ``--root`` if absent.

    python benchmarks/bench_multisource.py                        # small_reid 128x64, 3 repeats
    python benchmarks/bench_multisource.py --model resnet50 --height 256 --width 128 --batches 30
    python benchmarks/bench_multisource.py --ids 12 --batches 2 --repeats 1 --height 64 --width 32  # smoke
"""

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import torch
from bench_record import describe, metadata, result_path, write_json

from reid_srdl import load_config
from reid_srdl.data.synthetic.reid_sets import ensure_synthetic
from reid_srdl.engine.trainer import Trainer, build_optimizer

SIDES = {"single": "[market1501]", "multi": "[market1501,dukemtmcreid]"}


def trainer(args, sources: str, out: str) -> Trainer:
    cfg = load_config(
        None,
        [
            f"data.root={args.root}",
            "data.synthetic=false",
            f"data.sources={sources}",
            "data.targets=[market1501]",
            f"data.height={args.height}",
            f"data.width={args.width}",
            f"data.batch_size={args.batch_size}",
            f"data.workers={args.workers}",
            f"model.name={args.model}",
            "method.name=vanilla",
            "train.epochs=1",
            f"train.max_batches={args.batches}",
            "train.progress=false",
            "train.tensorboard=false",
            f"train.output_dir={out}",
            "train.run_name=bench",
            "eval.plot=false",
        ],
    )
    return Trainer(cfg, os.path.join(out, "bench"))


def seconds_per_image(t: Trainer, initial: dict) -> float:
    t.method.trainable.load_state_dict(initial)
    t.optimizer = build_optimizer(t.method.trainable, t.cfg.optim)
    start = time.perf_counter()
    t.train_epoch(0)
    seconds = time.perf_counter() - start
    return seconds / (t.cfg.train.max_batches * t.cfg.data.batch_size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small_reid")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=0, help="batches per measurement (0: one single-source epoch)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ids", type=int, default=120, help="synthetic identities per data set (the demo's 120)")
    p.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "reid_srdl_bench_multisource"))
    p.add_argument("--json", default=result_path("bench_multisource"))
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    for name in ("market1501", "dukemtmcreid"):
        ensure_synthetic(name, args.root, num_ids=args.ids, seed=0)
    out = tempfile.mkdtemp(prefix="bench_multisource-")
    torch.manual_seed(0)
    sides = {name: trainer(args, sources, os.path.join(out, name)) for name, sources in SIDES.items()}
    if args.batches <= 0:
        args.batches = len(sides["single"].data.train_loader)
    for t in sides.values():  # equal work: the same number of batches on both sides
        t.run.cfg = dataclasses.replace(t.cfg, train=dataclasses.replace(t.cfg.train, max_batches=args.batches))
        if len(t.data.train_loader) < args.batches:
            raise SystemExit(
                f"--batches {args.batches} is more than an epoch of {t.data.name} ({len(t.data.train_loader)} batches)"
            )
    initial = {k: v.clone() for k, v in sides["single"].method.trainable.state_dict().items()}
    # The two networks differ only in their classifier's width (751 vs 751 + 702 identities
    # on the real sets): the shared backbone starts from the same weights on both sides.
    multi_initial = sides["multi"].method.trainable.state_dict()
    shared = {k: v for k, v in initial.items() if multi_initial[k].shape == v.shape}
    rates = {name: [] for name in sides}
    for r in range(args.repeats):
        order = list(sides) if r % 2 == 0 else list(sides)[::-1]
        for name in order:
            t = sides[name]
            start_state = {**t.method.trainable.state_dict(), **shared}
            rates[name].append(seconds_per_image(t, start_state))
            print(f"  repeat {r + 1}: {name:6s} {1e3 * rates[name][-1]:.2f} ms/image", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "environment": metadata(),
        "model": args.model,
        "height": args.height,
        "width": args.width,
        "batch": args.batch_size,
        "workers": args.workers,
        "batches": args.batches,
        "ids_per_set": args.ids,
        "num_train": {k: t.data.num_train for k, t in sides.items()},
        "num_classes": {k: t.data.num_classes for k, t in sides.items()},
        "ms_per_image": {k: 1e3 * v for k, v in med.items()},
        "ratio_multi_over_single": med["multi"] / med["single"],
        "all_ms_per_image": {k: [1e3 * x for x in v] for k, v in rates.items()},
    }
    write_json(args.json, result)
    print(f"\n{describe(result['environment'])}")
    print("\n| training set | images | identities | ms / image |\n|---|---|---|---|")
    for name, t in sides.items():
        print(f"| {t.data.name} | {t.data.num_train} | {t.data.num_classes} | {result['ms_per_image'][name]:.2f} |")
    print(
        f"\nmulti-source / single-source cost per image: {result['ratio_multi_over_single']:.3f}x "
        f"({args.batches} batches of {args.batch_size}, median of {args.repeats})"
    )


if __name__ == "__main__":
    main()
