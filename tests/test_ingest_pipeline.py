"""Ingest without a store: the crops, boxes, frame indices and timestamps a plan yields, checked
exactly against the video and det.txt the test drew (tests/ingest_helpers.py); --every and
--best against a brute-force choice; the motion detector against the drawn rectangles."""

import os
import random

import numpy as np
import pytest
from ingest_helpers import (
    APPEAR,
    FRAMES,
    HEIGHT,
    START,
    START_ISO,
    WIDTH,
    det_rows,
    iou,
    write_det,
    write_lines,
    write_video,
)

from reid_srdl.search.ingest import IngestReport, MotionOptions, parse_start_time, plan_ingest
from reid_srdl.search.ingest.detections import Detection, DetectionFile, pixel_box
from reid_srdl.search.ingest.motion import MotionDetector
from reid_srdl.search.ingest.sampling import BestPerTrack


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("footage")
    video = str(tmp / "cam1.avi")
    drawn = write_video(video)
    det = str(tmp / "det.txt")
    write_det(det, drawn)
    return video, det, drawn


def crops_of(plan):
    report = IngestReport()
    return list(plan.crops(report)), report


def visible_boxes(drawn):
    """(frame, track, visible box) of every box the test drew."""
    return [(f, t, box) for f, boxes in drawn.visible.items() for t, box in boxes.items()]


def test_start_time_is_utc():
    assert START == 1714572131.0  # 2024-05-01T14:02:11Z, from `date -u -d ... +%s`
    assert parse_start_time(START_ISO) == START
    assert parse_start_time("2024-05-01T16:02:11+02:00") == START
    assert parse_start_time("2024-05-01T14:02:11") == START  # no offset: UTC


def test_crops_boxes_frames_and_times_match_what_was_drawn(footage):
    video, det, drawn = footage
    plan = plan_ingest(video, "c1", detections=det, start_time=parse_start_time(START_ISO))
    crops, report = crops_of(plan)
    got = [(c.item.frame, c.item.track, c.item.box) for c in crops]
    assert got == visible_boxes(drawn)  # every drawn box, in frame order, clipped to the frame
    for c in crops:
        f, (x, y, w, h) = c.item.frame, c.item.box
        assert np.array_equal(c.pixels, drawn.frames[f][y : y + h, x : x + w])  # FFV1 is lossless
        assert c.item.timestamp == START + f / 10.0
        assert c.item.camera == "c1" and c.item.source == os.path.abspath(video)
        assert c.conf == drawn.conf[f][c.item.track]
    # Track 2 leaves the frame on the left: its det.txt boxes reach outside and are clipped.
    outside = sum(1 for f, b in drawn.boxes.items() for t in b if b[t] != drawn.visible[f][t])
    assert outside == 2 and plan.summary.clipped == outside
    assert report.frames == FRAMES and report.detections == len(got)


def test_fps_override_and_no_start_time(footage):
    video, det, _ = footage
    crops, _ = crops_of(plan_ingest(video, "c1", detections=det, start_time=START, fps=25.0))
    assert all(c.item.timestamp == START + c.item.frame / 25.0 for c in crops)
    crops, _ = crops_of(plan_ingest(video, "c1", detections=det))
    assert all(c.item.timestamp is None for c in crops)


def test_every_takes_exactly_every_nth_frame(footage):
    video, det, drawn = footage
    crops, report = crops_of(plan_ingest(video, "c1", detections=det, every=4))
    expected = [(f, t, b) for f, t, b in visible_boxes(drawn) if f % 4 == 0]
    assert [(c.item.frame, c.item.track, c.item.box) for c in crops] == expected
    assert {c.item.frame for c in crops} == {f for f in range(APPEAR, FRAMES) if f % 4 == 0}


