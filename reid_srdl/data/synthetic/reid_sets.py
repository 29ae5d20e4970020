"""Small synthetic re-id sets in the exact on-disk forms torchreid's classes read.

The people, cameras and pictures come from the Market-1501 renderer
(:mod:`reid_srdl.data.synthetic.people`); each data set draws them from its own seed streams, so
two data sets written with the same seed show different people under different cameras:
a domain shift, as between the real sets.

  * DukeMTMC-reID: ``ROOT/dukemtmc-reid/DukeMTMC-reID/{bounding_box_train,bounding_box_test,
    query}/0001_c2_f0046182.jpg`` -- 8 cameras; one query per test identity and camera, the
    rest of its images in the gallery, plus gallery-only distractor identities.
  * MSMT17: ``ROOT/msmt17/MSMT17_V1/{train,test}/PPPP/PPPP_III_CC_DDDDtod_FFFF_N.jpg`` with
    ``list_train.txt``, ``list_val.txt``, ``list_query.txt``, ``list_gallery.txt``
    (``PPPP/name.jpg label`` lines; train and test identities each labelled from 0; 15
    cameras, read from the third field of the name; one validation image per training id).
  * CUHK03: the raw form users download -- ``ROOT/cuhk03/cuhk03_release/cuhk-03.mat``
    (MATLAB v7.3, i.e. HDF5: ``detected`` and ``labeled``, a 1x5 cell of camera pairs, each
    a persons x 10 cell of images, views 1 and 2 in cells 1-5 and 6-10, empty cells for
    missing images; ``testsets``, 20 classic test sets of (pair, person) rows) and the
    new-protocol ``cuhk03_new_protocol_config_{detected,labeled}.mat`` (``filelist``,
    ``labels``, ``train_idx``, ``query_idx``, ``gallery_idx``, 1-based).  torchreid's class
    extracts the images and writes its split files from these on its first read.
  * VIPeR: ``ROOT/viper/VIPeR/cam_a/NNN_AAA.bmp`` and ``cam_b/`` (one picture per person
    and camera; torchreid pairs the i-th files of the two folders).

Cameras are dealt to identities round-robin (identity i sees cameras ``i*k .. i*k+k-1``
modulo the number of cameras), so the counts of every split follow from the parameters
(see each writer) and the training cameras are 0..C-1.  Every data set is written into a
temporary sibling folder and renamed into place: nothing is ever half-written.  A
``synthetic.json`` in the data set's folder records the parameters and counts.
"""

import json
import logging
import os
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from reid_srdl.core.files import write_folder_atomically
from reid_srdl.data.reid_sets import LAYOUTS, DatasetLayoutError, dataset_dir, misplaced_hint
from reid_srdl.data.synthetic.market import (
    MARKER_FILE,
    _write_jpeg,
    ensure_synthetic_market,
    make_synthetic_market,
    synthetic_market_dir,
)
from reid_srdl.data.synthetic.people import (
    _rng,
    render_person,
    sample_camera,
    sample_identity,
    sample_shot,
    sample_track_facing,
)

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
# Seed-stream tags, one per data set (Market-1501's streams have no tag).
_DUKE, _MSMT, _CUHK03, _VIPER = 101, 102, 103, 104
# Kinds of draw inside a data set's streams.
_LAYOUT, _IDENTITY, _CAMERA, _TRACK, _IMAGE = range(5)

DUKE_CAMERAS = 8
MSMT_CAMERAS = 15
CUHK03_PAIRS = 5
CUHK03_CELLS = 10  # per person: 5 images per view
CUHK03_CLASSIC_SPLITS = 20
MSMT_TIMES = ("morning", "noon", "afternoon")
# Identities each writer accepts (at most the real set's; enough for every split to exist).
ID_RANGES = {
    "market1501": (4, 1501),
    "dukemtmcreid": (4, 3000),
    "msmt17": (4, 4101),
    "cuhk03": (2 * CUHK03_PAIRS, 1467),
    "viper": (2, 632),
}
VIPER_ANGLES = (0, 45, 90, 135, 180)


