"""A small synthetic data set in the exact Market-1501 layout, for CPU demos and tests.

``make_synthetic_market(root)`` writes ROOT/market1501/Market-1501-v15.09.15/ with
bounding_box_train/, bounding_box_test/, query/ and gt_bbox/, using real Market-1501 file
names (``0002_c1s1_000451_03.jpg``), 128 x 64 JPEG crops, 6 cameras, junk (pid -1) and
distractor (pid 0) gallery boxes, disjoint train/test identities, hand-drawn boxes (``_00``)
for the query and gt_bbox images (each query is also in gt_bbox, as in Market-1501).  The
pictures are those of :mod:`reid_srdl.data.synthetic.people`.  The set is written into a
temporary sibling folder and renamed into place at the end: nothing is ever half-written.
"""

import json
import os
import shutil
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from reid_srdl.core.files import write_folder_atomically
from reid_srdl.data.market1501 import (
    DISTRACTOR_PID,
    GALLERY_FOLDER,
    GT_BBOX_FOLDER,
    HAND_DRAWN_BOX,
    JUNK_PID,
    MARKET_FOLDER,
    NUM_CAMERAS,
    QUERY_FOLDER,
    TRAIN_FOLDER,
    VERSION_FOLDER,
    MarketLayoutError,
    MarketName,
    find_market_dir,
    read_market1501,
)
from reid_srdl.data.synthetic.people import (
    _CAMERA,
    _IDENTITY,
    _IMAGE,
    _LAYOUT,
    _TRACK,
    Camera,
    Identity,
    _rng,
    render_distractor,
    render_junk,
    render_person,
    sample_camera,
    sample_identity,
    sample_shot,
    sample_track_facing,
)

MARKER_FILE = "synthetic.json"
GENERATOR_VERSION = 1


# --------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class _ImageSpec:
    folder: str
    name: MarketName
    kind: str  # person | junk | distractor
    pid: int  # whose figure is drawn (for junk: the identity partly visible)
    track_key: Tuple[int, ...]
    image_key: Tuple[int, ...]


def _track_frames(rng: np.random.Generator, count: int) -> Tuple[int, List[int]]:
    sequence = int(rng.integers(1, 7))
    start = int(rng.integers(100, 150000))
    frames = start + np.cumsum(rng.integers(5, 60, size=count))
    return sequence, [int(f) for f in frames]


