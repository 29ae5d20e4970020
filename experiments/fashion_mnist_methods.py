#!/usr/bin/env python
"""Fashion-MNIST: vanilla vs SRDL (and its ablations) vs the sibling methods, >= 5 paired seeds.

Every variant trains the same small CIFAR-style ResNet for the same total epochs on the
same fixed training subset, with the same SGD settings; the table gives test top-1 as
mean +- std over seeds, the paired difference to cross-entropy with its 95% interval
(paired t; seed s of every variant shares the training subset, the first network's
initialisation and the data order), wall time and training FLOPs.  For SRDL it also
reports the stage-1 network's own test accuracy: per seed, the halving cost (cross-entropy
at M minus at M/2 = SRDL's stage 1) and the self-reference gain (SRDL's stage 2 minus its
stage 1).  The defaults are the regime where SRDL's premise holds: ResNet-8, 1,000 training
images, 240 epochs, KD's teacher = the vanilla network of the same seed.

    python experiments/fashion_mnist_methods.py                      # the documented run
    python experiments/fashion_mnist_methods.py --variants vanilla srdl --seeds 0 1 2 --series probe
    python experiments/fashion_mnist_methods.py --tables-only        # the table from the results alone

Each finished run is a row of experiments/results/fashion_mnist_methods.jsonl (a series
groups the runs of one setting); a run with a row is not trained again, so an interrupted
experiment continues where it stopped.  The run folders (checkpoints, logs) live under
experiments/runs/fashion_mnist_methods/<series>/, outside git.
"""

import argparse
import json
import os
import statistics
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from experiment_runs import (
    ExperimentError,
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
    repo_relative,
    run_all,
    run_cpu,
    save_row,
    series_rows,
    stage_history,
)

STUDY = "fashion_mnist_methods"
# name -> overrides on top of the common settings
VARIANTS = {
    "vanilla": ["method.name=vanilla"],
    "srdl": ["method.name=srdl"],
    "srdl_incomplete": ["method.name=srdl", "method.srdl.schedule=incomplete"],
    "srdl_no_restart": ["method.name=srdl", "method.srdl.restart=false"],
    "srdl_augmented": ["method.name=srdl", "method.srdl.teacher_view=augmented"],
    "kd": ["method.name=kd"],  # teacher: a cross-entropy run of its own, same seed (teacher_run)
    "one": ["method.name=one"],
    "byot": ["method.name=byot"],
    "frskd": ["method.name=frskd"],
}
DESCRIPTIONS = {
    "vanilla": "cross-entropy",
    "srdl": "SRDL (stage-complete schedule, restart)",
    "srdl_incomplete": "SRDL ablation: stage-incomplete schedule",
    "srdl_no_restart": "SRDL ablation: stage 2 continues from stage 1",
    "srdl_augmented": "SRDL ablation: stage-1 targets on the augmented batch (not the paper's)",
    "kd": "Hinton KD from the vanilla {teacher} (T=3)",
    "one": "ONE (3 branches, gate)",
    "byot": "BYOT (side exits; official loss)",
    "frskd": "FRSKD (official BiFPNc self-teacher)",
}


def common_overrides(args, seed, out_dir, name):
    return [
        "data.name=fashion_mnist",
        f"data.root={args.root}",
        "data.synthetic=false",
        f"data.train_subset={args.subset}",
        f"data.batch_size={args.batch_size}",
        "data.test_batch_size=500",
        f"data.workers={args.workers}",
        f"model.name={args.model}",
        f"train.epochs={args.epochs}",
        f"train.seed={seed}",
        f"train.output_dir={out_dir}",
        f"train.run_name={name}",
        "train.progress=false",
        "train.tensorboard=false",
        "eval.multi_query=false",
        f"train.precision={args.precision}",
        # ONE's KL ramp-up: "half" (M/2, what the committed rows used) or "official" (ONE's
        # default since: 80/300 of the epochs, the official code's ratio).
        *([f"method.one.ramp_epochs={max(1, args.epochs // 2)}"] if args.one_ramp == "half" else []),
    ]


