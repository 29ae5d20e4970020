#!/usr/bin/env python
"""Where training time goes, and what channels-last / bf16 autocast buy on this CPU.

One training epoch of reid_srdl's Trainer (vanilla method, same network, data, batch and
workers) in three settings -- ``train.precision=fp32``, fp32 with ``train.channels_last=true``
(what ``auto`` runs where bf16 does not pay), and ``train.precision=bf16`` channels-last
(what ``auto`` runs where it does) -- each under
``torch.profiler``, next to torchreid's ``ImageSoftmaxEngine`` on a copy of the same network
(the same helpers as benchmarks/bench_train.py).  For each setting: images/s, the time spent
waiting for the DataLoader (the profiler's ``enumerate(DataLoader)...__next__`` events)
against the rest (forward, backward, optimizer), and the top operators by self CPU time.

    python benchmarks/profile_train.py                         # resnet50 256x128, batch 16
    python benchmarks/profile_train.py --model small_reid --height 128 --width 64 --batch 32
"""

import argparse
import copy
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch
from bench_record import metadata, result_path
from bench_train import time_torchreid, torchreid_engine
from torch.profiler import ProfilerActivity, profile

from reid_srdl import load_config
from reid_srdl.data.synthetic.market import make_synthetic_market
from reid_srdl.engine.trainer import Trainer, build_optimizer

SETTINGS = {
    "fp32": ["train.precision=fp32"],
    "channels_last": ["train.precision=fp32", "train.channels_last=true"],
    "channels_last+bf16": ["train.precision=bf16", "train.channels_last=true"],
}
DATA_WAIT_PREFIX = "enumerate(DataLoader)"


def build_trainer(args, root, extra):
    out = tempfile.mkdtemp(prefix="profile_train_")
    cfg = load_config(
        None,
        [
            f"data.root={root}",
            "data.synthetic=false",
            f"data.height={args.height}",
            f"data.width={args.width}",
            f"data.batch_size={args.batch}",
            f"data.workers={args.workers}",
            f"model.name={args.model}",
            "method.name=vanilla",
            "train.epochs=1",
            "train.progress=false",
            "train.tensorboard=false",
            f"train.output_dir={out}",
            "train.run_name=profile",
            "eval.plot=false",
            "eval.multi_query=false",
            *extra,
        ],
    )
    return Trainer(cfg, os.path.join(out, "profile"))


def profiled_epoch(trainer):
    """(images/s, seconds waiting for data, seconds in all, top operators table)."""
    torch.manual_seed(0)
    trainer.optimizer = build_optimizer(trainer.method.trainable, trainer.cfg.optim)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        trainer.train_epoch(0)
        seconds = time.perf_counter() - start
    events = prof.key_averages()
    # The __next__ event spans the wait for the next batch (decoding happens in workers).
    wait_us = sum(e.cpu_time_total for e in events if e.key.startswith(DATA_WAIT_PREFIX))
    images = len(trainer.data.train_loader) * trainer.cfg.data.batch_size
    table = events.table(sort_by="self_cpu_time_total", row_limit=12)
    return images / seconds, wait_us / 1e6, seconds, table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet50")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--ids", type=int, default=12, help="synthetic identities (half are training ids)")
    p.add_argument("--out", default=result_path("profile_train", ext=""), help="prefix of the .json and .txt")
    args = p.parse_args(argv)

    root = tempfile.mkdtemp(prefix="profile_train_data_")
    make_synthetic_market(root, num_ids=args.ids, seed=0)
    results, tables = {}, []
    reference = None
    for name, extra in SETTINGS.items():
        torch.manual_seed(0)
        trainer = build_trainer(args, root, extra)
        if reference is None:
            reference = copy.deepcopy(trainer.method.trainable)  # torchreid trains the same initial net
        rate, wait, seconds, table = profiled_epoch(trainer)
        results[name] = {
            "images_per_second": rate,
            "seconds": seconds,
            "data_wait_seconds": wait,
            "data_wait_fraction": wait / seconds,
        }
        tables.append(f"== {name}: {rate:.2f} images/s, data wait {wait:.1f}s of {seconds:.1f}s\n{table}")
        print(tables[-1], flush=True)
    engine, dm = torchreid_engine(root, reference, args.height, args.width, args.batch, args.workers)
    results["torchreid ImageSoftmaxEngine (fp32)"] = {"images_per_second": time_torchreid(engine, dm, args.batch)}
    for name in SETTINGS:
        results[name]["vs_torchreid"] = (
            results[name]["images_per_second"] / results["torchreid ImageSoftmaxEngine (fp32)"]["images_per_second"]
        )
    summary = {
        "model": args.model,
        "height": args.height,
        "width": args.width,
        "batch": args.batch,
        "workers": args.workers,
        "threads": torch.get_num_threads(),
        "results": results,
        "load_average_at_end": os.getloadavg(),
        "environment": metadata(),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    for suffix, text in ((".json", json.dumps(summary, indent=2)), (".txt", "\n\n".join(tables))):
        tmp = f"{args.out}{suffix}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.out + suffix)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