def plan_synthetic_market(
    num_ids: int, seed: int, images_per_id_camera: int, gt_bbox_per_id_camera: int
) -> Tuple[List[_ImageSpec], Dict[str, List[int]]]:
    """Every file to write (folder, Market name, what to draw), and the train/test pids."""
    rng = _rng(seed, _LAYOUT)
    pids = np.sort(rng.choice(np.arange(1, 1502), size=num_ids, replace=False))
    shuffled = rng.permutation(pids)
    train_pids = sorted(int(p) for p in shuffled[: num_ids // 2])
    test_pids = sorted(int(p) for p in shuffled[num_ids // 2 :])
    camera_counts = rng.choice([2, 3, 4, 5, 6], size=num_ids, p=[0.25, 0.3, 0.25, 0.12, 0.08])
    cameras_of = {
        int(p): sorted(int(c) for c in rng.choice(NUM_CAMERAS, size=k, replace=False))
        for p, k in zip(pids, camera_counts)
    }
    # Every camera must appear in both the training and the test identities (as in
    # Market-1501), even in a tiny set: give a missing camera to the least-seen identity.
    for group in (train_pids, test_pids):
        for cam in range(NUM_CAMERAS):
            if not any(cam in cameras_of[p] for p in group):
                fewest = min(group, key=lambda p: (len(cameras_of[p]), p))
                cameras_of[fewest] = sorted(cameras_of[fewest] + [cam])

    specs: List[_ImageSpec] = []
    used_names = set()
    for pid in train_pids + test_pids:
        is_test = pid in test_pids
        for cam in cameras_of[pid]:
            hand_drawn = gt_bbox_per_id_camera if is_test else 0
            sequence, frames = _track_frames(_rng(seed, _TRACK, pid, cam), images_per_id_camera + hand_drawn)
            boxes = _rng(seed, _TRACK, pid, cam, 1).integers(1, 9, size=len(frames))
            for k, frame in enumerate(frames):
                if k < images_per_id_camera:  # a detector box
                    folder = GALLERY_FOLDER if is_test else TRAIN_FOLDER
                    box = int(boxes[k])
                else:  # a hand-drawn box; the first of each track is the query
                    folder = QUERY_FOLDER if k == images_per_id_camera else GT_BBOX_FOLDER
                    box = HAND_DRAWN_BOX
                name = MarketName(pid, cam, sequence, frame, box)
                used_names.add(name.filename())
                specs.append(_ImageSpec(folder, name, "person", pid, (pid, cam), (pid, cam, k)))

    # Junk and distractor gallery boxes, about a tenth of the gallery each.
    num_gallery = sum(s.folder == GALLERY_FOLDER for s in specs)
    extra = max(2, num_gallery // 10)
    for kind, label in (("junk", JUNK_PID), ("distractor", DISTRACTOR_PID)):
        for j in range(extra):
            r = _rng(seed, _TRACK, 0 if kind == "junk" else 1, 10_000 + j)
            while True:
                name = MarketName(
                    label,
                    int(r.integers(NUM_CAMERAS)),
                    int(r.integers(1, 7)),
                    int(r.integers(100, 150000)),
                    int(r.integers(1, 9)),
                )
                if name.filename() not in used_names:
                    break
            used_names.add(name.filename())
            drawn = int(test_pids[int(r.integers(len(test_pids)))])
            specs.append(_ImageSpec(GALLERY_FOLDER, name, kind, drawn, (drawn, name.camid), (label + 2, name.camid, j)))
    return specs, {"train": train_pids, "test": test_pids}


# --------------------------------------------------------------------------- writing
def _render(spec: _ImageSpec, seed: int, identities: Dict[int, Identity], cameras: List[Camera]) -> np.ndarray:
    camera = cameras[spec.name.camid]
    rng = _rng(seed, _IMAGE, *spec.image_key)
    if spec.kind == "distractor":
        return render_distractor(camera, rng)
    # The walking direction is a property of the track (one pass in front of one camera).
    facing = sample_track_facing(_rng(seed, _TRACK, *spec.track_key, 2), camera)
    shot = sample_shot(rng, facing)
    ident = identities[spec.pid]
    if spec.kind == "junk":
        return render_junk(ident, camera, shot, rng)
    return render_person(ident, camera, shot, rng)


def _write_jpeg(path: str, image: np.ndarray, quality: int) -> None:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for '{path}'")
    with open(path, "wb") as f:
        f.write(buf.tobytes())


def _write_dataset(
    data_dir: str, num_ids: int, seed: int, images_per_id_camera: int, gt_bbox_per_id_camera: int
) -> Dict[str, int]:
    specs, split = plan_synthetic_market(num_ids, seed, images_per_id_camera, gt_bbox_per_id_camera)
    identities = {pid: sample_identity(_rng(seed, _IDENTITY, pid)) for pid in split["train"] + split["test"]}
    cameras = [sample_camera(_rng(seed, _CAMERA, c)) for c in range(NUM_CAMERAS)]
    for folder in (TRAIN_FOLDER, GALLERY_FOLDER, QUERY_FOLDER, GT_BBOX_FOLDER):
        os.makedirs(os.path.join(data_dir, folder))
    counts = {f: 0 for f in (TRAIN_FOLDER, GALLERY_FOLDER, QUERY_FOLDER, GT_BBOX_FOLDER)}
    for spec in specs:
        image = _render(spec, seed, identities, cameras)
        quality = cameras[spec.name.camid].jpeg_quality
        filename = spec.name.filename()
        _write_jpeg(os.path.join(data_dir, spec.folder, filename), image, quality)
        counts[spec.folder] += 1
        if spec.folder == QUERY_FOLDER:  # Market-1501's queries are among the gt_bbox boxes
            shutil.copyfile(
                os.path.join(data_dir, QUERY_FOLDER, filename), os.path.join(data_dir, GT_BBOX_FOLDER, filename)
            )
            counts[GT_BBOX_FOLDER] += 1
    marker = {
        "generator": "reid_srdl.data.synthetic",
        "version": GENERATOR_VERSION,
        "num_ids": num_ids,
        "seed": seed,
        "images_per_id_camera": images_per_id_camera,
        "gt_bbox_per_id_camera": gt_bbox_per_id_camera,
        "train_pids": split["train"],
        "test_pids": split["test"],
        "counts": counts,
    }
    with open(os.path.join(data_dir, MARKER_FILE), "w", encoding="utf-8") as f:
        json.dump(marker, f, indent=1)
    return counts


def synthetic_market_dir(root: str) -> str:
    """Where the generator puts the data: ROOT/market1501/Market-1501-v15.09.15."""
    return os.path.join(root, MARKET_FOLDER, VERSION_FOLDER)


def make_synthetic_market(
    root: str,
    num_ids: int = 40,
    seed: int = 0,
    images_per_id_camera: int = 4,
    gt_bbox_per_id_camera: int = 3,
    overwrite: bool = False,
) -> str:
    """Write a synthetic Market-1501 set under `root`; returns the data folder.

    Half the identities (rounded down) are training identities, the rest test identities.
    Each identity is seen by 2-6 cameras; per (identity, camera) there are
    `images_per_id_camera` detector boxes (train or gallery) and, for test identities,
    `gt_bbox_per_id_camera` hand-drawn boxes, the first of which is the query.
    An existing data folder is an error unless `overwrite`.
    """
    if not 4 <= num_ids <= 1501:
        raise ValueError(f"num_ids must be in 4..1501 (Market-1501 pids are 1..1501), got {num_ids}")
    if images_per_id_camera < 1:
        raise ValueError(f"images_per_id_camera must be >= 1, got {images_per_id_camera}")
    if gt_bbox_per_id_camera < 1:
        raise ValueError(f"gt_bbox_per_id_camera must be >= 1 (the query itself), got {gt_bbox_per_id_camera}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return write_folder_atomically(
        synthetic_market_dir(root),
        lambda tmp: _write_dataset(tmp, num_ids, seed, images_per_id_camera, gt_bbox_per_id_camera),
        overwrite,
    )


def read_marker(data_dir: str) -> Optional[dict]:
    """The generator's record in a data folder, or None for a real (or foreign) data set."""
    path = os.path.join(data_dir, MARKER_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def ensure_synthetic_market(root: str, num_ids: int = 40, seed: int = 0) -> str:
    """The Market-1501 data folder under `root`, writing a synthetic one only if none is there.

    A complete data set already there (synthetic or real) is used as it is.  A folder that
    is there but incomplete is never written over: that is an error saying what is wrong.
    """
    market = os.path.join(root, MARKET_FOLDER)
    has_something = os.path.isdir(synthetic_market_dir(root)) or (
        os.path.isdir(market)
        and any(os.path.isdir(os.path.join(market, f)) for f in (TRAIN_FOLDER, QUERY_FOLDER, GALLERY_FOLDER))
    )
    if not has_something:
        try:
            return make_synthetic_market(root, num_ids=num_ids, seed=seed)
        except FileExistsError:
            pass  # another process finished the same set first; check it below
    try:
        data_dir = find_market_dir(root)
        read_market1501(root)  # every split present and non-empty, every name parseable
    except (MarketLayoutError, ValueError) as e:
        raise MarketLayoutError(
            f"refusing to write a synthetic data set over an incomplete Market-1501 folder under "
            f"'{root}': {e}. Remove it or choose another data.root."
        ) from None
    marker = read_marker(data_dir)
    if marker is not None and (marker.get("num_ids"), marker.get("seed")) != (num_ids, seed):
        warnings.warn(  # noqa: B028  (the caller's line is not more useful than this one)
            f"using the synthetic data set already in '{data_dir}' (num_ids={marker.get('num_ids')}, "
            f"seed={marker.get('seed')}), not the one asked for (num_ids={num_ids}, seed={seed}); "
            "delete the folder to regenerate it"
        )
    return data_dir