def stage1_accuracy(run_dir):
    """Test top-1 of the stage-1 network of an SRDL run (the self-reference)."""
    from reid_srdl import load_config
    from reid_srdl.data import build_data
    from reid_srdl.inference.classification import evaluate_classifier
    from reid_srdl.models.model_file import load_model_file

    cfg = load_config(os.path.join(run_dir, "config.yaml"))
    data = build_data(cfg.data, seed=cfg.train.seed)
    model, _ = load_model_file(os.path.join(run_dir, "stage1.pt"))
    return evaluate_classifier(model, data.test_loader, "cpu")["top1"]


def teacher_run(args, seed):
    """``(run name, overrides)`` of KD's teacher for ``seed``: a cross-entropy run of its own
    (``teacher_<model>_seed<s>``), also when it has the student's architecture.  Reusing the
    ``vanilla`` run would save one budget, but git keeps no checkpoints, so in a later session
    that run is finished and its network gone; a teacher run of its own is trained when KD
    needs it, and its accuracy beside the cross-entropy row of the same settings shows how far
    a rerun (on another machine, in fp32) moves the result."""
    name = f"teacher_{args.teacher_model}_seed{seed}"
    return name, common_overrides(args, seed, args.runs, name) + [
        "method.name=vanilla",
        f"model.name={args.teacher_model}",
    ]


def check_teachers(args, plan, rows):
    """Before any training: a KD run still to train needs its teacher's network; a finished
    teacher (a row of the results file) whose folder has no ``final.pt`` (a fresh clone keeps
    only the results file) is found here, not after the other runs."""
    for name, _overrides, deps in plan:
        if not name.startswith("kd_") or name in rows:
            continue
        for teacher in deps:
            t_dir = os.path.join(args.runs, teacher)
            finished = teacher in rows or os.path.isfile(os.path.join(t_dir, "metrics.json"))
            if finished and not os.path.isfile(os.path.join(t_dir, "final.pt")):
                raise ExperimentError(
                    f"{name} needs the network of its teacher {teacher}, which finished but has no "
                    f"{os.path.join(t_dir, 'final.pt')} (git keeps only the results): remove the teacher's row "
                    f"from {repo_relative(args.results)} and its folder to retrain it"
                )


def planned_runs(args):
    """``[(name, overrides, dependencies)]``, seed by seed (an interrupted experiment has
    every variant of the first seeds); KD waits for its teacher."""
    plan = {}
    for seed in args.seeds:
        for variant in args.variants:
            name = f"{variant}_seed{seed}"
            overrides = common_overrides(args, seed, args.runs, name) + VARIANTS[variant]
            deps = []
            if variant == "kd":
                teacher, t_over = teacher_run(args, seed)
                plan.setdefault(teacher, (t_over, []))
                overrides += [f"method.kd.teacher={os.path.join(args.runs, teacher)}"]
                deps = [teacher]
            plan.setdefault(name, (overrides, deps))
    return [(name, overrides, deps) for name, (overrides, deps) in plan.items()]


def variant_of(name):
    """``kd_seed3`` -> ``kd``; a teacher run (``teacher_resnet8_seed3``) -> ``teacher``."""
    variant = name.rpartition("_seed")[0]
    return "teacher" if variant.startswith("teacher_") else variant


def folder_record(run_dir, name, teacher_top1=None):
    """The table record of a finished run folder: test top-1, train time and FLOPs, the
    ensemble's top-1, KD's teacher's top-1, SRDL's stage-1 top-1 (which evaluates stage1.pt)
    and diagnostics, and the convergence of each stage."""
    with open(os.path.join(run_dir, "metrics.json")) as f:
        m = json.load(f)
    variant = variant_of(name)
    rec = {
        "top1": m["results"]["deployed"]["test"]["top1"],
        "seconds": m["train_seconds"],
        "tflops": m["train_flops"] / 1e12,
    }
    if "ensemble" in m["results"]:
        rec["ensemble_top1"] = m["results"]["ensemble"]["test"]["top1"]
    if variant == "kd":
        rec["teacher_top1"] = teacher_top1
    if variant.startswith("srdl"):
        rec["stage1_top1"] = stage1_accuracy(run_dir)
        rec["diagnostics"] = m.get("diagnostics", {})
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rec["stages"] = stage_history([json.loads(line) for line in f])
    return rec


