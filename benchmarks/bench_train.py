#!/usr/bin/env python
"""Training speed, side by side in one run.

1. Images/s of one training epoch: reid_srdl's trainer with its default precision
   (``train.precision=auto``: bf16 autocast + channels-last where the CPU runs bf16
   natively, else fp32) and with ``train.precision=fp32``, vs torchreid's
   ``ImageSoftmaxEngine`` as shipped (fp32) on the SAME network (ours, wrapped to torchreid's
   train/eval convention), the same data folder, batch size, image size and number of
   workers.  All include data loading; the order alternates over repeats and the median is
   reported.
2. SRDL vs vanilla wall time at equal epochs (SRDL's extra cost is the stage-1 logit
   extraction; its second stage replaces, not adds to, epochs).

    python benchmarks/bench_train.py                     # small_reid 128x64 and resnet50 256x128
    python benchmarks/bench_train.py --models small_reid --repeats 3
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
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from bench_record import describe, metadata, result_path, write_json  # noqa: E402

from reid_srdl.config import load_config  # noqa: E402
from reid_srdl.core.precision import cpu_supports_bf16  # noqa: E402
from reid_srdl.data.synthetic import ensure_synthetic_market  # noqa: E402
from reid_srdl.engine.trainer import Trainer, build_optimizer  # noqa: E402

SIZES = {"small_reid": (128, 64), "resnet50": (256, 128), "densenet121": (256, 128)}


class TorchreidView(nn.Module):
    """Our Net under torchreid's convention: logits in train mode, features in eval mode."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        logits, features = self.net(x)
        return logits if self.training else features


def our_trainer(root, model, height, width, batch, workers, epochs=1, method="vanilla", out=None, precision="auto"):
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
    # torchreid trains a copy of the same initial network in its own layout (NCHW, fp32).
    engine, dm = torchreid_engine(
        root, copy.deepcopy(ours_fp32.method.trainable), height, width, args.batch_size, args.workers
    )
    assert len(dm.train_loader) == len(ours.data.train_loader), "both sides must see the same batches"
    rates = {"reid_srdl": [], "reid_srdl_fp32": [], "torchreid": []}
    for r in range(args.repeats):
        order = [
            ("reid_srdl", lambda: time_ours(ours)[0]),
            ("reid_srdl_fp32", lambda: time_ours(ours_fp32)[0]),
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
        "torchreid_img_s": med["torchreid"],
        "ratio": med["reid_srdl"] / med["torchreid"],
        "fp32_ratio": med["reid_srdl_fp32"] / med["torchreid"],
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
    if results["srdl_overhead"] is None:
        merged["srdl_overhead"] = previous.get("srdl_overhead")
    elif results["srdl_overhead"] is not None:
        results["srdl_overhead"]["measured"] = stamp
    write_json(path, merged)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["small_reid", "resnet50"], choices=list(SIZES))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ids", type=int, default=40, help="synthetic identities (half are training ids)")
    p.add_argument("--overhead-epochs", type=int, default=30, help="epochs of each run (the demo's 30; 0 skips it)")
    p.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "reid_srdl_bench_market"))
    p.add_argument("--json", default=result_path("bench_train"))
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    ensure_synthetic_market(args.root, num_ids=args.ids, seed=0)
    info = metadata(threads=torch.get_num_threads(), bf16_native=cpu_supports_bf16())
    print(json.dumps(info), flush=True)
    results = {"info": info, "throughput": [], "srdl_overhead": None}
    for model in args.models:
        results["throughput"].append(throughput(args, args.root, model))
    if args.overhead_epochs > 0:
        results["srdl_overhead"] = srdl_overhead(args, args.root)
    save_merged(args.json, results)
    print(f"\n{describe(info)}, {info['threads']} threads")
    print(
        "\n| model | input | batch | reid_srdl default (precision) | reid_srdl fp32 | torchreid (fp32) | default / torchreid "  # noqa: E501
        "| fp32 / torchreid |\n|---|---|---|---|---|---|---|---|"
    )
    for r in results["throughput"]:
        print(
            f"| {r['model']} | {r['height']}x{r['width']} | {r['batch']} | {r['reid_srdl_img_s']:.1f} ({r['precision']}) "  # noqa: E501
            f"| {r['reid_srdl_fp32_img_s']:.1f} | {r['torchreid_img_s']:.1f} | {r['ratio']:.2f}x | {r['fp32_ratio']:.2f}x |"  # noqa: E501
        )
    o = results["srdl_overhead"]
    if o is not None:
        print(
            f"\nSRDL vs vanilla, {o['epochs']} epochs of small_reid: {o['srdl']:.1f}s vs {o['vanilla']:.1f}s = {o['ratio']:.3f}x"  # noqa: E501
        )


if __name__ == "__main__":
    main()
