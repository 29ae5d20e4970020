#!/usr/bin/env python
"""Cross-domain vs in-domain re-id on the synthetic sets (numbers are synthetic, not real data).

Trains on the synthetic Market-1501 (and, for comparison, on Market-1501 + DukeMTMC-reID)
and evaluates each run on both: Market-1501 is in-domain, DukeMTMC-reID (other people,
other cameras, 8 instead of 6) is cross-domain.  Writes the raw results as JSON and prints
the Markdown table quoted in docs/datasets.md, with machine, date and commit.

    python benchmarks/cross_domain_synthetic.py                       # demo recipe: 120 ids, 30 epochs
    python benchmarks/cross_domain_synthetic.py --methods vanilla srdl --seeds 0 1 2
    python benchmarks/cross_domain_synthetic.py --ids 12 --epochs 2 --max-batches 2 --height 64 --width 32  # smoke
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from reid_srdl.config import load_config  # noqa: E402
from reid_srdl.data.synthetic_reid import ensure_synthetic  # noqa: E402
from reid_srdl.engine.trainer import Trainer  # noqa: E402

TARGETS = ("market1501", "dukemtmcreid")
TRAINING = {"market1501": "[market1501]", "market1501+dukemtmcreid": "[market1501,dukemtmcreid]"}


def machine() -> dict:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": commit,
    }


def run(args, sources: str, method: str, seed: int, out: str) -> dict:
    cfg = load_config(
        None,
        [
            f"data.root={args.root}",
            "data.synthetic=false",
            f"data.sources={sources}",
            f"data.targets=[{','.join(TARGETS)}]",
            f"data.height={args.height}",
            f"data.width={args.width}",
            f"data.workers={args.workers}",
            f"model.name={args.model}",
            f"method.name={method}",
            f"train.epochs={args.epochs}",
            f"train.max_batches={args.max_batches}",
            f"train.seed={seed}",
            "train.progress=false",
            "train.tensorboard=false",
            f"train.output_dir={out}",
            f"train.run_name={method}_{sources.strip('[]').replace(',', '+')}_s{seed}",
            "eval.plot=false",
        ],
    )
    summary = Trainer(cfg, os.path.join(out, cfg.train.run_name)).fit()
    deployed = summary["results"]["deployed"]
    return {t: {k: deployed[f"{t}/single_query"][k] for k in ("rank1", "mAP")} for t in TARGETS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["vanilla", "srdl"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--model", default="small_reid")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--max-batches", type=int, default=0, help="batches per epoch (0 = all; for smoke runs)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--ids", type=int, default=120, help="synthetic identities per data set (the demo's 120)")
    p.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "reid_srdl_cross_domain"))
    p.add_argument("--json", default=os.path.join(REPO, "benchmarks", "results", "cross_domain_synthetic.json"))
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    for name in TARGETS:
        ensure_synthetic(name, args.root, num_ids=args.ids, seed=0)
    out = tempfile.mkdtemp(prefix="cross_domain-")
    rows = []
    for method in args.methods:
        for label, sources in TRAINING.items():
            per_seed = [run(args, sources, method, seed, out) for seed in args.seeds]
            mean = {t: {k: sum(r[t][k] for r in per_seed) / len(per_seed) for k in ("rank1", "mAP")} for t in TARGETS}
            rows.append(
                {"method": method, "trained_on": label, "seeds": args.seeds, "mean": mean, "per_seed": per_seed}
            )
            print(
                f"  {method} on {label}: "
                + ", ".join(f"{t} Rank-1 {100 * mean[t]['rank1']:.1f} mAP {100 * mean[t]['mAP']:.1f}" for t in TARGETS),
                flush=True,
            )
    result = {
        **machine(),
        "ids_per_set": args.ids,
        "model": args.model,
        "input": f"{args.height}x{args.width}",
        "epochs": args.epochs,
        "max_batches": args.max_batches,
        "rows": rows,
    }
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    tmp = args.json + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, args.json)
    print(
        f"\nSynthetic data ({args.ids} identities per set), {args.model} {args.height}x{args.width}, "
        f"{args.epochs} epochs, seeds {args.seeds}; {result['machine']}, {result['date']}, "
        f"commit {result['commit']}\n"
    )
    print("| method | trained on | Market-1501 (in-domain) R1 / mAP | DukeMTMC-reID (cross-domain) R1 / mAP |")
    print("|---|---|---|---|")
    for r in rows:
        m, d = r["mean"]["market1501"], r["mean"]["dukemtmcreid"]
        print(
            f"| {r['method']} | {r['trained_on']} | {100 * m['rank1']:.1f} / {100 * m['mAP']:.1f} | "
            f"{100 * d['rank1']:.1f} / {100 * d['mAP']:.1f} |"
        )


if __name__ == "__main__":
    main()
