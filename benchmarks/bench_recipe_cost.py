#!/usr/bin/env python
"""What the identity sampler and the batch-hard triplet cost per training step, in one run.

1. Seconds per training step (data loading included) of plain cross-entropy with random
   batches vs the same network, data, batch size and workers with identity batches
   (data.sampler=identity, K = 4) and the triplet loss (loss.triplet_weight=1): everything
   else equal, so the ratio is the cost of sampling + mining.  The two alternate over
   repeats; the median is reported.  Target: at most 1.1x.
2. The two parts alone: building one epoch of P x K batches for Market-1501's training
   labels (751 identities, 12,936 images), and the triplet's forward + backward on one
   batch of features (64 x 2048 as ResNet-50 + BNNeck, 32 x 128 as small_reid).

    python benchmarks/bench_recipe_cost.py                       # small_reid 128x64, resnet50 256x128
    python benchmarks/bench_recipe_cost.py --models small_reid --repeats 1 --ids 16   # smoke
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import numpy as np
import torch
from bench_record import describe, metadata, result_path, write_json

from reid_srdl import load_config
from reid_srdl.data.samplers import IdentitySampler
from reid_srdl.data.synthetic.market import ensure_synthetic_market
from reid_srdl.engine.trainer import Trainer, build_optimizer
from reid_srdl.methods.losses import batch_hard_triplet

SIZES = {"small_reid": (128, 64), "resnet50": (256, 128), "osnet_x0_25": (128, 64)}
VARIANTS = {
    "ce": ["data.sampler=random"],
    "identity+triplet": ["data.sampler=identity", "data.num_instances=4", "loss.triplet_weight=1"],
}


def trainer(root, model, batch, workers, extra, max_batches):
    height, width = SIZES[model]
    cfg = load_config(
        None,
        [
            f"data.root={root}",
            "data.synthetic=false",
            f"data.height={height}",
            f"data.width={width}",
            f"data.batch_size={batch}",
            f"data.workers={workers}",
            f"model.name={model}",
            "method.name=vanilla",
            # one epoch per repeat: each repeat draws its own epoch's batches
            "train.epochs=16",
            f"train.max_batches={max_batches}",
            "train.progress=false",
            "train.tensorboard=false",
            f"train.output_dir={tempfile.mkdtemp()}",
            "train.run_name=bench",
            "eval.plot=false",
            *extra,
        ],
    )
    t = Trainer(cfg, os.path.join(cfg.train.output_dir, cfg.train.run_name))
    t.optimizer = build_optimizer(t.method.trainable, cfg.optim)
    return t


def seconds_per_step(t, epoch):
    start = time.perf_counter()
    t.train_epoch(epoch)
    seconds = time.perf_counter() - start
    loader = t.data.train_loader
    steps = len(loader) if t.cfg.train.max_batches <= 0 else min(len(loader), t.cfg.train.max_batches)
    return seconds / steps


def step_cost(args, root, model):
    torch.manual_seed(0)
    trainers = {
        name: trainer(root, model, args.batch_size, args.workers, extra, args.max_batches)
        for name, extra in VARIANTS.items()
    }
    times = {name: [] for name in VARIANTS}
    for r in range(args.repeats):
        order = list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]
        for name in order:
            times[name].append(seconds_per_step(trainers[name], r))
            print(f"  {model} repeat {r + 1}: {name} {1000 * times[name][-1]:.1f} ms/step", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "model": model,
        "input": list(SIZES[model]),
        "batch": args.batch_size,
        "workers": args.workers,
        "ms_per_step": {k: 1000 * v for k, v in med.items()},
        "ratio": med["identity+triplet"] / med["ce"],
        "all_ms": {k: [1000 * x for x in v] for k, v in times.items()},
    }


def sampler_cost(repeats):
    """One epoch of Market-1501-sized P x K batches (751 identities, 12,936 images)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(751), rng.multinomial(12936 - 751 * 2, np.ones(751) / 751) + 2).tolist()
    sampler = IdentitySampler(labels, batch_size=64, num_instances=4, seed=0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        keys = list(sampler)
        times.append(time.perf_counter() - start)
    return {"images": len(labels), "keys_per_epoch": len(keys), "ms_per_epoch": 1000 * statistics.median(times)}


def triplet_cost(batch, dim, repeats=20):
    features = torch.randn(batch, dim, requires_grad=True)
    labels = torch.arange(batch // 4).repeat_interleave(4)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        batch_hard_triplet(features, labels, 0.3).backward()
        times.append(time.perf_counter() - start)
    return {"batch": batch, "dim": dim, "ms_forward_backward": 1000 * statistics.median(times)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["small_reid", "resnet50"], choices=list(SIZES))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-batches", type=int, default=20, help="steps timed per epoch (0: the whole epoch)")
    p.add_argument("--ids", type=int, default=120, help="synthetic identities (half are training ids)")
    p.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "reid_srdl_bench_recipe_market"))
    p.add_argument("--json", default=result_path("bench_recipe_cost"))
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    ensure_synthetic_market(args.root, num_ids=args.ids, seed=0)
    environment = metadata()
    print(f"{describe(environment)}, {environment['torch_threads']} threads")
    results = {
        "environment": environment,
        "steps": [step_cost(args, args.root, m) for m in args.models],
        "sampler": sampler_cost(max(1, args.repeats)),
        "triplet": [triplet_cost(64, 2048), triplet_cost(32, 128)],
    }
    write_json(args.json, results)
    print("\n| model | input | batch | CE ms/step | identity + triplet ms/step | ratio |\n|---|---|---|---|---|---|")
    for r in results["steps"]:
        ms = r["ms_per_step"]
        print(
            f"| {r['model']} | {r['input'][0]}x{r['input'][1]} | {r['batch']} | {ms['ce']:.1f} | "
            f"{ms['identity+triplet']:.1f} | {r['ratio']:.3f}x |"
        )
    s = results["sampler"]
    print(f"\nP x K epoch for {s['images']} images: {s['ms_per_epoch']:.1f} ms")
    for t in results["triplet"]:
        print(f"batch-hard triplet {t['batch']}x{t['dim']}: {t['ms_forward_backward']:.2f} ms forward + backward")


if __name__ == "__main__":
    main()
