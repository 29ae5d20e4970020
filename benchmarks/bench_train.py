#!/usr/bin/env python
"""Training speed, side by side in one run.

1. Images/s of one training epoch: reid_srdl's trainer as shipped (``train.precision=auto``:
   bf16 autocast + channels-last where the CPU's bf16 probe says it pays, else fp32; training
   images decoded once into the uint8 cache, ``data.cache_mb``), the same with
   ``train.precision=fp32``, the same with ``data.cache_mb=0`` (every image decoded and
   augmented with PIL at every step: what the cache buys), vs torchreid's
   ``ImageSoftmaxEngine`` as shipped (fp32) on the SAME network (ours, wrapped to torchreid's
   train/eval convention), the same data folder, batch size, image size and number of
   workers.  All include data loading; the order alternates over repeats and the median is
   reported.  Each side first trains one untimed epoch (``--warmup-epochs``): the first
   epoch of a process also pays one-off costs -- starting the persistent DataLoader workers
   (once per run, not per epoch), oneDNN creating its kernels for each layer shape -- and a
   median of two repeats of which one is cold measures them half (2026-12-06, AMD EPYC,
   small_reid: 578 img/s in the first repeat, 729 in the second).  The warm-up epochs' rates are kept
   (``first_epoch_img_s``) so that the cold figure stays visible.  The cache is filled once
   before the timed epochs (decoding every image once, in threads); that one-off cost is
   reported apart (``cache_fill_seconds``).
   Issue 29's goal: ``ratio`` (ours / torchreid) >= 2.5 for every reference network.
2. SRDL vs vanilla wall time at equal epochs (SRDL's extra cost is the stage-1 logit
   extraction; its second stage replaces, not adds to, epochs).
3. ``--demo``: the training phase of the CPU demo (configs/demo.yaml: SRDL, small_reid,
   30 epochs on the synthetic Market-1501 of 120 identities), cache fill included; goal <= 45 s.

    python benchmarks/bench_train.py                     # small_reid 128x64, resnet50 and densenet121 256x128
    python benchmarks/bench_train.py --models small_reid --repeats 3
    python benchmarks/bench_train.py --demo --models --overhead-epochs 0   # the demo's training only

Writes benchmarks/results/bench_train-<cpu>.json (machine, date, commit).
"""

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch
import torch.nn as nn
from bench_record import describe, metadata, result_path, write_json

from reid_srdl import load_config
from reid_srdl.core.precision import bf16_decision, cpu_supports_bf16
from reid_srdl.data.synthetic.market import ensure_synthetic_market
from reid_srdl.engine.trainer import Trainer, build_optimizer

SIZES = {"small_reid": (128, 64), "resnet50": (256, 128), "densenet121": (256, 128)}