# --------------------------------------------------------------------------- shared helpers
def _cameras_of(index: int, per_id: int, num_cameras: int) -> List[int]:
    """Round-robin: identity ``index`` sees cameras index*k .. index*k+k-1 (mod C)."""
    return sorted({(index * per_id + j) % num_cameras for j in range(per_id)})


class _Painter:
    """Renders the people of one data set: identities and cameras from its own streams."""

    def __init__(self, seed: int, tag: int, num_cameras: int):
        self.seed, self.tag = seed, tag
        self.cameras = [sample_camera(_rng(seed, tag, _CAMERA, c)) for c in range(num_cameras)]
        self._identities: Dict[int, object] = {}

    def identity(self, person: int):
        if person not in self._identities:
            self._identities[person] = sample_identity(_rng(self.seed, self.tag, _IDENTITY, person))
        return self._identities[person]

    def camera(self, cam: int):
        return self.cameras[cam]

    def render(self, person: int, cam: int, image: int, variant: int = 0) -> np.ndarray:
        """One 128 x 64 BGR crop; the walking direction is a property of the (person, camera) track."""
        camera = self.cameras[cam]
        rng = _rng(self.seed, self.tag, _IMAGE, person, cam, image, variant)
        facing = sample_track_facing(_rng(self.seed, self.tag, _TRACK, person, cam), camera)
        return render_person(self.identity(person), camera, sample_shot(rng, facing), rng)

    def jpeg(self, path: str, person: int, cam: int, image: int) -> None:
        _write_jpeg(path, self.render(person, cam, image), self.cameras[cam].jpeg_quality)


def _frames(seed: int, tag: int, person: int, cam: int, count: int) -> List[int]:
    r = _rng(seed, tag, _TRACK, person, cam, 1)
    start = int(r.integers(1000, 5_000_000))
    return [int(f) for f in start + np.cumsum(r.integers(5, 120, size=count))]


def _write_marker(folder: str, generator: str, params: dict, counts: dict) -> None:
    marker = {
        "generator": f"reid_srdl.data.synthetic_reid:{generator}",
        "version": GENERATOR_VERSION,
        **params,
        "counts": counts,
    }
    with open(os.path.join(folder, MARKER_FILE), "w", encoding="utf-8") as f:
        json.dump(marker, f, indent=1)


