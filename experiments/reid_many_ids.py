#!/usr/bin/env python
"""The many-class regime on the re-id task: cross-entropy vs SRDL over >= 5 paired seeds.

The SRDL paper's large gains are on many classes (CIFAR-100, Tiny ImageNet, Market-1501's
751 identities); Fashion-MNIST has 10.  This script trains small_reid on a SYNTHETIC
Market-1501-format set (rendered people, not photographs: tools/make_synthetic_market.py)
with 300 training identities, M epochs for both methods (SRDL: two stages of M/2), and
reports Rank-1 / mAP (single query) mean +- std with the paired difference to
cross-entropy and its 95% interval (paired t), SRDL's stage-1+2 ensemble, and the premise
check: SRDL's stage 1 is cross-entropy at M/2 epochs (same initialisation, data order and
schedule), so the halving cost and the self-reference gain come per seed for free.

    python experiments/reid_many_ids.py          # the documented run (M = 120)
    python experiments/reid_many_ids.py --seeds 0 1 --epochs 60 --series m60   # the convergence probe that chose M

The probe found M = 60 too short (cross-entropy at 30 epochs 5 Rank-1 points below 60), so
the default is M = 120: each of SRDL's halves then trains as long as the probe's full run.

Each finished run is a row of experiments/results/reid_many_ids.jsonl (a run with a row is
not trained again; a finished run is reused only with identical settings); the run folders
and the rendered data live under experiments/runs/reid_many_ids/<series>/, outside git.
``--tables-only`` rewrites the table from the results file alone.
"""

import argparse
import json
import os
import sys
import threading

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
    stage_history,
)

STUDY = "reid_many_ids"
VARIANTS = {"vanilla": ["method.name=vanilla"], "srdl": ["method.name=srdl"]}
DESCRIPTIONS = {"vanilla": "cross-entropy", "srdl": "SRDL (deployed stage-2 network)"}
METRICS = (("rank1", "Rank-1"), ("mAP", "mAP"))


def data_root(args):
    return os.path.join(args.runs, "data")


def common_overrides(args, seed, name):
    return [
        "data.name=market1501",
        f"data.root={data_root(args)}",
        "data.synthetic=false",
        f"data.height={args.height}",
        f"data.width={args.width}",
        f"data.batch_size={args.batch_size}",
        "data.test_batch_size=256",
        f"data.workers={args.workers}",
        f"model.name={args.model}",
        f"model.feature_dim={args.feature_dim}",
        f"train.epochs={args.epochs}",
        f"train.seed={seed}",
        f"train.output_dir={args.runs}",
        f"train.run_name={name}",
        "train.progress=false",
        "train.tensorboard=false",
        f"train.precision={args.precision}",
        "eval.multi_query=false",
        "eval.plot=false",
    ]


def planned_runs(args):
    return [
        (f"{v}_seed{s}", common_overrides(args, s, f"{v}_seed{s}") + VARIANTS[v], [])
        for s in args.seeds
        for v in args.variants
    ]


def stage1_metrics(run_dir):
    """Single-query Rank-1 / mAP of an SRDL run's stage-1 network (the self-reference)."""
    from reid_srdl import load_config
    from reid_srdl.data import build_data
    from reid_srdl.engine.evaluate import evaluate_model
    from reid_srdl.models.model_file import load_model_file

    cfg = load_config(os.path.join(run_dir, "config.yaml"))
    data = build_data(cfg.data, seed=cfg.train.seed)
    model, _ = load_model_file(os.path.join(run_dir, "stage1.pt"))
    return evaluate_model(model, data, "cpu", cfg.eval, out_dir=run_dir, tag="stage1", progress=False)["single_query"]


def folder_record(run_dir, variant, counts):
    """The table record of a finished run folder: single-query Rank-1 / mAP of the deployed
    network and of SRDL's ensemble and stage-1 network (which evaluates stage1.pt), train
    time and FLOPs, SRDL's diagnostics, the convergence of each stage and the data's counts."""
    with open(os.path.join(run_dir, "metrics.json")) as f:
        m = json.load(f)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        stages = stage_history([json.loads(line) for line in f])
    rec = {"seconds": m["train_seconds"], "tflops": m["train_flops"] / 1e12, "stages": stages}
    for key, _ in METRICS:
        rec[key] = m["results"]["deployed"]["single_query"][key]
        if "ensemble" in m["results"]:
            rec[f"ensemble_{key}"] = m["results"]["ensemble"]["single_query"][key]
    if variant == "srdl":
        stage1 = stage1_metrics(run_dir)
        for key, _ in METRICS:
            rec[f"stage1_{key}"] = stage1[key]
        rec["diagnostics"] = m.get("diagnostics", {})
    rec["data_counts"] = counts
    return rec


_RECORD_LOCK = threading.Lock()  # one evaluation of a stage-1 network at a time


def record_finished(args, name, counts):
    run_dir = os.path.join(args.runs, name)
    with _RECORD_LOCK:
        rec = folder_record(run_dir, name.rpartition("_seed")[0], counts)
        save_row(args.results, folder_row(run_dir, args.series, name, rec))


