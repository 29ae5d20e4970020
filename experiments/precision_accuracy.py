#!/usr/bin/env python
"""Does the training precision cost accuracy?  The main job (``python tools/train.py``: SRDL,
small_reid on the embedded synthetic Market-1501 set, 2 x 15 epochs) trained with each
``train.precision`` on the same seeds; single-query Rank-1 / mAP of the deployed network as
mean +- std, and the paired difference to fp32 per seed with its paired-t 95% interval.

``auto`` is what the trainer picks on this machine (recorded per run: fp32 + channels-last
where bf16 does not pay, bf16 + channels-last where it does); ``bf16`` forces bf16 autocast
(only where the CPU runs it natively: emulated bf16 takes hours).

    python benchmarks/precision_accuracy.py                     # seeds 0 1 2, fp32 / auto / bf16
    python benchmarks/precision_accuracy.py --seeds 0 1 2 3 4 --precisions fp32 bf16

Runs are cached under --out (a finished run is not trained again).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from experiment_runs import REPO, mean_std, paired_cell, run_all, write_text_atomic  # noqa: E402

from reid_srdl.core.precision import cpu_supports_bf16  # noqa: E402

METRICS = (("rank1", "Rank-1"), ("mAP", "mAP"))


def overrides(args, precision, seed, name):
    return [
        f"train.precision={precision}",
        f"train.seed={seed}",
        f"train.output_dir={args.out}",
        f"train.run_name={name}",
        "train.progress=false",
        "train.tensorboard=false",
        "eval.plot=false",
    ]


def record(args, precision, seed):
    with open(os.path.join(args.out, f"{precision}_seed{seed}", "metrics.json")) as f:
        m = json.load(f)
    single = m["results"]["deployed"]["single_query"]
    used = m["precision"] + (" + channels-last" if m.get("channels_last") else "")
    return {"rank1": single["rank1"], "mAP": single["mAP"], "seconds": m["train_seconds"], "used": used}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--precisions", nargs="+", default=["fp32", "auto", "bf16"], choices=["fp32", "auto", "bf16"])
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (1: the train times are comparable)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "precision_accuracy"))
    p.add_argument("--table", default=os.path.join(REPO, "docs", "experiments_precision.md"))
    args = p.parse_args()
    if "fp32" not in args.precisions:
        p.error("--precisions must include fp32 (the reference of the paired differences)")
    precisions = [x for x in args.precisions if x != "bf16" or cpu_supports_bf16()]
    skipped = sorted(set(args.precisions) - set(precisions))
    os.makedirs(args.out, exist_ok=True)
    plan = [
        (f"{prec}_seed{seed}", overrides(args, prec, seed, f"{prec}_seed{seed}"), [])
        for seed in args.seeds
        for prec in precisions
    ]
    started = time.time()
    run_all(plan, args.out, os.path.join(args.out, "train.log"), args.jobs, args.threads)
    rows = {prec: [record(args, prec, s) for s in args.seeds] for prec in precisions}
    cmd = (
        f"python benchmarks/precision_accuracy.py --seeds {' '.join(map(str, args.seeds))} "
        f"--precisions {' '.join(args.precisions)} --jobs {args.jobs} --threads {args.threads} "
        f"--out {os.path.relpath(args.out, REPO)} --table {os.path.relpath(args.table, REPO)}"
    )
    lines = [
        "# Training precision and accuracy: the main job in fp32, auto and bf16",
        "",
        "`python tools/train.py` (SRDL, small_reid, the embedded **synthetic** Market-1501 set, 2 x 15 epochs)",
        f"with `train.precision` = each setting below, seeds {', '.join(map(str, args.seeds))} (seed s of every",
        "setting starts from the same weights and sees the same batches); single-query Rank-1 / mAP of the",
        "deployed network, mean ± std over seeds, and the paired difference to fp32 (points, mean ± std",
        "[paired-t 95% interval]).",
        "",
        "```",
        cmd,
        "```",
        "",
        "| train.precision | ran as | Rank-1 (%) | Rank-1 minus fp32 | mAP (%) | mAP minus fp32 | train time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for prec, recs in rows.items():
        cells = []
        for key, _ in METRICS:
            mean, std = mean_std([100 * r[key] for r in recs])
            base = [r[key] for r in rows["fp32"]]
            cells += [f"{mean:.2f} ± {std:.2f}", "-" if prec == "fp32" else paired_cell([r[key] for r in recs], base)]
        seconds = mean_std([r["seconds"] for r in recs])
        used = ", ".join(sorted({r["used"] for r in recs}))
        lines.append(f"| {prec} | {used} | " + " | ".join(cells) + f" | {seconds[0]:.0f} ± {seconds[1]:.0f} |")
    if skipped:
        lines += ["", f"Not run: {', '.join(skipped)} (this CPU has no native bf16)."]
    lines += ["", f"Wall time of the whole experiment: {(time.time() - started) / 60:.1f} min."]
    write_text_atomic(args.table, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
