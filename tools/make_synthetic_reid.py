#!/usr/bin/env python
"""Write synthetic re-id data sets in the exact layouts torchreid reads (see datasets/README.md).

    python tools/make_synthetic_reid.py --out datasets/synthetic --format dukemtmcreid msmt17 cuhk03
    python tools/make_synthetic_reid.py --out /tmp/reid --format all --ids 60 --seed 1 --overwrite

Each set goes to its torchreid folder under OUT (OUT/dukemtmc-reid/DukeMTMC-reID/...,
OUT/msmt17/MSMT17_V1/..., OUT/cuhk03/cuhk03_release/cuhk-03.mat + the new-protocol .mat
files, OUT/viper/VIPeR/..., OUT/market1501/Market-1501-v15.09.15/...), so ``data.root=OUT``
or torchreid's ``ImageDataManager(root=OUT, sources=...)`` reads it.  Same seed, same bytes.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reid_srdl.core.logs import configure_cli_logging  # noqa: E402
from reid_srdl.data.synthetic.market import MARKER_FILE  # noqa: E402
from reid_srdl.data.synthetic.reid_sets import WRITERS, check_writer_args  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="ROOT", help="data root to write under")
    p.add_argument(
        "--format",
        nargs="+",
        required=True,
        metavar="NAME",
        help=f"data sets to write: {', '.join(sorted(WRITERS))}, or all",
    )
    p.add_argument("--ids", type=int, default=40, help="identities per data set (default 40)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing data folders")
    args = p.parse_args(argv)
    names = sorted(WRITERS) if args.format == ["all"] else args.format
    unknown = [n for n in names if n not in WRITERS]
    if unknown:
        p.error(
            f"--format: no synthetic writer for {', '.join(unknown)}; choose from {', '.join(sorted(WRITERS))}, all"
        )
    args.format = list(dict.fromkeys(names))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_cli_logging()
    try:  # everything a writer would refuse, before the first one writes
        for name in args.format:
            check_writer_args(name, args.out, args.ids, args.seed, args.overwrite)
    except (ValueError, FileExistsError) as e:
        print(f"error: {name}: {e}", file=sys.stderr)
        return 2
    for name in args.format:
        start = time.perf_counter()
        try:
            folder = WRITERS[name](args.out, num_ids=args.ids, seed=args.seed, overwrite=args.overwrite)
        except (ValueError, FileExistsError, OSError) as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            return 2
        with open(os.path.join(folder, MARKER_FILE), encoding="utf-8") as f:
            counts = json.load(f)["counts"]
        print(
            f"wrote {name} at {folder} in {time.perf_counter() - start:.1f} s: "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
