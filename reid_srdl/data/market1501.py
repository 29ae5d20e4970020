"""Market-1501 on torchreid's data API, plus the gt_bbox images for the multi-query protocol.

Listing files is kept apart from decoding pixels: :func:`parse_market_name` and
:func:`list_market_split` are pure (file names in, ``(path, pid, camid)`` out) and testable
without a single image.  :class:`Market1501SRDL` hands those lists to torchreid's
``ImageDataset`` so ``torchreid.reid.data.ImageDataManager(sources='market1501_srdl')`` works
on the same folders as torchreid's own ``market1501``.

Conventions (as torchreid and the official evaluation code):
  * camid is 0-based (file ``c1`` -> 0);
  * junk boxes (pid -1) are dropped from every split;
  * distractors (pid 0) are kept in the gallery only, where they act as negatives;
  * training pids are relabelled 0..N-1 in sorted pid order; query, gallery and gt_bbox keep
    the original pids so that they can be matched with each other.
"""

import os
import re
import warnings
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Tuple

with warnings.catch_warnings():
    # torchreid warns at import time that its Cython evaluation is not compiled; we do not
    # use its evaluation for speed, so the warning is noise here.
    warnings.simplefilter("ignore", UserWarning)
    import torchreid.reid.data.datasets as _torchreid_datasets
    from torchreid.reid.data import ImageDataset, register_image_dataset

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.data.indexed import read_rgb_image

MARKET_FOLDER = "market1501"
VERSION_FOLDER = "Market-1501-v15.09.15"
TRAIN_FOLDER = "bounding_box_train"
QUERY_FOLDER = "query"
GALLERY_FOLDER = "bounding_box_test"
GT_BBOX_FOLDER = "gt_bbox"
REQUIRED_FOLDERS = (TRAIN_FOLDER, QUERY_FOLDER, GALLERY_FOLDER)

JUNK_PID = -1
DISTRACTOR_PID = 0
NUM_CAMERAS = 6
# Hand-drawn boxes (query and gt_bbox) carry box index 00; detector boxes 01, 02, ...
HAND_DRAWN_BOX = 0

# 0002_c1s1_000451_03.jpg : pid (4 digits, or -1 for junk), camera 1-6, sequence, frame, box.
_NAME_RE = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$", re.ASCII)  # 0-9 only: not "٣"

Sample = Tuple[str, int, int]  # (path, pid, camid)


class MarketLayoutError(ReidSrdlError, FileNotFoundError):
    """The Market-1501 folders are missing, mis-laid or empty."""


class MarketNameError(ReidSrdlError, ValueError):
    """A file in a Market-1501 split folder is not named like a Market-1501 image."""


class MarketName(NamedTuple):
    """The fields of a Market-1501 file name; ``camid`` is 0-based."""

    pid: int
    camid: int
    sequence: int
    frame: int
    box: int

    def filename(self) -> str:
        pid = "-1" if self.pid == JUNK_PID else f"{self.pid:04d}"
        return f"{pid}_c{self.camid + 1}s{self.sequence}_{self.frame:06d}_{self.box:02d}.jpg"


def parse_market_filename(filename: str) -> MarketName:
    """All fields of ``0002_c1s1_000451_03.jpg`` (a bare name or a path)."""
    name = os.path.basename(filename)
    m = _NAME_RE.match(name)
    if m is None:
        raise MarketNameError(
            f"'{filename}' is not a Market-1501 image name; expected "
            "PPPP_cCsS_FFFFFF_BB.jpg such as 0002_c1s1_000451_03.jpg (pid -1 for junk)"
        )
    pid, camera, sequence, frame, box = (int(g) for g in m.groups())
    if not 1 <= camera <= NUM_CAMERAS:
        raise MarketNameError(
            f"'{filename}': camera c{camera} is outside c1..c{NUM_CAMERAS} (Market-1501 has {NUM_CAMERAS} cameras)"
        )
    return MarketName(pid, camera - 1, sequence, frame, box)


def parse_market_name(filename: str) -> Tuple[int, int]:
    """``0002_c1s1_000451_03.jpg`` -> ``(2, 0)``: (pid, 0-based camid)."""
    parsed = parse_market_filename(filename)
    return parsed.pid, parsed.camid


def _layout_help(root: str) -> str:
    return (
        f"expected {os.path.join(root, MARKET_FOLDER, VERSION_FOLDER)}/ (or "
        f"{os.path.join(root, MARKET_FOLDER)}/ directly) holding {TRAIN_FOLDER}/, "
        f"{QUERY_FOLDER}/, {GALLERY_FOLDER}/ and optionally {GT_BBOX_FOLDER}/"
    )


def find_market_dir(root: str) -> str:
    """The folder holding bounding_box_train/, query/, bounding_box_test/ under `root`.

    Accepts ROOT/market1501/Market-1501-v15.09.15/ and ROOT/market1501/ (as torchreid).
    """
    if not os.path.isdir(root):
        raise MarketLayoutError(f"Market-1501 root folder '{root}' does not exist; {_layout_help(root)}")
    market = os.path.join(root, MARKET_FOLDER)
    for candidate in (os.path.join(market, VERSION_FOLDER), market):
        if os.path.isdir(candidate) and any(os.path.isdir(os.path.join(candidate, f)) for f in REQUIRED_FOLDERS):
            missing = [f for f in REQUIRED_FOLDERS if not os.path.isdir(os.path.join(candidate, f))]
            if missing:
                raise MarketLayoutError(
                    f"Market-1501 folder '{candidate}' lacks {', '.join(m + '/' for m in missing)}; "
                    f"{_layout_help(root)}"
                )
            return candidate
    hint = ""
    if os.path.isdir(os.path.join(root, TRAIN_FOLDER)) or os.path.basename(os.path.normpath(root)) in (
        MARKET_FOLDER,
        VERSION_FOLDER,
    ):
        # The commonest mistake: pointing at the data folder itself instead of its root.
        hint = (
            f" ('{root}' looks like the data folder itself: give the folder that contains {MARKET_FOLDER}/ as the root)"
        )
    raise MarketLayoutError(
        f"no Market-1501 data under '{root}': looked for "
        f"{os.path.join(market, VERSION_FOLDER)}/ and {market}/; {_layout_help(root)}{hint}"
    )