class TorchreidView(nn.Module):
    """Our Net under torchreid's convention: logits in train mode, features in eval mode."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        logits, features = self.net(x)
        return logits if self.training else features


def our_trainer(
    root, model, height, width, batch, workers, epochs=1, method="vanilla", out=None, precision="auto", extra=()
):
    cfg = load_config(
        None,
        [
            *extra,
            f"data.root={root}",
            "data.synthetic=false",
            f"data.height={height}",
            f"data.width={width}",
            f"data.batch_size={batch}",
            f"data.workers={workers}",
            f"model.name={model}",
            f"method.name={method}",
            f"train.epochs={epochs}",
            "train.progress=false",
            "train.tensorboard=false",
            f"train.output_dir={out or tempfile.mkdtemp()}",
            "train.run_name=bench",
            "eval.plot=false",
            "eval.multi_query=false",
            f"train.precision={precision}",
        ],
    )
    return Trainer(cfg, os.path.join(cfg.train.output_dir, cfg.train.run_name))


def fill_cache(trainer) -> float:
    """Seconds to decode the training set once into the cache (0 when it is off or full)."""
    start = time.perf_counter()
    trainer.data.train_loader.dataset.prepare()
    return time.perf_counter() - start


def time_ours(trainer):
    trainer.optimizer = build_optimizer(trainer.method.trainable, trainer.cfg.optim)
    start = time.perf_counter()
    record = trainer.train_epoch(0)
    seconds = time.perf_counter() - start
    images = len(trainer.data.train_loader) * trainer.cfg.data.batch_size
    return images / seconds, record


def torchreid_engine(root, net, height, width, batch, workers):
    import torchreid

    dm = torchreid.reid.data.ImageDataManager(
        root=root,
        sources="market1501",
        height=height,
        width=width,
        batch_size_train=batch,
        batch_size_test=128,
        workers=workers,
        transforms=["random_flip", "random_crop"],
        use_gpu=False,
    )
    model = TorchreidView(net)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=2e-4)
    engine = torchreid.reid.engine.ImageSoftmaxEngine(dm, model, optimizer, use_gpu=False, label_smooth=False)
    engine.epoch, engine.max_epoch = 0, 1
    return engine, dm


def time_torchreid(engine, dm, batch):
    start = time.perf_counter()
    engine.train(print_freq=10**9)
    seconds = time.perf_counter() - start
    return len(dm.train_loader) * batch / seconds


def throughput(args, root, model):
    height, width = SIZES[model]
    torch.manual_seed(0)
    ours = our_trainer(root, model, height, width, args.batch_size, args.workers)
    torch.manual_seed(0)
    ours_fp32 = our_trainer(root, model, height, width, args.batch_size, args.workers, precision="fp32")
    torch.manual_seed(0)
    ours_files = our_trainer(root, model, height, width, args.batch_size, args.workers, extra=["data.cache_mb=0"])
    cache_fill = fill_cache(ours)
    fill_cache(ours_fp32)
    # torchreid trains a copy of the same initial network in its own layout (NCHW, fp32).
    engine, dm = torchreid_engine(
        root, copy.deepcopy(ours_fp32.method.trainable), height, width, args.batch_size, args.workers
    )
    assert len(dm.train_loader) == len(ours.data.train_loader), "both sides must see the same batches"
    first = {}
    for _ in range(args.warmup_epochs):  # untimed in the medians: see the module docstring
        first = {
            "reid_srdl": time_ours(ours)[0],
            "reid_srdl_fp32": time_ours(ours_fp32)[0],
            "reid_srdl_no_cache": time_ours(ours_files)[0],
            "torchreid": time_torchreid(engine, dm, args.batch_size),
        }
        print(f"  {model} warm-up epoch: " + ", ".join(f"{k} {v:.1f} img/s" for k, v in first.items()), flush=True)
    rates = {"reid_srdl": [], "reid_srdl_fp32": [], "reid_srdl_no_cache": [], "torchreid": []}
    for r in range(args.repeats):
        order = [
            ("reid_srdl", lambda: time_ours(ours)[0]),
            ("reid_srdl_fp32", lambda: time_ours(ours_fp32)[0]),
            ("reid_srdl_no_cache", lambda: time_ours(ours_files)[0]),
            ("torchreid", lambda: time_torchreid(engine, dm, args.batch_size)),
        ]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            rates[name].append(fn())
            print(f"  {model} repeat {r + 1}: {name} {rates[name][-1]:.1f} img/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "model": model,
        "height": height,
        "width": width,
        "batch": args.batch_size,
        "workers": args.workers,
        "precision": ours.precision.mode + ("+channels-last" if ours.precision.channels_last else ""),
        "batches_per_epoch": len(dm.train_loader),
        "reid_srdl_img_s": med["reid_srdl"],
        "reid_srdl_fp32_img_s": med["reid_srdl_fp32"],
        "reid_srdl_no_cache_img_s": med["reid_srdl_no_cache"],
        "torchreid_img_s": med["torchreid"],
        "ratio": med["reid_srdl"] / med["torchreid"],
        "fp32_ratio": med["reid_srdl_fp32"] / med["torchreid"],
        "no_cache_ratio": med["reid_srdl_no_cache"] / med["torchreid"],
        "cache_fill_seconds": cache_fill,
        "cache_fill_epochs": cache_fill / (len(ours.data.train_loader) * args.batch_size / med["reid_srdl"]),
        "warmup_epochs": args.warmup_epochs,
        "first_epoch_img_s": first,
        "all": rates,
    }


class _Silent:
    def log_epoch(self, record):
        pass


def srdl_overhead(args, root):
    """Training-phase wall time (epochs + stage-end work) of SRDL vs vanilla, equal epochs."""
    out = {}
    for method in ("vanilla", "srdl"):
        times = []
        for r in range(args.repeats):
            torch.manual_seed(0)
            t = our_trainer(
                root, "small_reid", 128, 64, args.batch_size, args.workers, epochs=args.overhead_epochs, method=method
            )
            start = time.perf_counter()
            t.loop.run_epochs(_Silent())  # the training phase only: evaluation is not part of its cost
            times.append(time.perf_counter() - start)
            print(f"  {method} {args.overhead_epochs} epochs, repeat {r + 1}: {times[-1]:.1f}s", flush=True)
        out[method] = statistics.median(times)
    out["ratio"] = out["srdl"] / out["vanilla"]
    out["epochs"] = args.overhead_epochs
    return out


def demo_training(root: str) -> dict:
    """Wall time of the CPU demo's training phase (configs/demo.yaml as tools/train.py runs
    it: every epoch, SRDL's stage end, the cache fill; not the final evaluation)."""
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(
            os.path.join(REPO, "configs", "demo.yaml"),
            [
                f"data.root={root}",
                "train.progress=false",
                "train.tensorboard=false",
                f"train.output_dir={out}",
                "train.run_name=demo",
                "eval.plot=false",
            ],
        )
        trainer = Trainer(cfg, os.path.join(out, "demo"))
        start = time.perf_counter()
        trainer.loop.run_epochs(_Silent())
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "goal_seconds": 45.0,
        "epochs": cfg.train.epochs,
        "images": trainer.data.num_train,
        "precision": trainer.precision.mode,
        "cache": type(trainer.data.train_loader.dataset.dataset).__name__,
    }


