"""Write a synthetic data set in the Market-1501 layout (see datasets/README.md).

    python tools/make_synthetic_market.py --out datasets/synthetic
    python tools/make_synthetic_market.py --out /tmp/market --ids 100 --seed 3 --overwrite
    reid-make-synthetic-market --out datasets/synthetic    # the same, as an installed command

The data goes to OUT/market1501/Market-1501-v15.09.15/, so ``data.root=OUT`` (or torchreid's
``ImageDataManager(root=OUT, sources='market1501')``) reads it.
"""

import argparse
import time

from reid_srdl.core import cli
from reid_srdl.data.synthetic.market import make_synthetic_market, read_marker


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="ROOT", help="data root to write under")
    p.add_argument("--ids", type=int, default=40, help="number of identities, half train, half test (default 40)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    p.add_argument(
        "--images-per-id-camera", type=int, default=4, help="detector boxes per identity and camera (default 4)"
    )
    p.add_argument(
        "--gt-bbox-per-id-camera",
        type=int,
        default=3,
        help="hand-drawn boxes per test identity and camera, the query included (default 3)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing data folder")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """``reid-make-synthetic-market`` / ``python tools/make_synthetic_market.py``: the exit code.

    The writer checks its arguments with plain ValueErrors: bad input here (exit 2)."""
    return cli.run(_make, argv, bad_input=(ValueError,))


def _make(argv) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    data_dir = make_synthetic_market(
        args.out,
        num_ids=args.ids,
        seed=args.seed,
        images_per_id_camera=args.images_per_id_camera,
        gt_bbox_per_id_camera=args.gt_bbox_per_id_camera,
        overwrite=args.overwrite,
    )
    counts = read_marker(data_dir)["counts"]
    print(f"wrote {data_dir} in {time.perf_counter() - start:.1f} s")
    for folder, n in counts.items():
        print(f"  {folder:20s} {n:6d} images")
