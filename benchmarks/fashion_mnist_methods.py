#!/usr/bin/env python
"""Fashion-MNIST: vanilla vs SRDL (and its ablations) vs the sibling methods, several seeds.

Every variant trains the same small CIFAR-style ResNet for the same total epochs on the
same fixed training subset, with the same SGD settings; the table gives test top-1 as
mean +- std over seeds, wall time and training FLOPs.  For SRDL it also reports the
stage-1 network's own test accuracy and how much the training loss still moved in the
last quarter of each stage, to show whether each half of the budget converged on its own
(the premise of SRDL).  The defaults are the regime where that premise holds: ResNet-8,
1,000 training images, 240 epochs (vanilla: 84.4 / 86.0 % after 120 epochs, 84.5 / 86.0 %
after 240, seeds 0 / 1 of a probe), KD's teacher = the vanilla network of the same seed.

    python benchmarks/fashion_mnist_methods.py                       # the documented run (~1.5 h)
    python benchmarks/fashion_mnist_methods.py --variants vanilla srdl --seeds 0 1 2

Runs are cached: a variant/seed whose run directory has metrics.json is not trained
again, so an interrupted experiment continues where it stopped.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

_LOG_LOCK = threading.Lock()

# name -> overrides on top of the common settings
VARIANTS = {
    "vanilla": ["method.name=vanilla"],
    "srdl": ["method.name=srdl"],
    "srdl_incomplete": ["method.name=srdl", "method.srdl.schedule=incomplete"],
    "srdl_no_restart": ["method.name=srdl", "method.srdl.restart=false"],
    "kd": ["method.name=kd"],  # teacher: the resnet20 trained by the 'teacher' variant, same seed
    "one": ["method.name=one"],
    "byot": ["method.name=byot"],
    "frskd": ["method.name=frskd"],
}
DESCRIPTIONS = {
    "vanilla": "cross-entropy",
    "srdl": "SRDL (stage-complete schedule, restart)",
    "srdl_incomplete": "SRDL ablation: stage-incomplete schedule",
    "srdl_no_restart": "SRDL ablation: stage 2 continues from stage 1",
    "kd": "Hinton KD from the vanilla {teacher} (T=3)",
    "one": "ONE (3 branches, gate)",
    "byot": "BYOT (side exits)",
    "frskd": "FRSKD (BiFPN self-teacher)",
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
        f"method.one.ramp_epochs={max(1, args.epochs // 2)}",
    ]


def run(overrides, run_dir, log, env=None):
    """Train one configuration in its own process (fresh memory, exact command logged; the
    run's own output goes to ``train.log`` inside its folder)."""
    if os.path.isfile(os.path.join(run_dir, "metrics.json")):
        check_cached(run_dir, overrides)
        return
    cmd = [sys.executable, os.path.join(REPO, "tools", "train.py"), *overrides]
    if os.path.isfile(os.path.join(run_dir, "last.pt")):
        cmd = [sys.executable, os.path.join(REPO, "tools", "train.py"), "--resume", run_dir]
    print("$ " + " ".join(cmd), flush=True)
    with _LOG_LOCK, open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "train.log"), "a") as f:
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    if result.returncode != 0:
        raise SystemExit(f"run failed (exit {result.returncode}): see {os.path.join(run_dir, 'train.log')}")


def check_cached(run_dir, overrides):
    """A finished run is reused only if it was trained with exactly these settings."""
    from reid_srdl.config import load_config, to_dict

    def relative(cfg):  # paths inside the repository may be spelled relative or absolute
        return json.loads(json.dumps(to_dict(cfg)).replace(REPO + os.sep, ""))

    stored = relative(load_config(os.path.join(run_dir, "config.yaml")))
    wanted = relative(load_config(None, overrides))
    differ = [
        f"{section}.{key}: {stored[section][key]!r} there, {value!r} asked"
        for section, values in wanted.items() if isinstance(values, dict)
        for key, value in values.items()
        # where the run lives may be spelled differently (relative / absolute path)
        if (section, key) not in (("train", "output_dir"), ("train", "run_name")) and stored.get(section, {}).get(key) != value
    ]
    if differ:
        raise SystemExit(f"{run_dir} holds a finished run with other settings ({'; '.join(differ[:4])}); "
                         "give another --out or remove it")


