#!/usr/bin/env python
"""Feature-extraction speed, side by side in one run, on the same network and images.

Three extractors embed the query + gallery images of a synthetic Market-1501 folder with
one ResNet-50 (256x128, 512-d feature layer; BN statistics calibrated and the head fitted
on the training images, see :func:`trained_like_resnet50`):

* torchreid's ``FeatureExtractor``, given OUR network (its ``model`` attribute is replaced
  by a features-only view of it; it is built with ``model_path`` pointing at a local file,
  so it downloads nothing) and called on batches of image paths, as its API intends;
* ours, exact path: ``embed_image_files`` fp32 with the standard transform (files decoded and
  resized by threads of the process, normalised a batch at a time into channels-last tensors);
* ours, fast path: ``fast=True`` (BN folded, channels-last, ``precision=auto``: bf16 autocast
  where the CPU's bf16 probe says it pays), as ``Embedder(fast=True)`` and the search tools run;
* ours, fast path through a DataLoader with ``--workers`` processes (the transform given
  explicitly): what the threaded decoding buys.

Repeats alternate the order; medians are reported.  Also: what ``precision=auto`` chose on this
CPU and why (the bf16 probe's GEMM rates, ``reid_srdl.core.precision.bf16_decision``),
Rank-1/mAP of the fast path vs the fp32 path, and the fraction of the CPU's peak FLOP rate
reached (peak derived from the ISA and measured with a large matmul, fp32 and bf16).
Issue 29's goal: ``speedup_fast_vs_torchreid`` >= 3 on every CPU.

    python benchmarks/bench_extract.py       # writes benchmarks/results/bench_extract-<cpu>.json
    python benchmarks/bench_extract.py --ids 20 --repeats 2
    python benchmarks/bench_extract.py --quick   # smoke run (a few images, one repeat)
"""

import argparse
import contextlib
import json
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
import torch.nn as nn
from bench_record import metadata, result_path, write_json

from reid_srdl.config import DataConfig
from reid_srdl.core.precision import bf16_decision
from reid_srdl.data import build_data
from reid_srdl.data.synthetic.market import make_synthetic_market
from reid_srdl.data.transforms import reid_test_transform
from reid_srdl.evaluation.metrics import evaluate_reid
from reid_srdl.inference.features import cpu_supports_bf16, embed_image_files, resolve_precision
from reid_srdl.inference.options import ExtractionOptions
from reid_srdl.models import build_model

HEIGHT, WIDTH, BATCH = 256, 128, 32


class FeaturesView(nn.Module):
    """Our net under torchreid's eval convention: forward returns the features."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)[1]


def trained_like_resnet50(train_loader, num_classes: int, calibration_batches: int, probe_steps: int) -> nn.Module:
    """ResNet-50 whose embedding separates identities, without days of CPU training:

    1. BN running statistics measured on training images (with the init statistics, mean 0
       and variance 1, eval-mode activations grow layer after layer);
    2. the head (feature layer, its BN, the ID classifier) fitted on the frozen backbone's
       pooled features of the training images (a linear probe).

    A random embedding ranks by noise, and bf16 rounding then flips near-ties; the probe
    gives the ranking margins a trained net has, so the accuracy comparison means something.
    """
    torch.manual_seed(0)
    net = build_model("resnet50", num_classes=num_classes, feature_dim=512)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average over the calibration batches
    net.train()
    with torch.no_grad():
        for i, batch in enumerate(train_loader):
            if i == calibration_batches:
                break
            net.stage_maps(batch[0])
    net.eval()
    pooled, labels = [], []
    with torch.no_grad():
        for images, label, *_ in train_loader:
            pooled.append(torch.flatten(net.head.pool(net.stage_maps(images)[-1]), 1))
            labels.append(label)
    pooled, labels = torch.cat(pooled), torch.cat(labels)
    head = net.head
    head.train()
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    for _ in range(probe_steps):
        logits = head.classifier(head.bn(head.fc(pooled)))
        loss = nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"linear probe: {len(pooled)} training images, final loss {loss.item():.3f}", flush=True)
    return net.eval()


def torchreid_extractor(net: nn.Module, tmp: str):
    # A local weight file for the resnet50 torchreid builds first (so it downloads nothing);
    # its model is then replaced by ours: same weights, same images, only the pipeline differs.
    from torchreid.reid.models import build_model as tr_build
    from torchreid.reid.utils import FeatureExtractor

    path = os.path.join(tmp, "torchreid_resnet50.pth")
    torch.save(tr_build("resnet50", num_classes=1, pretrained=False).state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extractor = FeatureExtractor(
            "resnet50", model_path=path, image_size=(HEIGHT, WIDTH), device="cpu", verbose=False
        )
    extractor.model = FeaturesView(net).eval()
    return extractor


def run_torchreid(extractor, paths):
    chunks = [extractor(paths[i : i + BATCH]) for i in range(0, len(paths), BATCH)]
    return torch.cat(chunks).numpy()


def run_ours(net, paths, **options):
    """The standard path: threads decode, batches normalised as tensors (what Embedder runs)."""
    feats, _ = embed_image_files(
        net, paths, None, ExtractionOptions(height=HEIGHT, width=WIDTH, batch_size=BATCH, **options)
    )
    return feats


def run_ours_dataloader(net, paths, workers, **options):
    """The transform given explicitly: decoded in ``workers`` DataLoader processes."""
    feats, _ = embed_image_files(
        net, paths, reid_test_transform(HEIGHT, WIDTH), ExtractionOptions(batch_size=BATCH, workers=workers, **options)
    )
    return feats


def matmul_rate(dtype, n=2048, repeats=5) -> float:
    """Measured FLOP/s of an n x n x n matmul (2 n^3 flops), median of repeats."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def conv_rate(dtype, repeats=5) -> float:
    """Measured FLOP/s of a 3x3 convolution through oneDNN (channels-last, 256 -> 256
    channels, 32 x 64x32 maps): the operation ResNet-50 spends its time in."""
    x = torch.randn(32, 256, 64, 32).contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(256, 256, 3, padding=1, bias=False).to(memory_format=torch.channels_last).eval()
    flops = 2 * 32 * 64 * 32 * 256 * 256 * 9
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == torch.bfloat16 else contextlib.nullcontext()
    times = []
    with torch.inference_mode(), ctx:
        conv(x)
        for _ in range(repeats):
            t = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - t)
    return flops / statistics.median(times)