@pytest.mark.parametrize("by", ["area", "conf"])
def test_best_k_per_track_brute_force(footage, by):
    video, det, drawn = footage
    k = 3
    crops, _ = crops_of(plan_ingest(video, "c1", detections=det, best=k, best_by=by))
    # Brute force: all of a track's boxes, best first, ties to the earlier frame.
    expected = set()
    for track in (1, 2, 3):
        seen = [
            (-(b[2] * b[3] if by == "area" else drawn.conf[f][t]), f, b)
            for f, t, b in visible_boxes(drawn)
            if t == track
        ]
        expected |= {(track, f, b) for _, f, b in sorted(seen)[:k]}
    assert len(crops) == 3 * k
    assert {(c.item.track, c.item.frame, c.item.box) for c in crops} == expected
    if by == "area":
        # Track 1 grows as it walks: its largest boxes are its last ones (frames 36 and 37 tie
        # at 14 x 36, the earlier wins); track 2's full-size boxes tie, so its first frames
        # win; track 3 has one size: its first three.
        assert sorted(c.item.frame for c in crops if c.item.track == 1) == [36, 38, 39]
        assert sorted(c.item.frame for c in crops if c.item.track == 2) == [APPEAR, APPEAR + 1, APPEAR + 2]
        assert sorted(c.item.frame for c in crops if c.item.track == 3) == [20, 21, 22]


def test_best_with_every_ranks_only_the_sampled_frames(footage):
    video, det, drawn = footage
    crops, _ = crops_of(plan_ingest(video, "c1", detections=det, best=1, every=5))
    # Track 1's largest box on frames 0, 5, 10, ...: frame 35 (its boxes grow).
    assert {(c.item.track, c.item.frame) for c in crops} == {(1, 35), (2, 15), (3, 20)}


def test_best_flushes_a_track_gone_for_gap_frames(footage):
    video, det, _ = footage
    crops, _ = crops_of(plan_ingest(video, "c1", detections=det, best=2, gap=3))
    order = [c.item.track for c in crops]
    # Track 3 (last seen at frame 29) is handed on at frame 33; tracks 1 and 2 at the end of
    # the video, together, in frame order (track 2's best are frames 12-13, track 1's 38-39).
    # With the default gap all three come at the end.
    assert order == [3, 3, 2, 2, 1, 1]
    crops, _ = crops_of(plan_ingest(video, "c1", detections=det, best=2))
    assert [c.item.track for c in crops] == [2, 2, 3, 3, 1, 1]  # flushed together, in frame order