def stage1_accuracy(run_dir, args):
    """Test top-1 of the stage-1 network of an SRDL run (the self-reference)."""
    from reid_srdl.config import load_config
    from reid_srdl.data import build_data
    from reid_srdl.engine.checkpoint import load_model_file
    from reid_srdl.evaluation.classification import evaluate_classifier

    cfg = load_config(os.path.join(run_dir, "config.yaml"))
    data = build_data(cfg.data, seed=cfg.train.seed)
    model, _ = load_model_file(os.path.join(run_dir, "stage1.pt"))
    return evaluate_classifier(model, data.test_loader, "cpu")["top1"]


def stage_history(run_dir):
    """Per stage: (relative change of the training cross-entropy over the stage's last
    quarter, training accuracy of its last epoch)."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = [json.loads(x) for x in f]
    out = []
    for stage in sorted({l["stage"] for l in lines}):
        rows = [l for l in lines if l["stage"] == stage]
        ce = [l["ce"] for l in rows]
        q = max(1, len(ce) // 4)
        change = (ce[-q - 1] - ce[-1]) / ce[-q - 1] if len(ce) > q else float("nan")
        out.append((change, rows[-1]["train_acc"]))
    return out


def mean_std(values):
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def teacher_run(args, seed):
    """``(run name, overrides)`` of KD's teacher for ``seed``.  A teacher of the student's own
    architecture is the cross-entropy run of the same seed (nothing extra to train: KD then
    costs one full budget more than vanilla, SRDL half of one); another architecture is a
    vanilla run of its own."""
    if args.teacher_model == args.model:
        name = f"vanilla_seed{seed}"
        return name, common_overrides(args, seed, args.out, name) + VARIANTS["vanilla"]
    name = f"teacher_{args.teacher_model}_seed{seed}"
    return name, common_overrides(args, seed, args.out, name) + ["method.name=vanilla", f"model.name={args.teacher_model}"]


def planned_runs(args):
    """``[(name, overrides, dependencies)]``, seed by seed (an interrupted experiment has
    every variant of the first seeds); KD waits for its teacher."""
    plan = {}
    for seed in args.seeds:
        for variant in args.variants:
            name = f"{variant}_seed{seed}"
            overrides = common_overrides(args, seed, args.out, name) + VARIANTS[variant]
            deps = []
            if variant == "kd":
                teacher, t_over = teacher_run(args, seed)
                plan.setdefault(teacher, (t_over, []))
                overrides += [f"method.kd.teacher={os.path.join(args.out, teacher)}"]
                deps = [teacher]
            plan.setdefault(name, (overrides, deps))
    return [(name, overrides, deps) for name, (overrides, deps) in plan.items()]


def run_all(args, log):
    """Train every planned run, ``--jobs`` at a time, each with ``--threads`` torch threads
    (several single-threaded runs use 2 cores better than one run with 2 threads when the
    network is this small).  A run starts once the runs it depends on have finished."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    pending = planned_runs(args)
    done, failed = set(), []
    cond = threading.Condition()

    def worker():
        while True:
            with cond:
                while True:
                    if failed or not pending:
                        return
                    ready = next((t for t in pending if all(d in done for d in t[2])), None)
                    if ready is not None:
                        pending.remove(ready)
                        break
                    cond.wait()
            name, overrides, _deps = ready
            try:
                run(overrides, os.path.join(args.out, name), log, env)
            except BaseException as e:  # noqa: BLE001 - reported once all workers stop
                with cond:
                    failed.append(e)
                    cond.notify_all()
                return
            with cond:
                done.add(name)
                cond.notify_all()

    threads = [threading.Thread(target=worker) for _ in range(max(1, args.jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise failed[0]


def collect(args, variant, seed):
    run_dir = os.path.join(args.out, f"{variant}_seed{seed}")
    with open(os.path.join(run_dir, "metrics.json")) as f:
        m = json.load(f)
    rec = {
        "top1": m["results"]["deployed"]["test"]["top1"],
        "seconds": m["train_seconds"],
        "tflops": m["train_flops"] / 1e12,
    }
    if "ensemble" in m["results"]:
        rec["ensemble_top1"] = m["results"]["ensemble"]["test"]["top1"]
    if variant.startswith("srdl"):
        rec["stage1_top1"] = stage1_accuracy(run_dir, args)
    rec["stages"] = stage_history(run_dir)
    return rec


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=240)
    p.add_argument("--subset", type=int, default=1000, help="training images (subset of the 60,000 drawn with each run's seed)")
    p.add_argument("--model", default="resnet8")
    p.add_argument("--teacher-model", default="resnet8", help="KD's teacher; the student's own architecture reuses the vanilla run")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="decoding workers per run (0: the 28x28 tensors are in memory)")
    p.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "fashion_mnist_converged"))
    p.add_argument("--table", default=os.path.join(REPO, "docs", "experiments_fashion_mnist_converged.md"))
    args = p.parse_args()

    os.makedirs(args.out, exist_ok=True)
    log = os.path.join(args.out, "train.log")
    started = time.time()
    run_all(args, log)
    rows = {}
    for variant in args.variants:
        for seed in args.seeds:
            rec = collect(args, variant, seed)
            rows.setdefault(variant, []).append(rec)
            print(f"{variant}_seed{seed}: {json.dumps(rec)}", flush=True)

    with open(os.path.join(os.path.dirname(args.out), os.path.basename(args.out) + "_summary.json"), "w") as f:
        json.dump(rows, f, indent=2)
    write_table(args, rows, time.time() - started)