def write_table(args, rows, by_name):
    """The series' generated block of the doc, from ``rows`` (variant -> records, seed order)
    and ``by_name`` (run name -> results-file row) alone."""
    counts = rows[args.variants[0]][0]["data_counts"]
    cmd = command_line(
        STUDY,
        [
            f"--seeds {' '.join(map(str, args.seeds))}",
            f"--epochs {args.epochs}",
            f"--ids {args.ids}",
            f"--model {args.model}",
            f"--jobs {args.jobs}",
            f"--threads {args.threads}",
            f"--workers {args.workers}",
            f"--precision {args.precision}",
        ],
        args,
    )
    lines = [
        "**The images are synthetic** (rendered people on rendered backgrounds, "
        "tools/make_synthetic_market.py), in the exact Market-1501 layout; the figures say how the",
        "methods behave with many classes on this task's protocol, not what they reach on the real set.",
        "",
        f"{args.ids} identities (synthetic seed 0): {counts.get('bounding_box_train', '?')} training images of "
        f"{args.ids // 2} identities, {counts.get('query', '?')} queries, {counts.get('bounding_box_test', '?')} gallery",  # noqa: E501
        f"images. {args.model} ({args.feature_dim}-d feature layer), {args.height}x{args.width}, batch {args.batch_size},",  # noqa: E501
        f"M = {args.epochs} epochs for both (SRDL: two stages of {args.epochs // 2}, each with its own complete step decay),",  # noqa: E501
        f"train.precision={args.precision}, SGD Nesterov 0.9, lr 0.1, wd 2e-4. Single-query Market-1501 protocol. "
        "Seeds "
        f"{', '.join(map(str, args.seeds))}; the paired difference is per seed, mean ± std [paired-t 95% interval].",
        "",
        "```",
        cmd,
        "```",
        "",
        "| network | Rank-1 (%) | Rank-1 minus CE | mAP (%) | mAP minus CE | train time (s) |",
        "|---|---|---|---|---|---|",
    ]
    base = {k: [r[k] for r in rows.get("vanilla", [])] for k, _ in METRICS}

    def row(label, recs, prefix, compare=True):
        cells = [label]
        for key, _ in METRICS:
            vals = [r[prefix + key] for r in recs]
            cells.append("{:.2f} ± {:.2f}".format(*mean_std([100 * v for v in vals])))
            cells.append(paired_cell(vals, base[key]) if compare and len(vals) == len(base[key]) else "-")
        cells.append("{:.0f} ± {:.0f}".format(*mean_std([r["seconds"] for r in recs])) if prefix == "" else "-")
        return "| " + " | ".join(cells) + " |"

    for variant, recs in rows.items():
        lines.append(row(DESCRIPTIONS[variant], recs, "", compare=variant != "vanilla"))
        if variant == "srdl":
            lines.append(row("SRDL stage-1 + stage-2 ensemble", recs, "ensemble_"))
            lines.append(row(f"SRDL stage 1 (= cross-entropy at M/2 = {args.epochs // 2} epochs)", recs, "stage1_"))
    if "vanilla" in rows and "srdl" in rows:
        srdl = rows["srdl"]
        lines += ["", "Decomposition per seed (points; mean ± std [paired-t 95% interval]):", ""]
        for key, label in METRICS:
            full, half, stage2 = base[key], [r[f"stage1_{key}"] for r in srdl], [r[key] for r in srdl]
            lines.append(
                f"- {label}: halving cost (CE at M minus at M/2) {paired_cell(full, half)}; "
                f"self-reference gain (stage 2 minus stage 1) {paired_cell(stage2, half)}."
            )
        diags = [r.get("diagnostics", {}) for r in srdl]
        if all("bank_train_acc" in d for d in diags):
            acc = mean_std([100 * d["bank_train_acc"] for d in diags])
            ent = mean_std([d["bank_entropy"] for d in diags])
            lines.append(
                f"- stage-1 targets: training accuracy {acc[0]:.2f} ± {acc[1]:.2f} %, mean entropy at T=3 "
                f"{ent[0]:.3f} ± {ent[1]:.3f} nats (max {diags[0]['bank_entropy_max']:.3f})."
            )
        lines += [
            "",
            "Training accuracy of each stage's last epoch (mean over seeds): "
            + "; ".join(
                f"{DESCRIPTIONS[v]}: "
                + ", ".join(
                    f"stage {i + 1} {100 * sum(r['stages'][i][1] for r in recs) / len(recs):.2f}%"
                    for i in range(len(recs[0]["stages"]))
                )
                for v, recs in rows.items()
            ),
        ]
    lines += ["", machines_line(by_name, [f"{v}_seed{s}" for v in rows for s in args.seeds])]
    lines += [
        "",
        f"Train times are per run with {args.jobs} run(s) at a time, {args.threads} thread(s) each.",
    ]
    publish(args, lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--ids", type=int, default=600, help="synthetic identities, half for training (default 600)")
    p.add_argument("--model", default="small_reid")
    p.add_argument("--feature-dim", type=int, default=128)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1, help="decoding workers per run")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "auto", "bf16"],
        help="train.precision of every run (fp32: exact; auto: what the trainer picks on this CPU)",
    )
    p.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    add_record_options(p, STUDY, "m120")
    args = finish_options(p.parse_args(), STUDY)

    plan = planned_runs(args)
    rows = recorded(args.results, args.series, plan, args.tables_only)
    if not args.tables_only and len(rows) < len(plan):
        from reid_srdl.data.synthetic.market import ensure_synthetic_market, read_marker

        os.makedirs(args.runs, exist_ok=True)
        # Written once, before any run starts (parallel runs must not race to create it).
        counts = read_marker(ensure_synthetic_market(data_root(args), num_ids=args.ids, seed=0))["counts"]
        finished = lambda name: record_finished(args, name, counts)
        run_all(plan, args.runs, os.path.join(args.runs, "train.log"), args.jobs, args.threads, set(rows), finished)
        rows = series_rows(args.results, args.series)
    records = {v: [rows[f"{v}_seed{s}"]["record"] for s in args.seeds] for v in args.variants}
    write_table(args, records, rows)


if __name__ == "__main__":
    guarded(main)
