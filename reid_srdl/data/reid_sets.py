"""Every image re-id data set torchreid reads, through torchreid's own dataset classes.

``read_reid_set(name, root, ...)`` returns the ``(path, pid, camid)`` lists of one data set
(train, query, gallery; gt_bbox for Market-1501) as torchreid's class for ``name`` lists,
relabels and splits them.  The names are the keys of torchreid's image data set registry
(``torchreid.reid.data.datasets``); :data:`LAYOUTS` only adds what torchreid does not say
before it is too late: the folders each class needs, so that

  * a missing or mis-laid folder is one line naming the expected layout, found *before* the
    class is constructed -- torchreid's classes would otherwise raise ``'"..." is not found'``
    or, for most of them, try to download the data set (a missing top folder triggers
    ``download_dataset``; University-1652 calls gdown and ``unzip``);
  * which sets are for training only (CUHK-SYSU, torchreid's ``_train_only``) or testing only
    (SenseReID, whose "training set" is its own query and gallery).

Market-1501 keeps this project's own listing (:mod:`reid_srdl.data.market1501`, registered
with torchreid as ``market1501_srdl``): the same folders, identities sorted before
relabelling, and the gt_bbox images of the multi-query protocol.

What torchreid's classes do on the first read is kept as they do it: the random-split
sets (VIPeR, GRID, CUHK01, iLIDS, PRID) draw their 10 splits and write them as a json file
into the data folder, CUHK03 extracts its images from ``cuhk-03.mat`` (into
``images_detected/``, ``images_labeled/``) and writes its split files.  Two things are
added around that: the random draws are made from a fixed seed (the global ``random`` and
``numpy`` states are put back afterwards), so the same folder gives the same splits on every
machine; and the first read is serialised by a lock, so that the processes of a torchrun
job do not write the same files at once.  torchreid's prints go to this module's logger.

Lists are sorted by path: torchreid lists folders with ``glob``, whose order depends on the
file system, and the sample index is what a per-sample logit bank (SRDL) is keyed by.
"""

import contextlib
import hashlib
import inspect
import io
import json
import logging
import os
import random
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # torchreid: "Cython evaluation ... unavailable"
    import torchreid.reid.data.datasets as _torchreid_datasets
    from torchreid.reid.data.datasets.image import msmt17 as _torchreid_msmt17

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.data.market1501 import DATASET_NAME as MARKET_SRDL_NAME
from reid_srdl.data.market1501 import read_market1501

logger = logging.getLogger(__name__)

Sample = Tuple[str, int, int]  # (path, pid, camid)

# The random splits torchreid draws on a first read come from this seed.
SPLIT_SEED = 0
# Options torchreid's data manager passes to every class; each class declares the ones it uses.
SET_OPTIONS = ("split_id", "cuhk03_labeled", "cuhk03_classic_split")


class DatasetLayoutError(ReidSrdlError, FileNotFoundError):
    """A re-id data set's folder is missing, mis-laid or incomplete."""


class DatasetReadError(ReidSrdlError, ValueError):
    """torchreid's class could not read a data set that has the expected folders."""


@dataclass(frozen=True)
class Layout:
    """What one torchreid class needs under ``ROOT/<its dataset_dir>/``.

    ``alternatives``: one or more complete layouts (MSMT17 V1 or V2; CUHK01's extracted
    ``campus/`` or its zip); the first whose first entry exists is the one torchreid uses.
    An entry ending in ``/`` is a folder that must hold something, others are files.
    ``misplaced``: folder names that, found directly in ROOT, mean the archive was
    extracted one level too high.  ``split_file``: the json torchreid writes its splits to.
    """

    title: str
    alternatives: Tuple[Tuple[str, ...], ...]
    source: str  # where the data set comes from (for the error message's pointer)
    misplaced: Tuple[str, ...] = ()
    split_file: Optional[str] = None
    test_only: bool = False


def _msmt17_alternatives() -> Tuple[Tuple[str, ...], ...]:
    # torchreid's own table of MSMT17 versions (V1: train/ test/, V2: mask_train_v2/ ...).
    out = []
    for version, dirs in _torchreid_msmt17.VERSION_DICT.items():
        train, test = dirs[_torchreid_msmt17.TRAIN_DIR_KEY], dirs[_torchreid_msmt17.TEST_DIR_KEY]
        lists = tuple(f"{version}/list_{s}.txt" for s in ("train", "val", "query", "gallery"))
        out.append((f"{version}/", f"{version}/{train}/", f"{version}/{test}/") + lists)
    return tuple(out)


_CUHK02_PAIRS = tuple(f"Dataset/P{i}/cam{c}/" for i in range(1, 6) for c in (1, 2))

