"""From a video file and its detections to gallery items: plan (every check), crop, embed, store.

:func:`plan_ingest` does everything that can fail on bad input before anything is embedded:
it opens the video and decodes its first frame, reads the whole detections file once
(format, boxes against the frame size), checks that the last frame with a detection exists
(by seeking to it: a container's frame count can be wrong), and parses the start time.

:meth:`IngestPlan.crops` then streams: frames are decoded in order, the sampled detections
are cut out and yielded as :class:`Crop` (item metadata + pixels); nothing is held beyond
the current frame, except the K best crops per live track with ``best`` (see
:mod:`.sampling`).  With detections from a file, decoding stops after the last frame that
has any.

:func:`ingest` feeds the crops to a gallery store in batches: the ids already in the store
are skipped before embedding (a re-run of a killed ingest embeds nothing twice), the new
items are embedded, their crop images written (JPEG, ``<crop folder>/<16 hex digits of the
id>.jpg``, recorded relative to the crop folder's parent) and the batch added.  An item's id comes from (source, frame,
box) (:func:`reid_srdl.search.stores.base.item_id`), so the same footage always gives the
same ids.

Timestamps: frame ``f`` (0-based) was seen at ``start_time + f / fps`` UTC seconds.
"""

import contextlib
import logging
import math
import os
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.search.ingest.detections import NO_TRACK, Detection, DetectionFile, DetectionSummary
from reid_srdl.search.ingest.motion import MotionDetector, MotionOptions
from reid_srdl.search.ingest.sampling import BestPerTrack, check_sampling, sampled_frame
from reid_srdl.search.ingest.video import VideoError, VideoSource
from reid_srdl.search.stores.base import GalleryItem, GalleryStore

log = logging.getLogger(__name__)

JPEG_QUALITY = 95


class IngestError(ReidSrdlError, ValueError):
    """Ingest options that do not fit together or do not fit the footage."""


def parse_start_time(text: str) -> float:
    """An ISO 8601 time to UTC seconds since the epoch; a time without an offset is UTC (the
    rule of every time the tools read: :func:`reid_srdl.search.stores.records.parse_time`).

    >>> parse_start_time("2024-05-01T14:02:11Z")
    1714572131.0
    >>> parse_start_time("2024-05-01T16:02:11+02:00")
    1714572131.0
    """
    from reid_srdl.search.stores.records import parse_time

    return parse_time(text, "--start-time")


@dataclass(frozen=True)
class Crop:
    """One crop to add: its gallery item (``crop`` still None) and its pixels (BGR uint8)."""

    item: GalleryItem
    pixels: np.ndarray
    conf: float


@dataclass
class IngestReport:
    """Counts of one ingest: ``frames`` decoded, ``detections`` considered (after ``min_conf``;
    with motion detection, the boxes found), ``clipped`` boxes cut to the frame, ``below_conf``
    rows dropped, ``sampled`` crops chosen, of which ``new`` were added and ``skipped`` were
    already in the store."""

    frames: int = 0
    detections: int = 0
    clipped: int = 0
    below_conf: int = 0
    sampled: int = 0
    new: int = 0
    skipped: int = 0
    first_time: Optional[float] = None
    last_time: Optional[float] = None