_RECORD_LOCK = threading.Lock()  # one evaluation of a stage-1 network at a time


def record_finished(args, plan, name):
    """Write the row of a run that just finished (its teacher's row is already there)."""
    deps = dict((n, d) for n, _o, d in plan)[name]
    with _RECORD_LOCK:
        teacher_top1 = None
        if deps:
            teacher_top1 = series_rows(args.results, args.series)[deps[0]]["record"]["top1"]
        run_dir = os.path.join(args.runs, name)
        save_row(args.results, folder_row(run_dir, args.series, name, folder_record(run_dir, name, teacher_top1)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=240)
    p.add_argument(
        "--subset", type=int, default=1000, help="training images (subset of the 60,000 drawn with each run's seed)"
    )
    p.add_argument("--model", default="resnet8")
    p.add_argument("--teacher-model", default="resnet8", help="KD's teacher (a cross-entropy run of its own)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--workers", type=int, default=0, help="decoding workers per run (0: the 28x28 tensors are in memory)"
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "auto", "bf16"],
        help="train.precision of every run (fp32: exact; auto: what the trainer picks on this CPU)",
    )
    p.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    p.add_argument(
        "--one-ramp",
        default="half",
        choices=["half", "official"],
        help="ONE's ramp-up: over M/2 (the committed rows) or the official 80/300 of the epochs (ONE's default)",
    )
    add_record_options(p, STUDY, "paired")
    args = finish_options(p.parse_args(), STUDY)

    plan = planned_runs(args)
    rows = recorded(args.results, args.series, plan, args.tables_only)
    if not args.tables_only:
        check_teachers(args, plan, rows)
        log = os.path.join(args.runs, "train.log")
        finished = lambda name: record_finished(args, plan, name)
        run_all(plan, args.runs, log, args.jobs, args.threads, done=set(rows), finished=finished)
        rows = series_rows(args.results, args.series)
    records = {v: [rows[f"{v}_seed{s}"]["record"] for s in args.seeds] for v in args.variants}
    write_table(args, records, rows)


def describe(variant, args):
    return DESCRIPTIONS[variant].format(teacher=args.teacher_model)