# Keyed by torchreid's registry name.  The paths are those each class's __init__ builds.
LAYOUTS: Dict[str, Layout] = {
    # Read by reid_srdl.data.market1501 (its own checks); listed for the names and the layout text.
    "market1501": Layout(
        "Market-1501",
        (
            (
                "Market-1501-v15.09.15/bounding_box_train/",
                "Market-1501-v15.09.15/bounding_box_test/",
                "Market-1501-v15.09.15/query/",
            ),
            ("bounding_box_train/", "bounding_box_test/", "query/"),
        ),
        "Market-1501-v15.09.15.zip",
        misplaced=("Market-1501-v15.09.15",),
    ),
    "dukemtmcreid": Layout(
        "DukeMTMC-reID",
        (("DukeMTMC-reID/bounding_box_train/", "DukeMTMC-reID/bounding_box_test/", "DukeMTMC-reID/query/"),),
        "DukeMTMC-reID.zip",
        misplaced=("DukeMTMC-reID",),
    ),
    "msmt17": Layout(
        "MSMT17",
        _msmt17_alternatives(),
        "MSMT17_V1.tar.gz (or MSMT17_V2)",
        misplaced=tuple(_torchreid_msmt17.VERSION_DICT),
    ),
    "cuhk03": Layout(
        "CUHK03",
        (
            (
                "cuhk03_release/cuhk-03.mat",
                "cuhk03_new_protocol_config_detected.mat",
                "cuhk03_new_protocol_config_labeled.mat",
            ),
        ),
        "cuhk03_release.zip and the two cuhk03_new_protocol_config_*.mat files",
        misplaced=("cuhk03_release",),
    ),
    "viper": Layout(
        "VIPeR", (("VIPeR/cam_a/", "VIPeR/cam_b/"),), "VIPeR.v1.0.zip", misplaced=("VIPeR",), split_file="splits.json"
    ),
    "grid": Layout(
        "GRID",
        (("underground_reid/probe/", "underground_reid/gallery/", "underground_reid/features_and_partitions.mat"),),
        "underground_reid.zip",
        misplaced=("underground_reid",),
        split_file="splits.json",
    ),
    "cuhk01": Layout(
        "CUHK01", (("campus/",), ("CUHK01.zip",)), "CUHK01.zip", misplaced=("campus",), split_file="splits.json"
    ),
    "ilids": Layout(
        "QMUL-iLIDS",
        (("i-LIDS_Pedestrian/Persons/",),),
        "i-LIDS_Pedestrian.tgz",
        misplaced=("i-LIDS_Pedestrian",),
        split_file="splits.json",
    ),
    "prid": Layout(
        "PRID (single-shot)",
        (("prid_2011/single_shot/cam_a/", "prid_2011/single_shot/cam_b/"),),
        "prid_2011.zip",
        misplaced=("prid_2011",),
        split_file="splits_single_shot.json",
    ),
    "sensereid": Layout(
        "SenseReID",
        (("SenseReID/test_probe/", "SenseReID/test_gallery/"),),
        "SenseReID.zip",
        misplaced=("SenseReID",),
        test_only=True,
    ),
    "cuhk02": Layout("CUHK02", (_CUHK02_PAIRS,), "CUHK02 (Dataset/P1..P5)", misplaced=("Dataset",)),
    "cuhksysu": Layout(
        "CUHK-SYSU", (("cropped_images/",),), "CUHK-SYSU person crops (cropped_images/)", misplaced=("cropped_images",)
    ),
    "university1652": Layout(
        "University-1652",
        (
            (
                "University-Release/train/",
                "University-Release/test/query_drone/",
                "University-Release/test/gallery_satellite/",
            ),
        ),
        "University-1652.zip",
        misplaced=("University-Release",),
    ),
}


def torchreid_registry() -> Dict[str, type]:
    """torchreid's image data set table (name -> class), as its data manager looks names up."""
    return dict(vars(_torchreid_datasets)["__image_datasets"])


def reid_dataset_names() -> List[str]:
    """Every torchreid image data set this project reads (registry names, sorted)."""
    return sorted(n for n in torchreid_registry() if n in LAYOUTS)


def unsupported_registry_names() -> List[str]:
    """Names in torchreid's registry that have no layout here (besides our own alias)."""
    return sorted(n for n in torchreid_registry() if n not in LAYOUTS and n != MARKET_SRDL_NAME)


def is_reid_dataset(name: str) -> bool:
    return name in LAYOUTS and name in torchreid_registry()


def dataset_class(name: str) -> type:
    """torchreid's class for ``name`` (an error listing the valid names otherwise)."""
    if not is_reid_dataset(name):
        raise DatasetLayoutError(f"'{name}' is not a re-id data set; valid names: {', '.join(reid_dataset_names())}")
    return torchreid_registry()[name]