@dataclass
class IngestPlan:
    """A checked ingest (made by :func:`plan_ingest`); :meth:`crops` runs it."""

    video: VideoSource
    source: str
    camera: str
    start_time: Optional[float]
    every: int
    best: Optional[int]
    best_by: str
    gap: int
    detections: Optional[DetectionFile] = None
    summary: Optional[DetectionSummary] = None
    motion: Optional[MotionOptions] = None
    on_boxes: Optional[Callable[[int, List[Detection]], None]] = None

    def timestamp(self, frame: int) -> Optional[float]:
        if self.start_time is None:
            return None
        return self.start_time + frame / self.video.fps

    def _crop(self, det: Detection, pixels: np.ndarray) -> Crop:
        item = GalleryItem(
            source=self.source,
            camera=self.camera,
            timestamp=self.timestamp(det.frame),
            frame=det.frame,
            box=tuple(int(v) for v in det.box),
            track=det.track,
        )
        return Crop(item, pixels, det.conf)

    def crops(self, report: IngestReport, progress: bool = False) -> Iterator[Crop]:
        """The sampled crops in frame order (with ``best``: in the order tracks are flushed,
        each track's crops in frame order).  Counts go into ``report``."""
        total = self.summary.last_frame + 1 if self.summary is not None else self.video.reported_frames
        bar = tqdm(
            total=total,
            unit="frame",
            desc=f"ingest {os.path.basename(self.video.path)}",
            disable=not progress,
            leave=False,
        )
        best = BestPerTrack(self.best, self.best_by, self.gap) if self.best is not None else None
        try:
            for frame, dets, pixels in self._frames_with_pixels(report, bar):
                if not sampled_frame(frame, self.every):
                    continue
                if best is not None:
                    for det in dets:
                        best.offer(det, self._cut(pixels, det))
                    for det, crop_pixels in best.expired(frame):
                        yield self._crop(det, crop_pixels)
                else:
                    for det in dets:  # a copy: a view would keep its whole frame alive in the batch
                        yield self._crop(det, self._cut(pixels, det).copy())
            if best is not None:
                for det, crop_pixels in best.flush_all():
                    yield self._crop(det, crop_pixels)
        finally:
            bar.close()

    @staticmethod
    def _cut(pixels: np.ndarray, det: Detection) -> np.ndarray:
        x, y, w, h = det.box
        return pixels[y : y + h, x : x + w]

    def _frames_with_pixels(self, report: IngestReport, bar) -> Iterator[Tuple[int, List[Detection], np.ndarray]]:
        """``(frame, detections, pixels)`` of the frames with detections, in order."""
        frames = self._motion_frames if self.detections is None else self._file_frames
        for frame, dets, pixels in frames(report, bar):
            report.detections += len(dets)
            yield frame, dets, pixels

    def _motion_frames(self, report: IngestReport, bar):
        # Every frame is decoded: the background model learns from all of them.
        detector = MotionDetector(self.video.width, self.video.height, self.motion)
        for frame, pixels in self.video.frames():
            report.frames += 1
            bar.update(1)
            dets = [Detection(frame, NO_TRACK, box, fill) for box, fill in detector.detect(pixels)]
            if self.on_boxes is not None:
                self.on_boxes(frame, dets)
            if dets:
                yield frame, dets, pixels

    def _file_frames(self, report: IngestReport, bar):
        # Only the sampled frames with detections are converted to pixels, and decoding stops
        # after the last of them.
        upcoming = ((f, d) for f, d in self.detections.by_frame() if sampled_frame(f, self.every))
        pending = [next(upcoming, None)]  # [(frame, detections)] of the next frame to cut from
        if pending[0] is None:
            return
        decoded = -1
        # ``wanted`` reads the pending frame each time the reader reaches a frame.
        for index, pixels in self.video.frames(wanted=lambda i: i == pending[0][0]):
            decoded = index
            report.frames += 1
            bar.update(1)
            frame, dets = pending[0]
            if index != frame:
                continue
            yield index, dets, pixels
            pending[0] = next(upcoming, None)
            if pending[0] is None:
                return
        next_frame, next_dets = pending[0]
        raise VideoError(
            f"video {self.video.path} ended after frame {decoded} (0-based) although frame {next_frame} has "
            f"detections ({self.detections.path} line {next_dets[0].line}); the crops before it were added, "
            f"a re-run adds none of them twice"
        )


