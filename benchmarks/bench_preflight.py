#!/usr/bin/env python
"""Cost of the pre-training check of the evaluation images, as a fraction of one epoch.

The trainer decodes the header of every query, gallery and gt_bbox image and counts the
valid queries before its first epoch (reid_srdl.engine.preflight).  This script times that
pass on the default demo data (``python tools/train.py``: the synthetic Market-1501 set with
120 identities, small_reid at 128x64, batch 32, 2 workers, SRDL) against one training
epoch, estimated from ``--batches`` timed batches (after one warm-up batch) times the
number of batches per epoch.

    python benchmarks/bench_preflight.py --root datasets/synthetic
    python benchmarks/bench_preflight.py --root /tmp/demo --batches 5 --repeats 3   # tiny budget
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from bench_record import metadata, result_path, write_json

from reid_srdl import load_config
from reid_srdl.engine.preflight import preflight_evaluation_data
from reid_srdl.engine.trainer import Trainer


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="datasets/synthetic", help="data root (the demo set is written there if absent)")
    p.add_argument("--batches", type=int, default=20, help="timed training batches (default 20)")
    p.add_argument("--repeats", type=int, default=5, help="timed preflight passes; the median is kept (default 5)")
    p.add_argument("--out", default=result_path("bench_preflight"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(
        None,
        [
            f"data.root={args.root}",
            "train.progress=false",
            "train.tensorboard=false",
            f"train.output_dir={tempfile.mkdtemp()}",
            "train.run_name=bench",
            "eval.plot=false",
            f"train.max_batches={args.batches + 1}",
        ],
    )
    trainer = Trainer(cfg, os.path.join(cfg.train.output_dir, "bench"))  # builds the demo data (and checks it once)
    passes = [preflight_evaluation_data(trainer.data) for _ in range(args.repeats)]
    images = passes[0]["images"]
    preflight_s = statistics.median(p["seconds"] for p in passes)

    # One epoch of the demo run, from timed batches of the real loop.
    from reid_srdl.engine.trainer import build_optimizer

    trainer.optimizer = build_optimizer(trainer.method.trainable, cfg.optim)
    stamps = []
    original = trainer.loop.optimizer_step

    def timed_step(loss):  # called once per batch, after its forward
        stamps.append(time.perf_counter())
        return original(loss)

    trainer.loop.optimizer_step = timed_step
    trainer.train_epoch(0)
    per_batch = (stamps[-1] - stamps[0]) / (len(stamps) - 1)  # batch 1 (warm-up, workers starting) left out
    batches_per_epoch = len(trainer.data.train_loader)
    epoch_s = per_batch * batches_per_epoch
    result = {
        "environment": metadata(),
        "images_checked": images,
        "preflight_seconds": preflight_s,
        "train_batches_timed": len(stamps) - 1,
        "seconds_per_batch": per_batch,
        "batches_per_epoch": batches_per_epoch,
        "epoch_seconds_estimated": epoch_s,
        "fraction_of_epoch": preflight_s / epoch_s,
    }
    print(f"| images checked | preflight | est. epoch ({batches_per_epoch} batches) | fraction |")
    print("|---:|---:|---:|---:|")
    print(f"| {images} | {preflight_s:.3f} s | {epoch_s:.1f} s | {100 * preflight_s / epoch_s:.1f}% |")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