def _check(num_ids: int, minimum: int, maximum: int, seed: int, **positive: int) -> None:
    if not minimum <= num_ids <= maximum:
        raise ValueError(f"num_ids must be in {minimum}..{maximum}, got {num_ids}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    for key, (value, low) in positive.items():
        if value < low:
            raise ValueError(f"{key} must be >= {low}, got {value}")


# --------------------------------------------------------------------------- DukeMTMC-reID
def make_synthetic_duke(
    root: str,
    num_ids: int = 40,
    seed: int = 0,
    cameras_per_id: int = 3,
    images_per_id_camera: int = 3,
    num_distractors: Optional[int] = None,
    overwrite: bool = False,
) -> str:
    """DukeMTMC-reID under ``root`` (returns ROOT/dukemtmc-reid).

    ``num_ids // 2`` training identities, the rest test identities, plus ``num_distractors``
    (default ``num_ids // 4``) gallery-only identities.  With T training and Q test ids,
    k = cameras_per_id, m = images_per_id_camera and D distractors:
    train T*k*m images; query Q*k (one per test identity and camera); gallery Q*k*(m-1) + D*m.
    """
    distractors = num_ids // 4 if num_distractors is None else num_distractors
    _check(
        num_ids,
        *ID_RANGES["dukemtmcreid"],
        seed,
        cameras_per_id=(cameras_per_id, 2),
        images_per_id_camera=(images_per_id_camera, 2),
        num_distractors=(distractors, 0),
    )
    if cameras_per_id > DUKE_CAMERAS:
        raise ValueError(f"cameras_per_id must be <= {DUKE_CAMERAS}, got {cameras_per_id}")
    folder = LAYOUTS["dukemtmcreid"].alternatives[0][0].split("/")[0]  # DukeMTMC-reID

    def write(tmp: str) -> None:
        rng = _rng(seed, _DUKE, _LAYOUT)
        pids = rng.permutation(rng.choice(np.arange(1, 7141), size=num_ids + distractors, replace=False))
        train = sorted(int(p) for p in pids[: num_ids // 2])
        test = sorted(int(p) for p in pids[num_ids // 2 : num_ids])
        extra = sorted(int(p) for p in pids[num_ids:])
        painter = _Painter(seed, _DUKE, DUKE_CAMERAS)
        split_dirs = {s: os.path.join(tmp, folder, s) for s in ("bounding_box_train", "bounding_box_test", "query")}
        for d in split_dirs.values():
            os.makedirs(d)
        counts = dict.fromkeys(split_dirs, 0)

        def put(split: str, pid: int, cam: int, frame: int, image: int) -> None:
            painter.jpeg(os.path.join(split_dirs[split], f"{pid:04d}_c{cam + 1}_f{frame:07d}.jpg"), pid, cam, image)
            counts[split] += 1

        for group, is_test in ((train, False), (test, True)):
            for i, pid in enumerate(group):
                for cam in _cameras_of(i, cameras_per_id, DUKE_CAMERAS):
                    for k, frame in enumerate(_frames(seed, _DUKE, pid, cam, images_per_id_camera)):
                        split = ("query" if k == 0 else "bounding_box_test") if is_test else "bounding_box_train"
                        put(split, pid, cam, frame, k)
        for j, pid in enumerate(extra):
            cam = j % DUKE_CAMERAS
            for k, frame in enumerate(_frames(seed, _DUKE, pid, cam, images_per_id_camera)):
                put("bounding_box_test", pid, cam, frame, k)
        _write_marker(
            tmp,
            "duke",
            dict(
                num_ids=num_ids,
                seed=seed,
                cameras_per_id=cameras_per_id,
                images_per_id_camera=images_per_id_camera,
                num_distractors=distractors,
                train_pids=train,
                test_pids=test,
                distractor_pids=extra,
            ),
            counts,
        )

    return write_folder_atomically(dataset_dir("dukemtmcreid", root), write, overwrite)


# --------------------------------------------------------------------------- MSMT17
def make_synthetic_msmt17(
    root: str,
    num_ids: int = 40,
    seed: int = 0,
    cameras_per_id: int = 3,
    images_per_id_camera: int = 3,
    overwrite: bool = False,
) -> str:
    """MSMT17 (V1 layout) under ``root`` (returns ROOT/msmt17).

    With T = num_ids // 2 training ids, Q the rest, k = cameras_per_id, m = images_per_id_camera:
    list_train T*k*m - T lines, list_val T (one image per training id), list_query Q*k,
    list_gallery Q*k*(m-1).
    """
    _check(
        num_ids,
        *ID_RANGES["msmt17"],
        seed,
        cameras_per_id=(cameras_per_id, 2),
        images_per_id_camera=(images_per_id_camera, 2),
    )
    if cameras_per_id > MSMT_CAMERAS:
        raise ValueError(f"cameras_per_id must be <= {MSMT_CAMERAS}, got {cameras_per_id}")
    version = LAYOUTS["msmt17"].alternatives[0][0].rstrip("/")  # MSMT17_V1
    train_dir, test_dir = (LAYOUTS["msmt17"].alternatives[0][i].split("/")[1] for i in (1, 2))  # train, test

    def write(tmp: str) -> None:
        base = os.path.join(tmp, version)
        painter = _Painter(seed, _MSMT, MSMT_CAMERAS)
        num_train = num_ids // 2
        lists: Dict[str, List[str]] = {"train": [], "val": [], "query": [], "gallery": []}
        # People 0..T-1 are the training ids, T..N-1 the test ids (labelled 0..Q-1 in test/).
        for person in range(num_ids):
            is_test = person >= num_train
            label = person - num_train if is_test else person
            split_dir = test_dir if is_test else train_dir
            os.makedirs(os.path.join(base, split_dir, f"{label:04d}"))
            index = 0
            group_index = label
            for c, cam in enumerate(_cameras_of(group_index, cameras_per_id, MSMT_CAMERAS)):
                r = _rng(seed, _MSMT, _TRACK, person, cam, 2)
                day = f"{int(r.integers(1, 5)):02d}{int(r.integers(1, 29)):02d}{MSMT_TIMES[int(r.integers(3))]}"
                for k, frame in enumerate(_frames(seed, _MSMT, person, cam, images_per_id_camera)):
                    name = f"{label:04d}/{label:04d}_{index:03d}_{cam + 1:02d}_{day}_{frame % 10000:04d}_{k % 2}.jpg"
                    painter.jpeg(os.path.join(base, split_dir, name), person, cam, k)
                    index += 1
                    if is_test:
                        lists["query" if k == 0 else "gallery"].append(f"{name} {label}")
                    else:  # the last image of a training id's first track is its validation image
                        last = c == 0 and k == images_per_id_camera - 1
                        lists["val" if last else "train"].append(f"{name} {label}")
        for key, lines in lists.items():
            with open(os.path.join(base, f"list_{key}.txt"), "w", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in lines))
        _write_marker(
            tmp,
            "msmt17",
            dict(num_ids=num_ids, seed=seed, cameras_per_id=cameras_per_id, images_per_id_camera=images_per_id_camera),
            {k: len(v) for k, v in lists.items()},
        )

    return write_folder_atomically(dataset_dir("msmt17", root), write, overwrite)


# --------------------------------------------------------------------------- CUHK03
def cuhk03_image_name(pair: int, person: int, cell: int) -> str:
    """The name torchreid's CUHK03 gives an extracted image (all 0-based in, 1-based out)."""
    view = 1 if cell < CUHK03_CELLS // 2 else 2
    return f"{pair + 1:01d}_{person + 1:03d}_{view:01d}_{cell + 1:02d}.png"


def make_synthetic_cuhk03(
    root: str,
    num_ids: int = 40,
    seed: int = 0,
    images_per_view: int = 2,
    num_classic_test: Optional[int] = None,
    overwrite: bool = False,
) -> str:
    """CUHK03 in its downloaded form under ``root`` (returns ROOT/cuhk03).

    ``num_ids`` people over the 5 camera pairs (as evenly as possible), ``images_per_view``
    (2..5) pictures per view, each in a detected and a labeled version (different crops).
    With N = num_ids, v = images_per_view, C = num_classic_test (default N // 4):
      * classic splits (20): train N - C ids, (N - C)*2v images; query = gallery = the C test
        ids' 2v*C images;
      * new protocol: train ceil(N/2) ids, ceil(N/2)*2v images; query 2 per test id (one per
        view), gallery 2v - 2 per test id.
    """
    classic = num_ids // 4 if num_classic_test is None else num_classic_test
    _check(num_ids, *ID_RANGES["cuhk03"], seed, images_per_view=(images_per_view, 2), num_classic_test=(classic, 1))
    if images_per_view > CUHK03_CELLS // 2:
        raise ValueError(f"images_per_view must be <= {CUHK03_CELLS // 2}, got {images_per_view}")
    if classic >= num_ids:
        raise ValueError(f"num_classic_test must be < num_ids, got {classic}")
    import h5py
    from scipy.io import savemat

    layout = LAYOUTS["cuhk03"].alternatives[0]  # cuhk03_release/cuhk-03.mat, the two protocol files
    sizes = [num_ids // CUHK03_PAIRS + (p < num_ids % CUHK03_PAIRS) for p in range(CUHK03_PAIRS)]
    people = [(p, i) for p in range(CUHK03_PAIRS) for i in range(sizes[p])]  # (pair, person) in file order
    filled = [c for c in range(CUHK03_CELLS) if c % (CUHK03_CELLS // 2) < images_per_view]

    def write(tmp: str) -> None:
        # Views 1 and 2 of pair p are cameras 2p and 2p+1 of the painter.
        painter = _Painter(seed, _CUHK03, 2 * CUHK03_PAIRS)
        os.makedirs(os.path.join(tmp, os.path.dirname(layout[0])))
        with h5py.File(os.path.join(tmp, layout[0]), "w") as mat:
            refs = mat.create_group("#refs#")

            def stored(array: np.ndarray):
                return refs.create_dataset(f"r{len(refs)}", data=array).ref

            # MATLAB writes arrays transposed; torchreid reads every one back with `.T`.
            empty = np.zeros(2, np.uint64)  # how MATLAB stores an empty cell
            for variant, kind in enumerate(("detected", "labeled")):
                pairs = np.empty((1, CUHK03_PAIRS), dtype=h5py.ref_dtype)
                for p in range(CUHK03_PAIRS):
                    cells = np.empty((CUHK03_CELLS, sizes[p]), dtype=h5py.ref_dtype)
                    for i in range(sizes[p]):
                        person = sum(sizes[:p]) + i
                        for c in range(CUHK03_CELLS):
                            if c in filled:
                                cam = 2 * p + (c >= CUHK03_CELLS // 2)
                                rgb = painter.render(person, cam, c, variant)[..., ::-1]  # H x W x 3, RGB
                                cells[c, i] = stored(np.ascontiguousarray(rgb.T))
                            else:
                                cells[c, i] = stored(empty)
                    pairs[0, p] = stored(cells)
                mat.create_dataset(kind, data=pairs)
            tests = np.empty((1, CUHK03_CLASSIC_SPLITS), dtype=h5py.ref_dtype)
            rng = _rng(seed, _CUHK03, _LAYOUT, 1)
            for s in range(CUHK03_CLASSIC_SPLITS):
                chosen = sorted(rng.choice(len(people), size=classic, replace=False))
                rows = np.array([[people[j][0] + 1, people[j][1] + 1] for j in chosen], np.float64)  # 1-based
                tests[0, s] = stored(rows.T)
            mat.create_dataset("testsets", data=tests)

        # New protocol (Zhong et al. 2017): identities split once; per test id one query per view.
        rng = _rng(seed, _CUHK03, _LAYOUT, 2)
        order = rng.permutation(len(people))
        train_people = set(order[: (num_ids + 1) // 2].tolist())
        filelist, labels, train_idx, query_idx, gallery_idx = [], [], [], [], []
        for j, (p, i) in enumerate(people):
            queries = {int(rng.choice([c for c in filled if (c >= CUHK03_CELLS // 2) == view])) for view in (0, 1)}
            for c in filled:
                filelist.append(cuhk03_image_name(p, i, c))
                labels.append(j + 1)
                n = len(filelist)  # 1-based index, as MATLAB
                (train_idx if j in train_people else query_idx if c in queries else gallery_idx).append(n)
        cell = np.empty((len(filelist), 1), dtype=object)
        for n, name in enumerate(filelist):
            cell[n, 0] = name
        # Integer arrays: torchreid indexes with them (a MATLAB double would not do).
        config = {
            "filelist": cell,
            "labels": np.array(labels, np.int32)[:, None],
            "train_idx": np.array(train_idx, np.int32)[:, None],
            "query_idx": np.array(query_idx, np.int32)[:, None],
            "gallery_idx": np.array(gallery_idx, np.int32)[:, None],
        }
        for path in layout[1:]:
            savemat(os.path.join(tmp, path), config)
        images = len(people) * len(filled)
        _write_marker(
            tmp,
            "cuhk03",
            dict(
                num_ids=num_ids,
                seed=seed,
                images_per_view=images_per_view,
                num_classic_test=classic,
                people_per_pair=sizes,
            ),
            {
                "detected": images,
                "labeled": images,
                "new_train": len(train_idx),
                "new_query": len(query_idx),
                "new_gallery": len(gallery_idx),
            },
        )

    return write_folder_atomically(dataset_dir("cuhk03", root), write, overwrite)


# --------------------------------------------------------------------------- VIPeR
def make_synthetic_viper(root: str, num_ids: int = 40, seed: int = 0, overwrite: bool = False) -> str:
    """VIPeR under ``root`` (returns ROOT/viper): one .bmp per person in cam_a/ and cam_b/.

    torchreid draws 10 random halvings into 20 splits (each direction a split): train
    2*(N // 2) images of N // 2 ids, query and gallery N - N // 2 images each.
    """
    _check(num_ids, *ID_RANGES["viper"], seed)
    cam_dirs = LAYOUTS["viper"].alternatives[0]  # VIPeR/cam_a/, VIPeR/cam_b/

    def write(tmp: str) -> None:
        painter = _Painter(seed, _VIPER, 2)
        for cam, rel in enumerate(cam_dirs):
            os.makedirs(os.path.join(tmp, rel))
            for person in range(num_ids):
                angle = VIPER_ANGLES[int(_rng(seed, _VIPER, _TRACK, person, cam).integers(len(VIPER_ANGLES)))]
                path = os.path.join(tmp, rel, f"{person:03d}_{angle}.bmp")
                if not cv2.imwrite(path, painter.render(person, cam, 0)):
                    raise RuntimeError(f"BMP encoding failed for '{path}'")
        _write_marker(tmp, "viper", dict(num_ids=num_ids, seed=seed), {"cam_a": num_ids, "cam_b": num_ids})

    return write_folder_atomically(dataset_dir("viper", root), write, overwrite)


# --------------------------------------------------------------------------- registry
def _market(root: str, num_ids: int = 40, seed: int = 0, overwrite: bool = False) -> str:
    return make_synthetic_market(root, num_ids=num_ids, seed=seed, overwrite=overwrite)


def check_writer_args(name: str, root: str, num_ids: int, seed: int, overwrite: bool = False) -> None:
    """What a writer would refuse, checked before anything is written (for writing several)."""
    if name not in WRITERS:
        raise ValueError(f"no synthetic writer for '{name}' (writers: {', '.join(sorted(WRITERS))})")
    _check(num_ids, *ID_RANGES[name], seed)
    target = synthetic_market_dir(root) if name == "market1501" else dataset_dir(name, root)
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"'{target}' already exists; pass overwrite=True (--overwrite) to replace it")


# torchreid name -> writer(root, num_ids=..., seed=..., overwrite=...)
WRITERS: Dict[str, Callable[..., str]] = {
    "market1501": _market,
    "dukemtmcreid": make_synthetic_duke,
    "msmt17": make_synthetic_msmt17,
    "cuhk03": make_synthetic_cuhk03,
    "viper": make_synthetic_viper,
}


def ensure_synthetic(name: str, root: str, num_ids: int = 40, seed: int = 0) -> Tuple[str, bool]:
    """Write a synthetic ``name`` under ``root`` unless its folder is there; (folder, written).

    A folder already there (real or synthetic, complete or not) is never written over: the
    reader checks it.  Signs of a mis-laid real data set (e.g. ROOT/DukeMTMC-reID/) are an
    error rather than a reason to write synthetic data beside it.
    """
    if name == "market1501":
        before = os.path.isdir(os.path.join(root, "market1501"))
        return ensure_synthetic_market(root, num_ids=num_ids, seed=seed), not before
    if name not in WRITERS:
        raise DatasetLayoutError(f"no synthetic writer for '{name}' (writers: {', '.join(sorted(WRITERS))})")
    target = dataset_dir(name, root)
    if os.path.exists(target):
        return target, False
    hint = misplaced_hint(name, root)
    if hint:
        raise DatasetLayoutError(f"refusing to write a synthetic {LAYOUTS[name].title} under '{root}'{hint}")
    try:
        WRITERS[name](root, num_ids=num_ids, seed=seed)
    except FileExistsError:
        return target, False  # another process wrote it first
    logger.warning("wrote a synthetic %s (%d identities, seed %d) at %s", LAYOUTS[name].title, num_ids, seed, target)
    return target, True
