#!/usr/bin/env python
"""Run folders -> compact results files: the record as git kept it until the move.

Until the experiment drivers moved to experiments/, every run kept a folder under
benchmarks/results/ in git (config.yaml, metrics.json, metrics.jsonl, and the driver's
record.json where computing it needed a checkpoint).  This script turns each listed folder
tree into rows of experiments/results/<study>.jsonl -- the rows the drivers write today, so
that the drivers regenerate every table from them alone:

- settings: the saved config, paths relative to the checkout it was trained in, and the old
  run-folder prefix (benchmarks/results/<folder>) rewritten to where the driver keeps that
  series' folders now (experiments/runs/<study>/<series>), since the drivers compare them;
- machine, date and commit: metrics.json's ``environment`` (``None`` for the runs that
  predate it: the docs' hand-written notes name their machines), plus ``committed_in``,
  the commit that added the run's metrics.json to git;
- record: record.json where the folder has it (it holds the stage-1 accuracies, computed
  from checkpoints git never kept), otherwise the driver's own ``folder_record``.

    python experiments/convert_run_folders.py --source benchmarks/results   # once, before the folders go
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fashion_mnist_methods  # (the studies, for their folder_record)
import precision_accuracy
import recipe_synthetic
from experiment_runs import REPO, folder_row, results_file, runs_folder, write_text_atomic

# old folder under --source -> (study, series, run-folder depth: 2 when runs nest as model/run)
SOURCES = {
    "fashion_mnist_paired": ("fashion_mnist_methods", "paired", 1),
    "fashion_mnist_paired_auto": ("fashion_mnist_methods", "paired_auto", 1),
    "reid_many_ids": ("reid_many_ids", "m60", 1),
    "reid_many_ids_m120": ("reid_many_ids", "m120", 1),
    "precision_accuracy": ("precision_accuracy", "intel-xeon", 1),
    "precision_accuracy_amx": ("precision_accuracy", "intel-xeon-amx", 1),
    "recipe_synthetic": ("recipe_synthetic", "ids120", 2),
    "recipe_diag": ("recipe_synthetic", "diag", 2),
}


def synthetic_counts(num_ids, seed=0):
    """The image counts of the synthetic Market-1501 set the re-id runs trained on (from the
    generator's plan, which draws no image)."""
    from reid_srdl.data.synthetic.market import GALLERY_FOLDER, QUERY_FOLDER, TRAIN_FOLDER, plan_synthetic_market

    specs, _split = plan_synthetic_market(num_ids, seed, images_per_id_camera=4, gt_bbox_per_id_camera=3)
    return {f: sum(s.folder == f for s in specs) for f in (TRAIN_FOLDER, QUERY_FOLDER, GALLERY_FOLDER)}


def record_of(study, run_dir, run):
    """The driver's table record of a finished run folder (record.json where the folder has it)."""
    path = os.path.join(run_dir, "record.json")
    if os.path.isfile(path):
        with open(path) as f:
            rec = json.load(f)
    elif study == "fashion_mnist_methods":
        rec = fashion_mnist_methods.folder_record(run_dir, run)  # the teachers: no checkpoint needed
    elif study == "precision_accuracy":
        rec = precision_accuracy.folder_record(run_dir)
    elif study == "recipe_synthetic":
        rec = recipe_synthetic.folder_record(run_dir)
    else:
        raise SystemExit(f"error: {run_dir} has no record.json and {study} needs checkpoints to compute it")
    if study == "reid_many_ids":
        with open(os.path.join(run_dir, "metrics.json")) as f:
            m = json.load(f)
        num_ids = 2 * m["num_classes"]  # half the identities train
        counts = synthetic_counts(num_ids)
        queries = m["results"]["deployed"]["single_query"]["num_queries"]
        if (counts["bounding_box_train"], counts["query"]) != (m["num_train"], queries):
            raise SystemExit(f"error: {run_dir}: today's synthetic plan no longer gives the set it trained on")
        rec["data_counts"] = counts
    return rec


def moved(settings, old, new):
    """``settings`` with every path under ``old`` moved under ``new`` (relative paths)."""

    def fix(value):
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, str) and (value == old or value.startswith(old + "/")):
            return new + value[len(old) :]
        return value

    return fix(settings)


def committed_in(path):
    """The short hash of the commit that added ``path`` to git (``None`` if untracked)."""
    out = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%h", "--", path], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    return out[-1] if out else None


def run_folders(folder, depth):
    """The finished runs under ``folder``: ``[(run name, path)]``, sorted by name."""
    found = []
    for dirpath, _dirs, files in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        if "metrics.json" in files and rel.count(os.sep) == depth - 1:
            found.append((rel.replace(os.sep, "/"), dirpath))
    return sorted(found)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=os.path.join(REPO, "benchmarks", "results"), help="the old results folder")
    p.add_argument("--out", default=os.path.join(REPO, "experiments", "results"), help="where the .jsonl files go")
    p.add_argument("--force", action="store_true", help="replace results files that exist (their rows are lost)")
    args = p.parse_args()
    studies = {os.path.join(args.out, os.path.basename(results_file(study))) for study, _s, _d in SOURCES.values()}
    existing = sorted(path for path in studies if os.path.exists(path))
    if existing and not args.force:
        print(f"error: {', '.join(existing)} exist(s): the conversion is done; --force replaces them", file=sys.stderr)
        raise SystemExit(2)
    rows = {}
    for old, (study, series, depth) in SOURCES.items():
        folder = os.path.join(args.source, old)
        for run, run_dir in run_folders(folder, depth):
            row = folder_row(run_dir, series, run, record_of(study, run_dir, run))
            for other, (o_study, o_series, _depth) in SOURCES.items():  # recipe_diag used recipe_synthetic's data
                new_prefix = os.path.relpath(runs_folder(o_study, o_series), REPO)
                row["settings"] = moved(row["settings"], f"benchmarks/results/{other}", new_prefix)
            row["committed_in"] = committed_in(os.path.relpath(os.path.join(run_dir, "metrics.json"), REPO))
            row["converted_from"] = f"benchmarks/results/{old}/{run}"
            rows.setdefault(study, []).append(row)
        print(f"{old}: {sum(r['series'] == series for r in rows.get(study, []))} runs -> {study} / {series}")
    for study, study_rows in rows.items():
        path = os.path.join(args.out, os.path.basename(results_file(study)))
        write_text_atomic(path, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in study_rows))
        print(f"{os.path.relpath(path, REPO)}: {len(study_rows)} rows, {os.path.getsize(path) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