def accepted_options(name: str) -> Tuple[str, ...]:
    """Which of split_id / cuhk03_labeled / cuhk03_classic_split the class of ``name`` takes."""
    params = inspect.signature(dataset_class(name).__init__).parameters
    return tuple(o for o in SET_OPTIONS if o in params)


def is_train_only(name: str) -> bool:
    return bool(getattr(dataset_class(name), "_train_only", False))


def is_test_only(name: str) -> bool:
    return LAYOUTS[name].test_only


def dataset_dir(name: str, root: str) -> str:
    """``ROOT/<torchreid's dataset_dir>`` (e.g. ROOT/dukemtmc-reid)."""
    return os.path.join(root, dataset_class(name).dataset_dir)


def layout_help(name: str, root: str) -> str:
    """``ROOT/dukemtmc-reid/ holding DukeMTMC-reID/bounding_box_train/, ...`` (alternatives with "or")."""
    layout = LAYOUTS[name]
    options = " or ".join(", ".join(alt) for alt in layout.alternatives)
    return f"{dataset_dir(name, root)}{os.sep} holding {options} (from {layout.source}; see datasets/README.md)"


def _present(path: str, entry: str) -> bool:
    if entry.endswith("/"):
        return os.path.isdir(path) and any(True for _ in os.scandir(path))
    return os.path.isfile(path)


def misplaced_hint(name: str, root: str) -> str:
    """A hint when the data seem to be one level off (archive extracted straight into ROOT,
    or ROOT pointing at the data set's own folder); "" when nothing suggests that."""
    top = dataset_class(name).dataset_dir
    base = os.path.basename(os.path.normpath(root))
    if base == top or base in LAYOUTS[name].misplaced:
        return f" ('{root}' looks like the data set's own folder: give the folder that contains {top}/ as the root)"
    for folder in LAYOUTS[name].misplaced:
        if os.path.isdir(os.path.join(root, folder)):
            return f" ('{os.path.join(root, folder)}' exists: move it into {os.path.join(root, top)}{os.sep})"
    return ""


def check_layout(name: str, root: str) -> str:
    """The data set's folder under ``root`` if it holds everything its torchreid class needs;
    otherwise one-line :class:`DatasetLayoutError` naming what is missing and the layout."""
    layout = LAYOUTS[name]
    if not os.path.isdir(root):
        raise DatasetLayoutError(
            f"{layout.title}: data root '{root}' does not exist; expected {layout_help(name, root)}"
        )
    base = dataset_dir(name, root)
    chosen = next(
        (alt for alt in layout.alternatives if os.path.exists(os.path.join(base, alt[0].rstrip("/")))),
        layout.alternatives[0],
    )
    for entry in chosen:
        path = os.path.join(base, entry.rstrip("/"))
        if not _present(path, entry):
            state = "is empty" if os.path.isdir(path) else "is missing"
            raise DatasetLayoutError(
                f"no {layout.title} data under '{root}': {path}{os.sep if entry.endswith('/') else ''} {state}; "
                f"expected {layout_help(name, root)}{misplaced_hint(name, root)}"
            )
    return base


def split_file(name: str, root: str, cuhk03_labeled: bool = False, cuhk03_classic_split: bool = False) -> Optional[str]:
    """The json file torchreid keeps a random-split set's splits in (None: no random splits)."""
    if name == "cuhk03":
        kind = "classic" if cuhk03_classic_split else "new"
        boxes = "labeled" if cuhk03_labeled else "detected"
        return os.path.join(dataset_dir(name, root), f"splits_{kind}_{boxes}.json")
    rel = LAYOUTS[name].split_file
    return os.path.join(dataset_dir(name, root), rel) if rel else None


def count_splits(name: str, root: str, cuhk03_labeled: bool = False, cuhk03_classic_split: bool = False) -> int:
    """How many splits torchreid's split file holds (the file exists after a first read)."""
    path = split_file(name, root, cuhk03_labeled, cuhk03_classic_split)
    if path is None:
        return 1
    if not os.path.isfile(path):
        read_reid_set(name, root, split_id=0, cuhk03_labeled=cuhk03_labeled, cuhk03_classic_split=cuhk03_classic_split)
    with open(path, encoding="utf-8") as f:
        try:
            return len(json.load(f))
        except ValueError as e:
            raise DatasetReadError(
                f"split file '{path}' is not valid json ({e}); delete it to have it drawn again"
            ) from None