def test_best_holds_at_most_k_crops_per_live_track():
    best = BestPerTrack(k=2, by="area", gap=5)
    pixels = np.zeros((4, 2, 3), np.uint8)
    most = 0
    for f in range(200):
        for track in (f // 50, 100 + f // 50):  # two live tracks at a time, renewed every 50 frames
            best.offer(Detection(f, track, (0, 0, 2, 1 + f % 7), 1.0, f + 1), pixels)
        best.expired(f)
        most = max(most, best.held)
    assert most == 2 * 2 * 2  # K crops x (2 live tracks + the 2 not yet past their gap)


def test_unsorted_file_gives_the_same_crops(footage, tmp_path):
    video, det, drawn = footage
    rows = det_rows(drawn)
    random.Random(0).shuffle(rows)  # MOT gt.txt files are sorted by track, not frame
    shuffled = str(tmp_path / "gt.txt")
    write_lines(shuffled, rows)
    plan = plan_ingest(video, "c1", detections=shuffled)
    assert not plan.summary.in_order
    crops, _ = crops_of(plan)
    key = sorted((c.item.frame, c.item.track, c.item.box) for c in crops)
    assert key == sorted(visible_boxes(drawn))


def test_min_conf_drops_rows(footage):
    video, det, drawn = footage
    plan = plan_ingest(video, "c1", detections=det, min_conf=0.6)
    crops, _ = crops_of(plan)
    expected = [(f, t, b) for f, t, b in visible_boxes(drawn) if drawn.conf[f][t] >= 0.6]
    assert [(c.item.frame, c.item.track, c.item.box) for c in crops] == expected
    assert plan.summary.below_conf == len(visible_boxes(drawn)) - len(expected) > 0


def test_one_based_fractional_boxes_round_to_pixels(tmp_path):
    # MOTChallenge boxes are 1-based: bb_left 1 is pixel column 0.  Edges round half up.
    assert pixel_box(1, 1, 10, 20) == (0, 0, 10, 20)
    assert pixel_box(10.5, 3.49, 4.2, 6.0) == (10, 2, 14, 8)  # 9.5 -> 10, 2.49 -> 2, 13.7 -> 14, 8.49 -> 8
    path = str(tmp_path / "det.txt")
    write_lines(path, ["2, -1, 10.5, 3.49, 4.2, 6.0, 0.9", "1,-1,-3,-3,10,10,1"])
    d = DetectionFile(path, WIDTH, HEIGHT)
    s = d.check()
    assert (s.rows, s.clipped, s.untracked, s.in_order, s.last_frame, s.last_frame_line) == (2, 1, 2, False, 1, 1)
    groups = list(d.by_frame())
    assert [(f, [(x.box, x.clipped, x.line) for x in g]) for f, g in groups] == [
        (0, [((0, 0, 6, 6), True, 2)]),  # -4..6 clipped to 0..6
        (1, [((10, 2, 4, 6), False, 1)]),
    ]


def test_motion_detector_finds_the_moving_shapes(footage):
    video, _, drawn = footage
    plan = plan_ingest(video, "c1", motion=MotionOptions())
    crops, report = crops_of(plan)
    assert report.frames == FRAMES
    found = {}
    for c in crops:
        assert c.item.track == -1
        found.setdefault(c.item.frame, []).append(c.item.box)
    # Nothing before the shapes appear (frames 0-11: the background and the 10-frame warm-up).
    assert min(found) == APPEAR
    # Each drawn rectangle at least 3 pixels wide (the 3-pixel opening removes thinner strips:
    # track 2's last 2-pixel sliver at the frame's edge) is found by exactly one box, and no
    # box is anything else.  The bound: the shapes differ from the background in every pixel,
    # so the foreground mask is the rectangle; a 3x3 opening/closing leaves a rectangle as it
    # is, and 0.85 still allows a whole pixel column lost on one side of the narrowest box
    # (6/7 of a 7-pixel-wide clipped box).
    worst = 1.0
    for f in range(APPEAR, FRAMES):
        drawn_boxes = [b for b in drawn.visible[f].values() if b[2] >= 3 and b[3] >= 3]
        boxes = found.get(f, [])
        assert len(boxes) == len(drawn_boxes), f"frame {f}: {boxes} vs {drawn_boxes}"
        for b in drawn_boxes:
            worst = min(worst, max(iou(b, g) for g in boxes))
    assert worst >= 0.85


def test_motion_warmup_and_size_filters(footage):
    video, _, drawn = footage
    from reid_srdl.search.ingest import VideoSource

    v = VideoSource(video)
    frames = [f for _, f in v.frames()]
    # A warm-up past the last frame reports nothing; a minimum area above every shape's
    # (the largest drawn box covers 14 x 37 of 160 x 96 pixels, 3.4 %) drops them all.
    for options in (MotionOptions(warmup=FRAMES), MotionOptions(min_area=0.04)):
        d = MotionDetector(WIDTH, HEIGHT, options)
        assert all(d.detect(f) == [] for f in frames)
    # People are taller than wide: with min_aspect 2.5, the boxes flatter than that are
    # dropped, the others kept exactly.
    d = MotionDetector(WIDTH, HEIGHT, MotionOptions(min_aspect=2.5))
    kept = {f: [b for b, _ in d.detect(img)] for f, img in enumerate(frames)}
    for f in range(APPEAR, FRAMES):
        expected = sorted(b for b in drawn.visible[f].values() if b[2] >= 3 and 2.5 <= b[3] / b[2] <= 6)
        assert sorted(kept[f]) == expected