def write_table(args, rows, by_name):
    """The series' generated block of the doc, from ``rows`` (variant -> records, seed order)
    and ``by_name`` (run name -> results-file row) alone."""
    cmd = command_line(
        STUDY,
        [
            f"--variants {' '.join(args.variants)}",
            f"--seeds {' '.join(map(str, args.seeds))}",
            f"--epochs {args.epochs}",
            f"--subset {args.subset}",
            f"--model {args.model}",
            f"--teacher-model {args.teacher_model}",
            f"--batch-size {args.batch_size}",
            f"--precision {args.precision}",
            f"--jobs {args.jobs}",
            f"--threads {args.threads}",
            *([f"--one-ramp {args.one_ramp}"] if args.one_ramp != "half" else []),
        ],
        args,
    )
    lines = [
        f"{args.model} (CIFAR-style ResNet, 1 input channel), {args.subset} training images (a random subset of the",
        "60,000 drawn with the run's seed, so every variant of a seed sees the same images), the full",
        f"10,000-image test set, {args.epochs} epochs for every variant (SRDL: two stages of",
        f"{args.epochs // 2}), batch {args.batch_size}, train.precision={args.precision}, SGD Nesterov 0.9, lr 0.1,",
        "wd 2e-4, x0.1 at 50% and 75% (of each stage for SRDL's complete schedule);",
        f"CPU: {args.jobs} runs at a time, {args.threads} torch thread(s) each "
        f"(train time is per run). Mean +- std over seeds "
        f"{', '.join(map(str, args.seeds))}.",
        "",
        "```",
        cmd,
        "```",
        "",
        "Paired difference: per seed, the variant minus cross-entropy (points); mean ± std and the",
        "paired-t 95% interval of the mean in brackets.",
        "",
        "| variant | test top-1 (%) | minus cross-entropy (points) | ensemble top-1 (%) | ensemble minus CE |"
        " stage-1 top-1 (%) | train time (s) | train TFLOPs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = [r["top1"] for r in rows.get("vanilla", [])]
    for variant, recs in rows.items():

        def cell(key, scale=100.0, fmt="{:.2f} ± {:.2f}", recs=recs):
            vals = [r[key] * scale for r in recs if key in r]
            return fmt.format(*mean_std(vals)) if vals else "-"

        def paired(key, recs=recs, variant=variant):
            vals = [r[key] for r in recs if key in r]
            if variant == "vanilla" and key == "top1" or len(vals) != len(base) or not base:
                return "-"
            return paired_cell(vals, base)

        lines.append(
            f"| {describe(variant, args)} | {cell('top1')} | {paired('top1')} | {cell('ensemble_top1')} | "
            f"{paired('ensemble_top1')} | {cell('stage1_top1')} | {cell('seconds', 1.0, '{:.0f} ± {:.0f}')} | "
            f"{cell('tflops', 1.0, '{:.2f} ± {:.2f}')} |"
        )
    lines += [
        "",
        "Convergence of each half (SRDL's premise), mean over seeds: training accuracy of the last",
        "epoch of each stage, and the relative drop of the training cross-entropy over the stage's",
        "last quarter (at a loss this close to 0 the drop is noise-dominated; the accuracy and the",
        "stage-1 test accuracy above say more).",
        "",
        "| variant | stage 1: train acc | stage 1: CE drop, last quarter | stage 2: train acc | stage 2: CE drop |",
        "|---|---|---|---|---|",
    ]
    for variant, recs in rows.items():
        per_stage = list(zip(*[r["stages"] for r in recs]))
        cells = []
        for stage in range(2):
            if stage < len(per_stage):
                changes, accs = zip(*per_stage[stage])
                cells += [f"{100 * statistics.mean(accs):.2f}%", f"{100 * statistics.mean(changes):.1f}%"]
            else:
                cells += ["-", "-"]
        lines.append(f"| {describe(variant, args)} | " + " | ".join(cells) + " |")
    if "vanilla" in rows and "srdl" in rows:
        lines += srdl_analysis(args, rows)
    if "kd" in rows:
        teachers = [r["teacher_top1"] for r in rows["kd"]]
        lines += [
            "",
            f"KD's teachers (cross-entropy, {args.teacher_model}, trained as runs of their own): top-1 "
            + "{:.2f} ± {:.2f} %".format(*mean_std([100 * t for t in teachers]))
            + (
                "; teacher minus the cross-entropy row (same seed and settings, retrained): "
                + paired_cell(teachers, base)
                + "."
                if args.teacher_model == args.model and len(teachers) == len(base)
                else "."
            ),
        ]
    lines += machine_checks(args, rows, by_name)
    names = [f"{v}_seed{s}" for v in rows for s in args.seeds]
    if "kd" in rows:
        names += [teacher_run(args, s)[0] for s in args.seeds]
    lines += ["", machines_line(by_name, names)]
    publish(args, lines)


def machine_checks(args, rows, by_name):
    """fp32 is exact on one CPU, not across CPUs, so where the runs came from several: (1) the
    spread a change of CPU alone causes, from a configuration trained twice (SRDL's stage 1 is
    the same in the ``srdl`` and ``srdl_no_restart`` runs: 0.00 on one CPU); (2) every variant
    trained on the CPU of KD's teachers, against those teachers (cross-entropy, same seeds,
    same CPU) instead of the table's cross-entropy row."""
    lines = []
    if "srdl" in rows and "srdl_no_restart" in rows:
        a = [r["stage1_top1"] for r in rows["srdl_no_restart"]]
        b = [r["stage1_top1"] for r in rows["srdl"]]
        lines += [
            "",
            "Same configuration, trained twice (SRDL's stage 1 of the `srdl_no_restart` runs minus that of the "
            f"`srdl` runs; 0.00 when both ran on one CPU): {paired_cell(a, b)}; per seed "
            + ", ".join(f"{100 * (x - y):+.2f}" for x, y in zip(a, b))
            + ".",
        ]
    if "kd" not in rows or args.teacher_model != args.model:
        return lines
    teacher_cpus = {run_cpu(by_name, teacher_run(args, s)[0]) for s in args.seeds}
    if len(teacher_cpus) != 1 or None in teacher_cpus:
        return lines
    cpu = teacher_cpus.pop()
    teachers = [r["teacher_top1"] for r in rows["kd"]]
    same = [
        f"{describe(v, args)} {paired_cell([r['top1'] for r in recs], teachers)}"
        for v, recs in rows.items()
        if v != "vanilla" and all(run_cpu(by_name, f"{v}_seed{s}") == cpu for s in args.seeds)
    ]
    if same:
        lines += [
            "",
            f"Against cross-entropy on the same CPU ({cpu}: KD's teachers, the cross-entropy setting retrained), "
            "top-1 minus teacher per seed: " + "; ".join(same) + ".",
        ]
    return lines


def srdl_analysis(args, rows):
    """Where SRDL's gain comes from, per seed: the halving cost (cross-entropy at M minus at
    M/2, the latter being SRDL's stage 1: same initialisation, order and schedule) and the
    self-reference gain (SRDL's stage 2 minus its own stage 1); and its targets' quality."""
    half = [r["stage1_top1"] for r in rows["srdl"]]
    full = [r["top1"] for r in rows["vanilla"]]
    stage2 = [r["top1"] for r in rows["srdl"]]
    seeds = ", ".join(map(str, args.seeds))
    per_seed = lambda a, b: ", ".join(f"{100 * (x - y):+.2f}" for x, y in zip(a, b))
    lines = [
        "",
        f"Premise check and decomposition (seeds {seeds}; points, mean ± std [paired-t 95% interval]):",
        "",
        f"- cross-entropy for M/2 = {args.epochs // 2} epochs (SRDL's stage 1) reaches {100 * statistics.mean(half):.2f} %, "  # noqa: E501
        f"for M = {args.epochs} epochs {100 * statistics.mean(full):.2f} %;",
        f"- halving cost (CE at M minus CE at M/2): {paired_cell(full, half)}; per seed {per_seed(full, half)};",
        f"- self-reference gain (SRDL stage 2 minus its stage 1): {paired_cell(stage2, half)}; per seed "
        f"{per_seed(stage2, half)};",
        f"- net (SRDL minus CE at M) = gain minus cost: {paired_cell(stage2, full)}.",
    ]
    diags = [r.get("diagnostics", {}) for r in rows["srdl"]]
    if all("bank_train_acc" in d for d in diags):
        acc = mean_std([100 * d["bank_train_acc"] for d in diags])
        ent = mean_std([d["bank_entropy"] for d in diags])
        kl_last = mean_std([d["stage2_kl"][-1] for d in diags if d.get("stage2_kl")])
        lines.append(
            f"- stage-1 targets: training accuracy {acc[0]:.2f} ± {acc[1]:.2f} %, mean entropy of softmax(z/T) "
            f"{ent[0]:.3f} ± {ent[1]:.3f} nats (max {diags[0]['bank_entropy_max']:.3f}); stage-2 KL at the last "
            f"epoch {kl_last[0]:.4f} ± {kl_last[1]:.4f}."
        )
    return lines


if __name__ == "__main__":
    guarded(main)