# --------------------------------------------------------------------------- reading
@dataclass
class ReidSetLists:
    """One data set's splits as ``(path, pid, camid)`` lists, as torchreid's class gives them."""

    name: str
    data_dir: str
    train: List[Sample]  # labels 0..num_train_pids-1
    query: List[Sample]
    gallery: List[Sample]
    gt_bbox: Optional[List[Sample]] = None  # Market-1501's hand-drawn boxes (multi-query)
    options: Dict[str, object] = field(default_factory=dict)

    @property
    def num_train_pids(self) -> int:
        return len({s[1] for s in self.train})


@contextlib.contextmanager
def _seeded_global_rng(seed: int) -> Iterator[None]:
    """``random`` and ``numpy.random`` seeded for torchreid's split draws, then put back."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class _LogWriter(io.TextIOBase):
    """A text stream that logs each line (torchreid's prints) at INFO."""

    def __init__(self, prefix: str):
        self.prefix, self._buffer = prefix, ""

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            if line.strip():
                logger.info("%s: %s", self.prefix, line.strip())
        return len(text)


def _first_read_lock(folder: str):
    """An inter-process lock for one data folder (kept in the temp dir: the data folder may be
    read-only once prepared)."""
    from filelock import FileLock

    digest = hashlib.sha1(os.path.abspath(folder).encode()).hexdigest()[:16]
    return FileLock(os.path.join(tempfile.gettempdir(), f"reid_srdl-dataset-{digest}.lock"))


def _construct(name: str, root: str, options: Dict[str, object]):
    """(torchreid's dataset object, the data folder); the layout is checked first."""
    cls = dataset_class(name)
    base = check_layout(name, root)
    with (
        _first_read_lock(base),
        _seeded_global_rng(SPLIT_SEED),
        contextlib.redirect_stdout(_LogWriter(f"torchreid {cls.__name__}")),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", UserWarning)  # Market1501: "data structure is deprecated"
        try:
            return cls(root=root, verbose=False, **options), base
        except Exception as e:  # torchreid's assertions, KeyErrors, ... on data it cannot read
            message = str(e).strip() or type(e).__name__
            given = ", ".join(f"{k}={v}" for k, v in options.items()) or "default options"
            raise DatasetReadError(
                f"torchreid's {cls.__name__} could not read '{base}' ({given}): {type(e).__name__}: {message}; "
                f"expected {layout_help(name, root)}"
            ) from None


def _as_samples(items: Sequence[tuple]) -> List[Sample]:
    samples = sorted((str(p), int(pid), int(camid)) for p, pid, camid, *_ in items)
    for path, pid, camid in samples:
        # Ids are stored as int64 (data.build): a longer number in a file name would not fit.
        if not (-(2**63) <= pid < 2**63 and -(2**63) <= camid < 2**63):
            raise DatasetReadError(
                f"'{path}': pid {pid} or camera {camid} is outside the range ids are stored in (int64)"
            )
    return samples


def read_reid_set(
    name: str, root: str, split_id: int = 0, cuhk03_labeled: bool = False, cuhk03_classic_split: bool = False
) -> ReidSetLists:
    """The splits of data set ``name`` under ``root`` (the same root torchreid is given).

    Options a class does not take are not passed to it (the caller checks that a non-default
    option applies to some chosen set).  Market-1501 is read by this project's own listing.
    """
    root = os.path.abspath(os.path.expanduser(root))
    dataset_class(name)  # a clear error for an unknown name
    if name == "market1501":
        lists = read_market1501(root)
        return ReidSetLists(name, lists.data_dir, lists.train, lists.query, lists.gallery, lists.gt_bbox)
    given = {
        "split_id": int(split_id),
        "cuhk03_labeled": bool(cuhk03_labeled),
        "cuhk03_classic_split": bool(cuhk03_classic_split),
    }
    options = {k: given[k] for k in accepted_options(name)}
    if options.get("split_id", 0) > 0:
        # Checked here for a clear message (torchreid's own says "split_id exceeds range").
        available = count_splits(
            name, root, cuhk03_labeled=given["cuhk03_labeled"], cuhk03_classic_split=given["cuhk03_classic_split"]
        )
        if options["split_id"] >= available:
            raise DatasetReadError(
                f"split_id={options['split_id']} is out of range: {LAYOUTS[name].title} under "
                f"'{root}' has {available} split{'s' if available > 1 else ''} "
                f"(0..{available - 1})"
            )
    ds, base = _construct(name, root, options)
    lists = ReidSetLists(
        name, base, _as_samples(ds.train), _as_samples(ds.query), _as_samples(ds.gallery), None, options
    )
    for split in ("train", "query", "gallery"):
        if not getattr(lists, split):
            raise DatasetReadError(
                f"{LAYOUTS[name].title} under '{root}': torchreid found no {split} image; "
                f"expected {layout_help(name, root)}"
            )
    return lists