def plan_ingest(
    video,
    camera: str,
    detections=None,
    motion: Optional[MotionOptions] = None,
    start_time: Optional[float] = None,
    fps: Optional[float] = None,
    every: int = 1,
    best: Optional[int] = None,
    best_by: str = "area",
    gap: int = 250,
    min_conf: Optional[float] = None,
    source: Optional[str] = None,
) -> IngestPlan:
    """Check everything about an ingest that can be checked before the expensive part.

    ``detections``: a MOTChallenge det/gt file; or ``motion``: options of the motion detector
    (exactly one).  ``start_time``: UTC seconds of frame 0 (None: items have no timestamp).
    ``fps`` overrides the container's frame rate.  ``every``/``best``/``best_by``/``gap``: see
    :mod:`.sampling`.  ``source``: the name the items record and their ids hash (default: the
    absolute path of the video, so two runs on the same file give the same ids).
    """
    if (detections is None) == (motion is None):
        raise IngestError("give detections (a MOTChallenge det.txt) or motion detection, exactly one")
    check_sampling(every, best, best_by, gap)
    if start_time is not None and not (isinstance(start_time, (int, float)) and math.isfinite(start_time)):
        raise IngestError(f"start_time is UTC seconds since the epoch; got {start_time!r}")
    from reid_srdl.search.stores.records import MAX_CAMERA, check_text

    check_text(camera, "camera", MAX_CAMERA)  # what the store would refuse, refused before any work
    v = VideoSource(video, fps=fps)
    if start_time is not None and v.fps is None:
        raise IngestError(f"video {v.path} does not state its frame rate, which timestamps need: give it (--fps)")
    source = check_text(source if source is not None else os.path.abspath(v.path), "source", allow_empty=False)
    plan = IngestPlan(
        video=v,
        source=source,
        camera=camera,
        start_time=None if start_time is None else float(start_time),
        every=int(every),
        best=None if best is None else int(best),
        best_by=best_by,
        gap=int(gap),
        motion=motion,
    )
    if motion is not None:
        motion.check()
        if best is not None:
            raise IngestError("--best picks crops per track, and motion detection gives no tracks: use --every")
        return plan
    d = DetectionFile(detections, v.width, v.height, min_conf=min_conf)
    s = d.check()
    if best is not None and s.untracked:
        raise IngestError(
            f"--best picks crops per track, but {d.path} line {s.first_untracked_line} has no track (id -1; "
            f"{s.untracked} such rows): use --every, or a tracker's output"
        )
    if s.last_frame >= 0 and not v.has_frame(s.last_frame):
        count = f"the container says {v.reported_frames} frames" if v.reported_frames else "it does not say"
        raise IngestError(
            f"{d.path} line {s.last_frame_line}: frame {s.last_frame + 1} (1-based) is past the end of "
            f"video {v.path} ({count}; that frame does not decode)"
        )
    plan.detections, plan.summary = d, s
    return plan


def crop_path(crops_dir: str, item_id: int) -> str:
    """Where the crop of item ``item_id`` goes: ``<crops_dir>/<16 hex digits>.jpg``."""
    return os.path.join(crops_dir, f"{item_id:016x}.jpg")


def crop_file(store: GalleryStore, crop: str) -> str:
    """The file an item's ``crop`` names: a relative path is relative to the folder that holds
    the store's crop folder (see :func:`ingest`)."""
    if os.path.isabs(crop) or not store.crop_dir:
        return crop
    return os.path.join(os.path.dirname(os.path.abspath(store.crop_dir)), crop)


def write_crop(path: str, pixels: np.ndarray) -> None:
    import cv2

    from reid_srdl.core.files import write_bytes_atomic

    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(pixels), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise IngestError(f"could not encode a {pixels.shape[1]}x{pixels.shape[0]} crop as JPEG")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_bytes_atomic(path, data.tobytes())


def _batches(crops: Iterable[Crop], size: int) -> Iterator[List[Crop]]:
    batch: List[Crop] = []
    for c in crops:
        batch.append(c)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def embed_crops(embedder, crops: List[Crop]) -> np.ndarray:
    """Features ``(n, dim)`` float32 of crops (BGR pixels), through the embedder's transform."""
    from PIL import Image

    images = [Image.fromarray(np.ascontiguousarray(c.pixels[:, :, ::-1])) for c in crops]
    return np.asarray(embedder.embed_pil(images), dtype=np.float32)


