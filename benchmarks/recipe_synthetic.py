#!/usr/bin/env python
"""Plain cross-entropy vs the BoT recipe, and SRDL on top of each, on the SYNTHETIC re-id set.

The data is reid_srdl's synthetic Market-1501 (tools/make_synthetic_market.py: rendered
people, not real images), so the numbers compare recipes and methods with each other; they
say nothing about Market-1501 itself.  Every variant trains the same network for the same
epochs from random initialisation (no ImageNet weights), several seeds, and reports
single-query Rank-1 / mAP as mean +- std; SRDL also its stage-1 + stage-2 ensemble.

- ce:  the demo's settings: SGD Nesterov lr 0.1, wd 2e-4, x0.1 at 50/75 %, random batches,
       CE, the Linear + BN feature layer (model.feature_dim, default 128).
- bot: BoT's settings (configs/market1501/bot_resnet50.yaml) scaled to the epochs: Adam lr
       3.5e-4, wd 5e-4, linear warm-up over epochs/12 (BoT: 10 of 120), x0.1 at 40/120 and
       70/120, P x K = batch/4 x 4 identity batches, random erasing 0.5, label smoothing 0.1,
       triplet (margin 0.3), BNNeck on the pooled feature.
- bot_sgd: BoT's regularisers (P x K batches, random erasing, label smoothing, triplet,
       BNNeck) with ce's optimiser and schedule.
Both are evaluated alike (cosine distance: eval.normalize=true, as BoT tests).

    python benchmarks/recipe_synthetic.py                                   # the documented run
    python benchmarks/recipe_synthetic.py --models small_reid --seeds 0 --epochs 2 --ids 16   # smoke
    python benchmarks/recipe_synthetic.py --from-summary    # the tables and paired figures from the summary file

The paired figures (per seed, Rank-1 points, mean [paired-t 95% interval], one decimal, as the
README quotes them) are printed by :func:`comparisons` from the summary file, never typed.

Runs are cached: a run whose folder has metrics.json (with the same settings) is not trained
again, so an interrupted experiment continues where it stopped.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from experiment_runs import mean_std, run  # noqa: E402  (cached runs, one process each)

RECIPES = {
    "ce": [],
    "bot": [
        "data.sampler=identity",
        "data.num_instances=4",
        "data.random_erasing=0.5",
        "model.neck=bnneck",
        "model.feature_dim=0",
        "loss.label_smoothing=0.1",
        "loss.triplet_weight=1.0",
        "loss.triplet_margin=0.3",
        "optim.name=adam",
        "optim.lr=0.00035",
        "optim.weight_decay=0.0005",
        "optim.milestones=[0.3334,0.5834]",
        "optim.gamma=0.1",
    ],
}
# BoT's regularisers with the "ce" optimiser (SGD Nesterov lr 0.1, wd 2e-4, x0.1 at 50/75 %):
# separates what the tricks do from what BoT's Adam at lr 3.5e-4 (tuned for an ImageNet-
# initialised ResNet-50) does to a network trained from scratch for few epochs.
RECIPES["bot_sgd"] = [o for o in RECIPES["bot"] if not o.startswith("optim.")]
METHODS = ("vanilla", "srdl")
SIZES = {"small_reid": (128, 64), "osnet_x0_25": (128, 64)}


def overrides(args, model, recipe, method, seed, name):
    height, width = SIZES.get(model, (128, 64))
    extra = list(RECIPES[recipe])
    if recipe == "bot":
        # BoT's 10 of 120 warm-up epochs, per stage for SRDL (each stage has its own schedule).
        stage_epochs = args.epochs // 2 if method == "srdl" else args.epochs
        extra.append(f"optim.warmup_epochs={max(1, round(stage_epochs / 12))}")
    return [
        f"data.root={os.path.join(args.out, 'data')}",
        "data.synthetic=true",
        f"data.synthetic_ids={args.ids}",
        f"data.height={height}",
        f"data.width={width}",
        f"data.batch_size={args.batch_size}",
        f"data.workers={args.workers}",
        f"model.name={model}",
        f"method.name={method}",
        f"train.epochs={args.epochs}",
        f"train.seed={seed}",
        f"train.output_dir={os.path.join(args.out, model)}",
        f"train.run_name={name}",
        "train.progress=false",
        "train.tensorboard=false",
        "eval.plot=false",
        "eval.normalize=true",
        *extra,
    ]


def planned(args):
    for model in args.models:
        for seed in args.seeds:
            for recipe in args.recipes:
                for method in METHODS:
                    name = f"{method}_{recipe}_seed{seed}"
                    yield model, recipe, method, seed, name


def machine(args):
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    import torch

    from reid_srdl.core.environment import cpu_model

    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": git.stdout.strip(),
        "machine": cpu_model(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "jobs": args.jobs,
        "threads_per_run": args.threads,
    }


def collect(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as f:
        m = json.load(f)
    sq = m["results"]["deployed"]["single_query"]
    rec = {
        "rank1": sq["rank1"],
        "mAP": sq["mAP"],
        "seconds": m["train_seconds"],
        "parameters": m.get("deployed_parameters"),
    }
    if "ensemble" in m["results"]:
        rec["ensemble_rank1"] = m["results"]["ensemble"]["single_query"]["rank1"]
        rec["ensemble_mAP"] = m["results"]["ensemble"]["single_query"]["mAP"]
    return rec


def paired_points(a, b):
    """``+4.3 [-12.2, +20.8]``: mean paired difference of two lists of rates, in points, with
    its paired-t 95% interval, one decimal."""
    from reid_srdl.evaluation.stats import paired_difference

    d = paired_difference([100 * x for x in a], [100 * x for x in b])
    if d.n < 2:  # one seed: no interval
        return f"{d.mean:+.1f}"
    return f"{d.mean:+.1f} [{d.ci_low:+.1f}, {d.ci_high:+.1f}]"


def comparisons(rows, key="rank1"):
    """Lines of paired differences: each recipe against CE (vanilla), SRDL against vanilla per recipe."""
    models = sorted({k.split("/")[0] for k in rows})
    recipes = [r for r in RECIPES if any(k.endswith("/" + r) for k in rows)]
    lines = []

    def values(model, method, recipe):
        return [r[key] for r in rows.get(f"{model}/{method}/{recipe}", [])]

    for recipe in recipes[1:]:
        cells = [
            f"{m} {paired_points(values(m, 'vanilla', recipe), values(m, 'vanilla', 'ce'))}"
            for m in models
            if values(m, "vanilla", recipe) and values(m, "vanilla", "ce")
        ]
        lines.append(f"- {recipe} minus ce (vanilla), {key}: " + "; ".join(cells))
    for recipe in recipes:
        cells = [
            f"{m} {paired_points(values(m, 'srdl', recipe), values(m, 'vanilla', recipe))}"
            for m in models
            if values(m, "srdl", recipe) and values(m, "vanilla", recipe)
        ]
        lines.append(f"- srdl minus vanilla with {recipe}, {key}: " + "; ".join(cells))
    return lines


def print_tables(summary, elapsed=None):
    rows = summary["rows"]

    def cell(recs, key, fmt="{:.2f} ± {:.2f}", scale=100.0):
        vals = [r[key] * scale for r in recs if r.get(key) is not None]
        return fmt.format(*mean_std(vals)) if vals else "-"

    print(
        f"\nSynthetic re-id set ({summary['ids']} identities), {summary['epochs']} epochs, seeds {summary['seeds']}; "
        f"{summary['machine']}\n"
    )
    print("| model | method | recipe | Rank-1 (%) | mAP (%) | ensemble Rank-1 | ensemble mAP | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for key, recs in rows.items():
        model, method, recipe = key.split("/")
        print(
            f"| {model} | {method} | {recipe} | {cell(recs, 'rank1')} | {cell(recs, 'mAP')} | "
            f"{cell(recs, 'ensemble_rank1')} | {cell(recs, 'ensemble_mAP')} | "
            f"{cell(recs, 'seconds', '{:.0f} ± {:.0f}', 1.0)} |"
        )
    print("\nPaired differences per seed (Rank-1 points, mean [paired-t 95% interval]):\n")
    print("\n".join(comparisons(rows)))
    if elapsed is not None:
        print(f"\nwall time of this run of the script: {elapsed / 60:.1f} min (cached runs count 0)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(SIZES))
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30, help="the demo's 30 (SRDL: two stages of 15)")
    p.add_argument("--ids", type=int, default=120, help="synthetic identities (half of them train)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "recipe_synthetic"))
    p.add_argument("--from-summary", action="store_true", help="print the tables from the summary file; train nothing")
    args = p.parse_args()
    path = os.path.join(os.path.dirname(args.out), os.path.basename(args.out) + "_summary.json")
    if args.from_summary:
        with open(path) as f:
            print_tables(json.load(f))
        return
    os.makedirs(args.out, exist_ok=True)
    from reid_srdl.data.synthetic import ensure_synthetic_market

    ensure_synthetic_market(os.path.join(args.out, "data"), num_ids=args.ids, seed=0)  # once, before the jobs
    log = os.path.join(args.out, "train.log")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    plan = list(planned(args))
    started = time.time()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        jobs = [
            pool.submit(run, overrides(args, m, r, meth, s, n), os.path.join(args.out, m, n), log, env)
            for m, r, meth, s, n in plan
        ]
        for job in jobs:
            job.result()  # the first failed run stops the script with its message

    rows = {}
    for model, recipe, method, _seed, name in plan:
        rows.setdefault(f"{model}/{method}/{recipe}", []).append(collect(os.path.join(args.out, model, name)))
    summary = {"machine": machine(args), "epochs": args.epochs, "ids": args.ids, "seeds": args.seeds, "rows": rows}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(tmp, path)
    print_tables(summary, time.time() - started)


if __name__ == "__main__":
    main()
