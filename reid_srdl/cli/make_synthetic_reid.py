"""Write synthetic re-id data sets in the exact layouts torchreid reads (see datasets/README.md).

    python tools/make_synthetic_reid.py --out datasets/synthetic --format dukemtmcreid msmt17 cuhk03
    python tools/make_synthetic_reid.py --out /tmp/reid --format all --ids 60 --seed 1 --overwrite
    reid-make-synthetic-reid --out datasets/synthetic --format all    # the same, as an installed command

Each set goes to its torchreid folder under OUT (OUT/dukemtmc-reid/DukeMTMC-reID/...,
OUT/msmt17/MSMT17_V1/..., OUT/cuhk03/cuhk03_release/cuhk-03.mat + the new-protocol .mat
files, OUT/viper/VIPeR/..., OUT/market1501/Market-1501-v15.09.15/...), so ``data.root=OUT``
or torchreid's ``ImageDataManager(root=OUT, sources=...)`` reads it.  Same seed, same bytes.
"""

import argparse
import contextlib
import json
import os
import time

from reid_srdl.core import cli
from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.data.synthetic.market import MARKER_FILE
from reid_srdl.data.synthetic.reid_sets import WRITERS, check_writer_args


class WriterRefusedError(ReidSrdlError, ValueError):
    """A writer refused its arguments or its folder; the message starts with the data set's name."""


@contextlib.contextmanager
def _refusals_named(name: str):
    """The writers check their arguments with plain ValueErrors and refuse an existing folder
    with FileExistsError: bad input, reported with the data set they concern."""
    try:
        yield
    except (ValueError, OSError) as e:
        if isinstance(e, ReidSrdlError):
            raise
        raise WriterRefusedError(f"{name}: {cli.describe_error(e)}") from None


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
    """``reid-make-synthetic-reid`` / ``python tools/make_synthetic_reid.py``: the exit code."""
    return cli.run(_make, argv)


def _make(argv) -> None:
    args = parse_args(argv)
    for name in args.format:  # everything a writer would refuse, before the first one writes
        with _refusals_named(name):
            check_writer_args(name, args.out, args.ids, args.seed, args.overwrite)
    for name in args.format:
        start = time.perf_counter()
        with _refusals_named(name):
            folder = WRITERS[name](args.out, num_ids=args.ids, seed=args.seed, overwrite=args.overwrite)
        with open(os.path.join(folder, MARKER_FILE), encoding="utf-8") as f:
            counts = json.load(f)["counts"]
        print(
            f"wrote {name} at {folder} in {time.perf_counter() - start:.1f} s: "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
        )
