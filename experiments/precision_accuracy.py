#!/usr/bin/env python
"""Does the training precision cost accuracy?  The main job (``python tools/train.py``: SRDL,
small_reid on the embedded synthetic Market-1501 set, 2 x 15 epochs) trained with each
``train.precision`` on the same seeds; single-query Rank-1 / mAP of the deployed network as
mean +- std, and the paired difference to fp32 per seed with its paired-t 95% interval.

``auto`` is what the trainer picks on this machine (recorded per run: fp32 + channels-last
where bf16 does not pay, bf16 + channels-last where it does); ``bf16`` forces bf16 autocast
(only where the CPU runs it natively: emulated bf16 takes hours).

    python experiments/precision_accuracy.py                     # seeds 0 1 2, fp32 / auto / bf16
    python experiments/precision_accuracy.py --seeds 0 1 2 3 4 --precisions fp32 bf16

Each finished run is a row of experiments/results/precision_accuracy.jsonl, in a series named
by default after this machine's CPU (e.g. ``intel-xeon-amx``: the question is asked per CPU);
a run with a row is not trained again.  The run folders live under
experiments/runs/precision_accuracy/<series>/, outside git.  ``--tables-only`` rewrites the
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
    mean_std,
    paired_cell,
    publish,
    recorded,
    run_all,
    save_row,
    series_rows,
)

from reid_srdl.core.environment import cpu_slug
from reid_srdl.core.precision import cpu_supports_bf16

STUDY = "precision_accuracy"
METRICS = (("rank1", "Rank-1"), ("mAP", "mAP"))


def overrides(args, precision, seed, name):
    return [
        f"train.precision={precision}",
        f"data.workers={args.workers}",
        f"train.seed={seed}",
        f"train.output_dir={args.runs}",
        f"train.run_name={name}",
        "train.progress=false",
        "train.tensorboard=false",
        "eval.plot=false",
    ]


def folder_record(run_dir):
    """The table record of a finished run folder: single-query Rank-1 / mAP of the deployed
    network, train time, and the precision it ran as."""
    with open(os.path.join(run_dir, "metrics.json")) as f:
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
    p.add_argument("--workers", type=int, default=-1, help="data.workers of every run (-1: the trainer's choice)")
    add_record_options(p, STUDY, cpu_slug())
    args = finish_options(p.parse_args(), STUDY)
    if "fp32" not in args.precisions:
        p.error("--precisions must include fp32 (the reference of the paired differences)")
    # bf16 only where the CPU runs it natively (emulated bf16 takes hours); with --tables-only,
    # the precisions the results file holds for this series.
    rows = series_rows(args.results, args.series)
    if args.tables_only:
        precisions = [x for x in args.precisions if f"{x}_seed{args.seeds[0]}" in rows or x == "fp32"]
    else:
        precisions = [x for x in args.precisions if x != "bf16" or cpu_supports_bf16()]
    skipped = [x for x in args.precisions if x not in precisions]
    plan = [
        (f"{prec}_seed{seed}", overrides(args, prec, seed, f"{prec}_seed{seed}"), [])
        for seed in args.seeds
        for prec in precisions
    ]
    rows = recorded(args.results, args.series, plan, args.tables_only)
    if not args.tables_only:

        def finished(name):
            run_dir = os.path.join(args.runs, name)
            save_row(args.results, folder_row(run_dir, args.series, name, folder_record(run_dir)))

        run_all(plan, args.runs, os.path.join(args.runs, "train.log"), args.jobs, args.threads, set(rows), finished)
        rows = series_rows(args.results, args.series)
    records = {prec: [rows[f"{prec}_seed{s}"]["record"] for s in args.seeds] for prec in precisions}
    write_table(args, records, skipped)


def write_table(args, rows, skipped):
    """The series' generated block of the doc, from ``rows`` (precision -> records, seed order) alone."""
    cmd = command_line(
        STUDY,
        [
            f"--seeds {' '.join(map(str, args.seeds))}",
            f"--precisions {' '.join(args.precisions)}",
            f"--jobs {args.jobs}",
            f"--threads {args.threads}",
            f"--workers {args.workers}",
        ],
        args,
    )
    lines = [
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
    publish(args, lines)


if __name__ == "__main__":
    guarded(main)
