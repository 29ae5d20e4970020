#!/usr/bin/env python
"""Rewrite (or check) every generated table of the experiment docs from experiments/results/ alone.

Each entry is the documented command of one table -- the command its doc shows above it --
run with ``--tables-only``: nothing is trained, no run folder is read, and a run missing
from the results file is an error.

    python experiments/regenerate_tables.py            # rewrite every block
    python experiments/regenerate_tables.py --check    # exit 1 if a doc's block differs from its results
"""

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

TABLES = [
    "fashion_mnist_methods.py --variants vanilla srdl byot frskd one kd srdl_incomplete srdl_no_restart "
    "--seeds 0 1 2 3 4 --epochs 240 --subset 1000 --model resnet8 --teacher-model resnet8 --batch-size 32 "
    "--precision fp32 --jobs 2 --threads 1 --series paired",
    "fashion_mnist_methods.py --variants vanilla srdl --seeds 0 1 2 --epochs 240 --subset 1000 --model resnet8 "
    "--teacher-model resnet8 --batch-size 32 --precision auto --jobs 2 --threads 1 --series paired_auto",
    "reid_many_ids.py --seeds 0 1 2 3 4 --epochs 120 --ids 600 --model small_reid --jobs 2 --threads 1 --workers 1 "
    "--precision fp32 --series m120",
    "reid_many_ids.py --seeds 0 1 --epochs 60 --ids 600 --model small_reid --jobs 2 --threads 1 --workers 1 "
    "--precision fp32 --series m60",
    "precision_accuracy.py --seeds 0 1 2 3 4 --precisions fp32 auto --jobs 1 --threads 2 --workers -1 "
    "--series intel-xeon-amx",
    "precision_accuracy.py --seeds 0 1 2 --precisions fp32 auto bf16 --jobs 1 --threads 2 --workers 2 "
    "--series intel-xeon",
    "imagenet_init.py --task fashion --seeds 0 1 2 3 4 --inits imagenet random --methods vanilla srdl --epochs 48 "
    "--subset 1000 --size 64 --lr 0.01 --jobs 2 --threads 1 --series fashion",
    "imagenet_init.py --task reid --seeds 0 1 2 3 4 --inits imagenet random --methods vanilla srdl --epochs 16 "
    "--ids 600 --height 80 --width 40 --lr 0.01 --jobs 2 --threads 1 --series reid",
    "recipe_synthetic.py --models small_reid osnet_x0_25 --recipes ce bot bot_sgd --seeds 0 1 2 --epochs 30 "
    "--ids 120 --batch-size 32 --jobs 2 --threads 1 --series ids120",
]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare each doc's block with its results; write nothing")
    args = p.parse_args()
    failed = 0
    mode = ["--tables-only", "--check"] if args.check else ["--tables-only"]
    for table in TABLES:
        script, *options = table.split()
        cmd = [sys.executable, os.path.join(HERE, script), *options, *mode]
        result = subprocess.run(cmd, capture_output=True, text=True)
        last = (result.stdout.strip().splitlines() or [""])[-1] if result.returncode == 0 else result.stderr.strip()
        print(f"{script} {options[-1]}: {last if args.check or result.returncode else 'rewritten'}")
        failed += result.returncode != 0
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