def resnet_flops_per_image(net) -> float:
    """Multiply-adds x 2 of one 256x128 forward pass (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.randn(1, 3, HEIGHT, WIDTH))
    return float(counter.get_total_flops())


def cpu_clock_ghz() -> float:
    """Nominal clock from /proc/cpuinfo's model name or BogoMIPS/2 (KVM guests show no MHz table)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return float("nan")
    for line in text.splitlines():
        if line.startswith("bogomips"):
            return float(line.split(":")[1]) / 2000.0
    return float("nan")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a trained ResNet-50 run directory or final.pt to use instead of the probe net")
    p.add_argument("--probe-steps", type=int, default=300, help="Adam steps of the head's linear probe")
    p.add_argument("--ids", type=int, default=30, help="synthetic identities (query+gallery grow with it)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="DataLoader processes of the 'ours fast, DataLoader' run")
    p.add_argument("--quick", action="store_true", help="smoke run: 6 identities, one repeat, a short probe")
    p.add_argument("--out", default=result_path("bench_extract"))
    args = p.parse_args(argv)
    if args.quick:
        args.ids, args.repeats, args.probe_steps = 6, 1, 5
    decision = bf16_decision()  # what precision=auto runs here, and why (logged, and recorded below)
    print(f"precision auto -> {decision['auto']}: {decision['why']}", flush=True)

    tmp = tempfile.mkdtemp(prefix="bench_extract_")
    make_synthetic_market(tmp, num_ids=args.ids, seed=0)
    data = build_data(
        DataConfig(
            name="market1501",
            root=tmp,
            synthetic=False,
            height=HEIGHT,
            width=WIDTH,
            batch_size=BATCH,
            test_batch_size=BATCH,
            workers=0,
        )
    )
    if args.checkpoint:
        from reid_srdl.models.model_file import load_model_file

        net, _ = load_model_file(args.checkpoint)
    else:
        net = trained_like_resnet50(
            data.train_loader, data.num_classes, calibration_batches=4, probe_steps=args.probe_steps
        )
    paths = data.query.paths + data.gallery.paths
    nq = len(data.query.paths)
    print(
        f"{len(paths)} images ({nq} query), ResNet-50 {HEIGHT}x{WIDTH}, batch {BATCH}, "
        f"{torch.get_num_threads()} threads, bf16 native: {cpu_supports_bf16()}",
        flush=True,
    )

    extractor = torchreid_extractor(net, tmp)
    runs = {
        "torchreid FeatureExtractor": lambda: run_torchreid(extractor, paths),
        "ours fp32": lambda: run_ours(net, paths),
        "ours fast": lambda: run_ours(net, paths, fast=True),
        "ours fast, DataLoader": lambda: run_ours_dataloader(net, paths, args.workers, fast=True),
    }
    times = {name: [] for name in runs}
    feats = {}
    for r in range(args.repeats):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            t = time.perf_counter()
            feats[name] = runs[name]()
            times[name].append(time.perf_counter() - t)
            print(f"  repeat {r}: {name}: {len(paths) / times[name][-1]:.2f} images/s", flush=True)

    speed = {name: len(paths) / statistics.median(t) for name, t in times.items()}
    ids = (data.query.pids, data.gallery.pids, data.query.camids, data.gallery.camids)
    metrics = {}
    for name in ("ours fp32", "ours fast", "torchreid FeatureExtractor"):
        f = feats[name]
        res = evaluate_reid(f[:nq], f[nq:], *ids)
        metrics[name] = {"rank1": float(res.cmc[0]), "mAP": float(res.mAP)}

    flops_per_image = resnet_flops_per_image(net)
    ghz = cpu_clock_ghz()
    cores = os.cpu_count()
    # AVX-512: 2 FMA units x 16 fp32 lanes x 2 flops per cycle and core.  AMX: one TMUL per
    # core, 16x32 bf16 by 32x16 bf16 tile product = 1024 FMAs = 2048 flops per cycle.
    isa_peak = {"fp32": cores * ghz * 1e9 * 2 * 16 * 2, "bf16": cores * ghz * 1e9 * 2048}
    matmul = {"fp32": matmul_rate(torch.float32), "bf16": matmul_rate(torch.bfloat16)}
    conv3x3 = {"fp32": conv_rate(torch.float32), "bf16": conv_rate(torch.bfloat16)}
    measured_peak = {k: max(matmul[k], conv3x3[k]) for k in matmul}
    fast_precision = resolve_precision("auto", "cpu")
    achieved = {
        "ours fp32": speed["ours fp32"] * flops_per_image,
        "ours fast": speed["ours fast"] * flops_per_image,
        "torchreid FeatureExtractor": speed["torchreid FeatureExtractor"] * flops_per_image,
    }
    result = {
        "images": len(paths),
        "query": nq,
        "model": "resnet50",
        "height": HEIGHT,
        "width": WIDTH,
        "batch": BATCH,
        "workers": args.workers,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "fast_precision": fast_precision,
        "precision_auto": decision,  # what auto chose on this CPU and why
        "images_per_second": speed,
        "seconds": times,
        "speedup_fast_vs_torchreid": speed["ours fast"] / speed["torchreid FeatureExtractor"],
        # The load of the shared machine changes between repeats; ratios within one repeat
        # (the three runs back to back) are steadier than ratios of medians.
        "speedup_fast_vs_torchreid_per_repeat": [
            a / b for a, b in zip(times["torchreid FeatureExtractor"], times["ours fast"])
        ],
        "speedup_fp32_vs_torchreid": speed["ours fp32"] / speed["torchreid FeatureExtractor"],
        "speedup_fast_dataloader_vs_torchreid": speed["ours fast, DataLoader"] / speed["torchreid FeatureExtractor"],
        "max_abs_feature_diff_threads_vs_dataloader": float(
            np.abs(feats["ours fast"] - feats["ours fast, DataLoader"]).max()
        ),
        "metrics": metrics,
        "rank1_diff_points": 100 * abs(metrics["ours fast"]["rank1"] - metrics["ours fp32"]["rank1"]),
        "mAP_diff_points": 100 * abs(metrics["ours fast"]["mAP"] - metrics["ours fp32"]["mAP"]),
        "max_abs_feature_diff_fast_vs_fp32": float(np.abs(feats["ours fast"] - feats["ours fp32"]).max()),
        "flops_per_image": flops_per_image,
        "cpu_clock_ghz_bogomips_over_2": ghz,
        "peak_flops_isa": isa_peak,
        "measured_flops_matmul_2048": matmul,
        "measured_flops_conv3x3_256": conv3x3,
        "peak_flops_measured": measured_peak,
        "achieved_flops": achieved,
        "fraction_of_isa_peak": {
            "ours fp32 (fp32 peak)": achieved["ours fp32"] / isa_peak["fp32"],
            f"ours fast ({fast_precision} peak)": achieved["ours fast"] / isa_peak[fast_precision],
            "torchreid (fp32 peak)": achieved["torchreid FeatureExtractor"] / isa_peak["fp32"],
        },
        "fraction_of_measured_peak": {
            "ours fp32 (fp32)": achieved["ours fp32"] / measured_peak["fp32"],
            f"ours fast ({fast_precision})": achieved["ours fast"] / measured_peak[fast_precision],
            "torchreid (fp32)": achieved["torchreid FeatureExtractor"] / measured_peak["fp32"],
        },
        "load_average_at_end": os.getloadavg(),
        "environment": metadata(),
    }
    result = {"benchmark": "bench_extract", **result}
    write_json(args.out, result)
    print(f"wrote {args.out}", flush=True)
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "images_per_second",
                    "speedup_fast_vs_torchreid",
                    "speedup_fast_dataloader_vs_torchreid",
                    "precision_auto",
                    "metrics",
                    "rank1_diff_points",
                    "mAP_diff_points",
                    "fraction_of_isa_peak",
                    "fraction_of_measured_peak",
                    "peak_flops_measured",
                    "speedup_fast_vs_torchreid_per_repeat",
                )
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