def ingest(
    plan: IngestPlan,
    store: GalleryStore,
    embedder,
    crops_dir: Optional[str],
    batch_size: int = 64,
    progress: bool = False,
) -> IngestReport:
    """Run ``plan`` into ``store``: skip known ids, write the new crops under ``crops_dir``
    (None: keep no crop images), embed them with ``embedder`` (an
    :class:`reid_srdl.search.embedder.Embedder`) and add them, ``batch_size`` at a time."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise IngestError(f"batch_size must be a whole number >= 1; got {batch_size!r}")
    report = IngestReport()
    if plan.summary is not None:
        report.clipped, report.below_conf = plan.summary.clipped, plan.summary.below_conf
    for batch in _batches(plan.crops(report, progress=progress), batch_size):
        report.sampled += len(batch)
        for c in batch:
            t = c.item.timestamp
            if t is not None:
                report.first_time = t if report.first_time is None else min(report.first_time, t)
                report.last_time = t if report.last_time is None else max(report.last_time, t)
        known = store.get([c.item.id for c in batch])
        fresh = [c for c, k in zip(batch, known) if k is None]
        # One crop can appear twice in a batch (a detector that repeats a box): embed it once.
        unique = list({c.item.id: c for c in fresh}.values())
        report.skipped += len(batch) - len(unique)
        if not unique:
            continue
        vectors = embed_crops(embedder, unique)
        written: List[str] = []
        try:
            if crops_dir is not None:
                # Recorded relative to the crop folder's parent ("crops/<id>.jpg" in a store
                # folder), as the stores resolve it: the gallery can move with its crops.
                base = os.path.dirname(os.path.abspath(crops_dir))
                items = []
                for c in unique:
                    path = os.path.abspath(crop_path(crops_dir, c.item.id))
                    write_crop(path, c.pixels)
                    written.append(path)
                    items.append(replace(c.item, crop=os.path.relpath(path, base)))
            else:
                items = [c.item for c in unique]
            added = store.add(vectors, items)
        except BaseException:
            # The add is all or nothing: so are its crops (no file left that no item names).
            for path in written:
                with contextlib.suppress(OSError):
                    os.remove(path)
            raise
        report.new += added
        report.skipped += len(unique) - added
    return report


def write_mot_row(fh, det: Detection) -> None:
    """One MOTChallenge row (1-based frame and box) of a detection, e.g. of the motion detector."""
    x, y, w, h = det.box
    fh.write(f"{det.frame + 1},{det.track},{x + 1},{y + 1},{w},{h},{det.conf:.3f},-1,-1,-1\n")


def run_ingest(
    plan: IngestPlan,
    store_location: str,
    model,
    embedding: dict,
    allow_mismatch: bool = False,
    save_detections: Optional[str] = None,
) -> IngestReport:
    """``plan`` into the store at ``store_location`` (created if new), embedded by ``model``
    with the ``embedding`` options (those of :class:`reid_srdl.search.embedder.Embedder`).

    An existing store's recorded model and settings must match (unless ``allow_mismatch``);
    a new store records them.  ``save_detections``: with motion detection, also write the
    boxes found as a MOTChallenge file (atomically, at the end).
    """
    from reid_srdl.core.files import atomic_path
    from reid_srdl.search.ingest.store_model import open_store_for

    with contextlib.ExitStack() as stack:
        store, embedder = open_store_for(store_location, model, embedding, allow_mismatch)
        stack.callback(store.close)
        if save_detections is not None:
            if plan.motion is None:
                raise IngestError("save_detections writes the boxes of the motion detector")
            tmp = stack.enter_context(atomic_path(save_detections))
            fh = stack.enter_context(open(tmp, "w", encoding="utf-8"))
            plan.on_boxes = lambda _frame, dets: [write_mot_row(fh, d) for d in dets]
        return ingest(
            plan,
            store,
            embedder,
            store.crop_dir,
            batch_size=embedder.options.batch_size,
            progress=embedder.options.progress,
        )