def describe(variant, args):
    return DESCRIPTIONS[variant].format(teacher=args.teacher_model)


def write_table(args, rows, elapsed):
    cmd = "python benchmarks/fashion_mnist_methods.py " + " ".join(
        [f"--variants {' '.join(args.variants)}", f"--seeds {' '.join(map(str, args.seeds))}", f"--epochs {args.epochs}",
         f"--subset {args.subset}", f"--model {args.model}", f"--teacher-model {args.teacher_model}",
         f"--batch-size {args.batch_size}", f"--jobs {args.jobs}", f"--threads {args.threads}",
         f"--out {os.path.relpath(args.out, REPO)}", f"--table {os.path.relpath(args.table, REPO)}"]
    )
    lines = [
        "# Fashion-MNIST: self-distillation methods side by side",
        "",
        f"{args.model} (CIFAR-style ResNet, 1 input channel), {args.subset} training images (a random subset of the",
        "60,000 drawn with the run's seed, so every variant of a seed sees the same images), the full",
        f"10,000-image test set, {args.epochs} epochs for every variant (SRDL: two stages of",
        f"{args.epochs // 2}), batch {args.batch_size}, SGD Nesterov 0.9, lr 0.1, wd 2e-4, x0.1 at 50% and 75% (of each",
        f"stage for SRDL's complete schedule); CPU: {args.jobs} runs at a time, {args.threads} torch thread(s) each "
        f"(train time is per run). Mean +- std over seeds "
        f"{', '.join(map(str, args.seeds))}.",
        "",
        "```",
        cmd,
        "```",
        "",
        "| variant | test top-1 (%) | ensemble top-1 (%) | stage-1 top-1 (%) | train time (s) | train TFLOPs |",
        "|---|---|---|---|---|---|",
    ]
    for variant, recs in rows.items():
        def cell(key, scale=100.0, fmt="{:.2f} ± {:.2f}"):
            vals = [r[key] * scale for r in recs if key in r]
            return fmt.format(*mean_std(vals)) if vals else "-"

        lines.append(
            f"| {describe(variant, args)} | {cell('top1')} | {cell('ensemble_top1')} | {cell('stage1_top1')} | "
            f"{cell('seconds', 1.0, '{:.0f} ± {:.0f}')} | {cell('tflops', 1.0, '{:.2f} ± {:.2f}')} |"
        )
    lines += ["", "Convergence of each half (SRDL's premise), mean over seeds: training accuracy of the last",
              "epoch of each stage, and the relative drop of the training cross-entropy over the stage's",
              "last quarter (at a loss this close to 0 the drop is noise-dominated; the accuracy and the",
              "stage-1 test accuracy above say more).", "",
              "| variant | stage 1: train acc | stage 1: CE drop, last quarter | stage 2: train acc | stage 2: CE drop |",
              "|---|---|---|---|---|"]
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
        half = [r["stage1_top1"] for r in rows["srdl"]]
        full = [r["top1"] for r in rows["vanilla"]]
        gaps = [100 * (f - h) for f, h in zip(full, half)]
        lines += ["", f"Premise check: cross-entropy for M/2 = {args.epochs // 2} epochs (SRDL's stage 1, its own complete",
                  f"schedule) reaches {100 * statistics.mean(half):.2f} % against {100 * statistics.mean(full):.2f} % for M = {args.epochs}",
                  "epochs; per seed, full minus half: " + ", ".join(f"{g:+.2f}" for g in gaps) + " points."]
    lines += ["", f"Total wall time of this run of the script: {elapsed / 60:.1f} min (cached runs count 0)."]
    os.makedirs(os.path.dirname(args.table), exist_ok=True)
    with open(args.table, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