def save_merged(path, results):
    """Write ``results`` over the file's previous ones: models not measured this time and a
    skipped SRDL overhead keep their earlier figures (marked with when they were taken)."""
    previous = {}
    if os.path.isfile(path):
        with open(path) as f:
            previous = json.load(f)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    for entry in results["throughput"]:
        entry["measured"] = stamp
    measured = {r["model"] for r in results["throughput"]}
    merged = dict(results)
    merged["throughput"] = results["throughput"] + [
        r for r in previous.get("throughput", []) if r["model"] not in measured
    ]
    for key in ("srdl_overhead", "demo"):
        if results.get(key) is None:
            merged[key] = previous.get(key)
        else:
            results[key]["measured"] = stamp
    write_json(path, merged)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=["small_reid", "resnet50", "densenet121"], choices=list(SIZES))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup-epochs", type=int, default=1, help="untimed epochs of each side before the timed ones")
    p.add_argument("--ids", type=int, default=40, help="synthetic identities (half are training ids)")
    p.add_argument("--overhead-epochs", type=int, default=30, help="epochs of each run (the demo's 30; 0 skips it)")
    p.add_argument("--demo", action="store_true", help="also time the CPU demo's training phase (goal: <= 45 s)")
    p.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "reid_srdl_bench_market"))
    p.add_argument("--demo-root", default=os.path.join(tempfile.gettempdir(), "reid_srdl_bench_demo"))
    p.add_argument("--json", default=result_path("bench_train"))
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    ensure_synthetic_market(args.root, num_ids=args.ids, seed=0)
    info = metadata(
        threads=torch.get_num_threads(),
        bf16_native=cpu_supports_bf16(),
        precision_auto=bf16_decision(),  # what train.precision=auto runs here, and why
        load_average_1min=os.getloadavg()[0],
    )
    print(json.dumps(info), flush=True)
    results = {"info": info, "throughput": [], "srdl_overhead": None, "demo": None}
    for model in args.models:
        results["throughput"].append(throughput(args, args.root, model))
    if args.overhead_epochs > 0:
        results["srdl_overhead"] = srdl_overhead(args, args.root)
    if args.demo:
        results["demo"] = demo_training(args.demo_root)
    out = args.json
    save_merged(out, results)
    print(f"\n{describe(info)}, {info['threads']} threads")
    print(f"precision auto -> {info['precision_auto']['auto']}: {info['precision_auto']['why']}")
    print(
        "\n| model | input | batch | reid_srdl default (precision) | reid_srdl fp32 | reid_srdl, no cache "
        "| torchreid (fp32) | default / torchreid | fp32 / torchreid | no cache / torchreid | cache fill |"
        "\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for r in results["throughput"]:
        print(
            f"| {r['model']} | {r['height']}x{r['width']} | {r['batch']} | {r['reid_srdl_img_s']:.1f} ({r['precision']}) "  # noqa: E501
            f"| {r['reid_srdl_fp32_img_s']:.1f} | {r['reid_srdl_no_cache_img_s']:.1f} | {r['torchreid_img_s']:.1f} "
            f"| {r['ratio']:.2f}x | {r['fp32_ratio']:.2f}x | {r['no_cache_ratio']:.2f}x "
            f"| {r['cache_fill_seconds']:.1f} s ({r['cache_fill_epochs']:.2f} epochs) |"
        )
    o = results["srdl_overhead"]
    if o is not None:
        print(
            f"\nSRDL vs vanilla, {o['epochs']} epochs of small_reid: {o['srdl']:.1f}s vs {o['vanilla']:.1f}s = {o['ratio']:.3f}x"  # noqa: E501
        )
    d = results["demo"]
    if d is not None:
        what = f"{d['epochs']} epochs, {d['images']} images, {d['precision']}"
        print(f"\nthe demo's training ({what}): {d['seconds']:.1f} s (goal <= {d['goal_seconds']:.0f} s)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