def list_market_split(folder: str, keep_distractors: bool = False) -> List[Sample]:
    """``(path, pid, camid)`` for the .jpg files of one split folder, sorted by file name.

    Junk (pid -1) is always dropped; distractors (pid 0) only kept if `keep_distractors`.
    An empty result (no usable image) is an error naming the folder.
    """
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".jpg"))
    samples = []
    for name in names:
        pid, camid = parse_market_name(os.path.join(folder, name))
        if pid == JUNK_PID or (pid == DISTRACTOR_PID and not keep_distractors):
            continue
        samples.append((os.path.join(folder, name), pid, camid))
    if not samples:
        raise MarketLayoutError(
            f"split folder '{folder}' holds no usable image ({len(names)} .jpg files, "
            "all junk or distractors); expected files like 0002_c1s1_000451_03.jpg"
        )
    return samples


def relabel_pids(samples: List[Sample]) -> Tuple[List[Sample], Dict[int, int]]:
    """Training labels 0..N-1 in sorted pid order; returns the samples and the pid -> label map."""
    mapping = {pid: label for label, pid in enumerate(sorted({s[1] for s in samples}))}
    return [(path, mapping[pid], camid) for path, pid, camid in samples], mapping


@dataclass
class MarketLists:
    """The four Market-1501 splits as ``(path, pid, camid)`` lists."""

    data_dir: str
    train: List[Sample]  # pids relabelled 0..N-1
    query: List[Sample]
    gallery: List[Sample]  # distractors (pid 0) included
    gt_bbox: Optional[List[Sample]]  # hand-drawn boxes; None when the folder is absent
    train_pid_map: Dict[int, int]  # original pid -> training label

    @property
    def num_train_pids(self) -> int:
        return len(self.train_pid_map)


def read_market1501(root: str) -> MarketLists:
    """List every split of the Market-1501 data set found under `root`."""
    data_dir = find_market_dir(root)
    train, pid_map = relabel_pids(list_market_split(os.path.join(data_dir, TRAIN_FOLDER)))
    query = list_market_split(os.path.join(data_dir, QUERY_FOLDER))
    gallery = list_market_split(os.path.join(data_dir, GALLERY_FOLDER), keep_distractors=True)
    gt_dir = os.path.join(data_dir, GT_BBOX_FOLDER)
    gt_bbox = list_market_split(gt_dir) if os.path.isdir(gt_dir) else None
    return MarketLists(data_dir, train, query, gallery, gt_bbox, pid_map)


class Market1501SRDL(ImageDataset):
    """Market-1501 for torchreid's data manager, with ``gt_bbox`` for multi-query.

    Registered as ``'market1501_srdl'``.  Same folders as torchreid's ``Market1501``;
    differences: pids are relabelled in sorted order, layout errors name the folder
    expected, an unreadable image raises naming the file, and ``self.gt_bbox`` holds the hand-drawn boxes as
    ``(path, pid, camid, dsetid)`` tuples (an empty list when the folder is absent).
    """

    def __init__(self, root: str = "", market1501_500k: bool = False, **kwargs):
        if market1501_500k:
            raise ValueError("market1501_500k (the 500k extra distractors) is not supported by 'market1501_srdl'")
        # ImageDataManager passes options meant for other data sets (split_id, cuhk03_*).
        for key in ("split_id", "cuhk03_labeled", "cuhk03_classic_split"):
            kwargs.pop(key, None)
        lists = read_market1501(os.path.abspath(os.path.expanduser(root)))
        self.data_dir = lists.data_dir
        self.gt_bbox = [(*s, 0) for s in lists.gt_bbox or []]
        super().__init__(lists.train, lists.query, lists.gallery, **kwargs)

    def __getitem__(self, index: int) -> dict:
        # As torchreid's ImageDataset, but decoding with read_rgb_image: torchreid's own
        # read_image retries forever on an unreadable file instead of naming it.
        path, pid, camid, dsetid = self.data[index]
        img = read_rgb_image(path)
        if self.transform is not None:
            img = self._transform_image(self.transform, self.k_tfm, img)
        return {"img": img, "pid": pid, "camid": camid, "impath": path, "dsetid": dsetid}


DATASET_NAME = "market1501_srdl"


def register_market1501_srdl() -> str:
    """Register :class:`Market1501SRDL` with torchreid (idempotent); returns its name."""
    # torchreid keeps its table in a module global and refuses a second registration.
    table = vars(_torchreid_datasets).get("__image_datasets", {})
    if table.get(DATASET_NAME) is not Market1501SRDL:
        register_image_dataset(DATASET_NAME, Market1501SRDL)
    return DATASET_NAME


register_market1501_srdl()
