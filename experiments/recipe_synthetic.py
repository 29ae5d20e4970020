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

    python experiments/recipe_synthetic.py                                   # the documented run
    python experiments/recipe_synthetic.py --models small_reid --seeds 0 --epochs 2 --ids 16 --series smoke

Each finished run is a row of experiments/results/recipe_synthetic.jsonl (a run with a row, or
a finished run folder with the same settings, is not trained again, so an interrupted
experiment continues where it stopped); the run folders and the rendered data live under
experiments/runs/recipe_synthetic/<series>/, outside git.  ``--tables-only`` rewrites the
table from the results file alone.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from experiment_runs import (
    add_record_options,
    command_line,
    finish_options,
    folder_row,
    guarded,
    machines_line,
    mean_std,
    paired_cell,
    publish,
    recorded,
    run_all,
    save_row,
    series_rows,
)

STUDY = "recipe_synthetic"
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
        f"data.root={os.path.join(args.runs, 'data')}",
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
        f"train.output_dir={os.path.join(args.runs, model)}",
        f"train.run_name={name}",
        "train.progress=false",
        "train.tensorboard=false",
        "eval.plot=false",
        "eval.normalize=true",
        *extra,
    ]


def planned(args):
    """``[(run, overrides, dependencies)]``: every model x seed x recipe x method; a run is
    named ``<model>/<method>_<recipe>_seed<s>`` (its folder: ``<runs>/<model>/<name>``)."""
    return [
        (
            f"{model}/{method}_{recipe}_seed{seed}",
            overrides(args, model, recipe, method, seed, f"{method}_{recipe}_seed{seed}"),
            [],
        )
        for model in args.models
        for seed in args.seeds
        for recipe in args.recipes
        for method in METHODS
    ]


def folder_record(run_dir):
    """The table record of a finished run folder: single-query Rank-1 / mAP of the deployed
    network and of SRDL's ensemble, train time and the deployed network's parameters."""
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
    add_record_options(p, STUDY, "ids120")
    args = finish_options(p.parse_args(), STUDY)
    plan = planned(args)
    rows = recorded(args.results, args.series, plan, args.tables_only)
    if not args.tables_only and len(rows) < len(plan):
        from reid_srdl.data.synthetic.market import ensure_synthetic_market

        os.makedirs(args.runs, exist_ok=True)
        ensure_synthetic_market(os.path.join(args.runs, "data"), num_ids=args.ids, seed=0)  # once, before the jobs

        def finished(name):
            run_dir = os.path.join(args.runs, name)
            save_row(args.results, folder_row(run_dir, args.series, name, folder_record(run_dir)))

        run_all(plan, args.runs, os.path.join(args.runs, "train.log"), args.jobs, args.threads, set(rows), finished)
        rows = series_rows(args.results, args.series)
    write_table(args, rows)


def write_table(args, rows):
    """The series' generated block of the doc, from ``rows`` (run name -> results-file row) alone."""

    def records(model, method, recipe):
        return [rows[f"{model}/{method}_{recipe}_seed{s}"]["record"] for s in args.seeds]

    def cell(recs, key, fmt="{:.2f} ± {:.2f}", scale=100.0):
        vals = [r[key] * scale for r in recs if r.get(key) is not None]
        return fmt.format(*mean_std(vals)) if vals else "-"

    def minus(recs, base, same):
        return "-" if same else paired_cell([r["rank1"] for r in recs], [r["rank1"] for r in base])

    cmd = command_line(
        STUDY,
        [
            f"--models {' '.join(args.models)}",
            f"--recipes {' '.join(args.recipes)}",
            f"--seeds {' '.join(map(str, args.seeds))}",
            f"--epochs {args.epochs}",
            f"--ids {args.ids}",
            f"--batch-size {args.batch_size}",
            f"--jobs {args.jobs}",
            f"--threads {args.threads}",
        ],
        args,
    )
    lines = [
        f"Synthetic re-id set ({args.ids} identities, half of them to train on), {args.epochs} epochs from random",
        f"initialisation (SRDL: two stages of {args.epochs // 2}), batch {args.batch_size}, single query, cosine "
        "distance; mean ± std over seeds",
        f"{', '.join(map(str, args.seeds))}; paired differences of Rank-1 per seed (points, mean ± std [paired-t 95% "
        f"interval]); train times per run, {args.jobs} run(s) at a time, {args.threads} thread(s) each.",
        "",
        "```",
        cmd,
        "```",
        "",
        "| model | method | recipe | Rank-1 (%) | mAP (%) | ensemble Rank-1 (%) | ensemble mAP (%) | Rank-1 minus "
        "vanilla ce | Rank-1 minus vanilla, same recipe | train time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in args.models:
        for recipe in args.recipes:
            for method in METHODS:
                recs = records(model, method, recipe)
                ce = records(model, "vanilla", "ce")
                same = records(model, "vanilla", recipe)
                lines.append(
                    f"| {model} | {method} | {recipe} | {cell(recs, 'rank1')} | {cell(recs, 'mAP')} | "
                    f"{cell(recs, 'ensemble_rank1')} | {cell(recs, 'ensemble_mAP')} | "
                    f"{minus(recs, ce, method == 'vanilla' and recipe == 'ce')} | "
                    f"{minus(recs, same, method == 'vanilla')} | {cell(recs, 'seconds', '{:.0f} ± {:.0f}', 1.0)} |"
                )
    names = [name for name, _o, _d in planned(args)]
    lines += ["", machines_line(rows, names)]
    publish(args, lines)


if __name__ == "__main__":
    guarded(main)
