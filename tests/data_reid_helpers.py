"""A tiny root holding every synthetic re-id layout (the ``tiny_reid_root`` fixture of
conftest.py writes it once per session), and the counts each must show.

The expected counts are worked out by hand from the writers' parameters (each identity sees
k cameras, m images per camera, ...), not read from the code under test.
"""

from conftest import TINY_MARKET

DUKE = dict(num_ids=8, seed=0, cameras_per_id=3, images_per_id_camera=3, num_distractors=2)
MSMT = dict(num_ids=8, seed=0, cameras_per_id=3, images_per_id_camera=3)
CUHK03 = dict(num_ids=10, seed=0, images_per_view=2, num_classic_test=3)
VIPER = dict(num_ids=10, seed=0)

# DukeMTMC-reID: T = Q = 4 ids, k = 3 cameras, m = 3 images, D = 2 distractors.
#   train 4*3*3 = 36 images of 4 ids on cameras 0..7 (ids 0-3 see cameras 0-2, 3-5, 6,7,0, 1-3);
#   query 4*3 = 12 images of 4 ids; gallery 4*3*2 + 2*3 = 30 images of 4 + 2 ids.
DUKE_COUNTS = {"train": (36, 4, 8), "query": (12, 4), "gallery": (30, 6)}
# MSMT17: T = Q = 4; list_train 4*3*3 - 4 = 32 (one validation image per id), list_val 4;
#   training cameras: ids 0-3 see 0-2, 3-5, 6-8, 9-11 -> 12 cameras; query 12; gallery 24.
MSMT_COUNTS = {"train": (32, 4, 12), "val": 4, "query": (12, 4), "gallery": (24, 4)}
# CUHK03: 10 people, 2 per camera pair, 2 images per view (4 per person), 2 cameras (views).
#   classic: 3 test people -> train 7 ids / 28 images, query = gallery = 12 images of 3 ids;
#   new protocol: ceil(10/2) = 5 training ids / 20 images; query 5*2 = 10; gallery 5*(4-2) = 10.
CUHK03_COUNTS = {
    True: {"train": (28, 7, 2), "query": (12, 3), "gallery": (12, 3), "splits": 20},
    False: {"train": (20, 5, 2), "query": (10, 5), "gallery": (10, 5), "splits": 1},
}
# VIPeR: 10 people -> 5 training ids (10 images), query 5 (cam_a), gallery 5 (cam_b); 20 splits.
VIPER_COUNTS = {"train": (10, 5, 2), "query": (5, 5), "gallery": (5, 5), "splits": 20}
# Market-1501 (tests/conftest.py TINY_MARKET: 8 ids): 4 training identities.
MARKET_TRAIN_IDS = TINY_MARKET["num_ids"] // 2


def write_all(root: str) -> str:
    from reid_srdl.data.synthetic import make_synthetic_market
    from reid_srdl.data.synthetic_reid import (
        make_synthetic_cuhk03,
        make_synthetic_duke,
        make_synthetic_msmt17,
        make_synthetic_viper,
    )

    make_synthetic_market(root, **TINY_MARKET)
    make_synthetic_duke(root, **DUKE)
    make_synthetic_msmt17(root, **MSMT)
    make_synthetic_cuhk03(root, **CUHK03)
    make_synthetic_viper(root, **VIPER)
    return root


def counts(samples):
    """(images, identities, cameras) of a list of (path, pid, camid, ...) tuples."""
    return len(samples), len({s[1] for s in samples}), len({s[2] for s in samples})
