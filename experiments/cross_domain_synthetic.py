#!/usr/bin/env python
"""Cross-domain vs in-domain re-id on the synthetic sets (numbers are synthetic, not real data).

Trains on the synthetic Market-1501 (and, for comparison, on Market-1501 + DukeMTMC-reID)
and evaluates each run on both: Market-1501 is in-domain, DukeMTMC-reID (other people,
other cameras, 8 instead of 6) is cross-domain.  Each finished run is a row of
experiments/results/cross_domain_synthetic.jsonl (a run with a row is not trained again);
the table, with the machines of the runs, is the generated block of
experiments/cross_domain_synthetic.md, rewritten from the results file alone.

    python experiments/cross_domain_synthetic.py                       # demo recipe: 120 ids, 30 epochs
    python experiments/cross_domain_synthetic.py --methods vanilla srdl --seeds 0 1 2
    python experiments/cross_domain_synthetic.py --ids 12 --epochs 2 --max-batches 2 --height 64 --width 32 \
        --series smoke --results /tmp/smoke.jsonl --table /tmp/smoke.md                # smoke
"""

import argparse
import os
import sys
import tempfile
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from experiment_runs import (
    add_record_options,
    command_line,
    finish_options,
    folder_row,
    guarded,
    machines_line,
    publish,
    recorded,
    save_row,
)

STUDY = "cross_domain_synthetic"
TARGETS = ("market1501", "dukemtmcreid")
TRAINING = {"market1501": "[market1501]", "market1501+dukemtmcreid": "[market1501,dukemtmcreid]"}


def run_name(method, label, seed):
    return f"{method}_{label}_seed{seed}"


def overrides(args, sources, method, seed, name):
    return [
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
        f"train.output_dir={args.runs}",
        f"train.run_name={name}",
        "eval.plot=false",
    ]


def planned(args):
    return [
        (run_name(method, label, seed), overrides(args, sources, method, seed, run_name(method, label, seed)), [])
        for method in args.methods
        for label, sources in TRAINING.items()
        for seed in args.seeds
    ]


def train(run_dir, over):
    """One run in this process (the trainer writes config.yaml, metrics.json and metrics.jsonl)."""
    from reid_srdl import load_config
    from reid_srdl.engine.trainer import Trainer

    Trainer(load_config(None, over), run_dir).fit()


def folder_record(run_dir):
    """Single-query Rank-1 / mAP of the deployed network on each target set."""
    import json

    with open(os.path.join(run_dir, "metrics.json")) as f:
        deployed = json.load(f)["results"]["deployed"]
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
    add_record_options(p, STUDY, "ids120")
    args = finish_options(p.parse_args(), STUDY)
    warnings.filterwarnings("ignore")
    plan = planned(args)
    rows = recorded(args.results, args.series, plan, args.tables_only)
    if not args.tables_only and len(rows) < len(plan):
        from reid_srdl.data.synthetic.reid_sets import ensure_synthetic

        for name in TARGETS:
            ensure_synthetic(name, args.root, num_ids=args.ids, seed=0)
        for name, over, _deps in plan:
            if name in rows:
                continue
            run_dir = os.path.join(args.runs, name)
            train(run_dir, over)
            save_row(args.results, folder_row(run_dir, args.series, name, folder_record(run_dir)))
            rows = recorded(args.results, args.series, plan, False)
    write_table(args, rows)


def write_table(args, rows):
    """The series' generated block of the doc, from ``rows`` (run name -> results-file row) alone."""
    cmd = command_line(
        STUDY,
        [
            f"--methods {' '.join(args.methods)}",
            f"--seeds {' '.join(map(str, args.seeds))}",
            f"--model {args.model}",
            f"--height {args.height}",
            f"--width {args.width}",
            f"--epochs {args.epochs}",
            f"--max-batches {args.max_batches}",
            f"--ids {args.ids}",
        ],
        args,
    )
    lines = [
        f"Synthetic data ({args.ids} identities per set), {args.model} {args.height}x{args.width}, "
        f"{args.epochs} epochs, single query; mean over seeds {', '.join(map(str, args.seeds))}.",
        "",
        "```",
        cmd,
        "```",
        "",
        "| method | trained on | Market-1501 (in-domain) R1 / mAP | DukeMTMC-reID (cross-domain) R1 / mAP |",
        "|---|---|---|---|",
    ]
    for method in args.methods:
        for label in TRAINING:
            recs = [rows[run_name(method, label, s)]["record"] for s in args.seeds]
            cells = [
                " / ".join(f"{100 * sum(r[t][k] for r in recs) / len(recs):.1f}" for k in ("rank1", "mAP"))
                for t in TARGETS
            ]
            lines.append(f"| {method} | {label} | {cells[0]} | {cells[1]} |")
    lines += ["", machines_line(rows, [name for name, _o, _d in planned(args)])]
    publish(args, lines)


if __name__ == "__main__":
    guarded(main)
