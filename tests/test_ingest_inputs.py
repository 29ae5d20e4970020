"""Bad input to `reid-search ingest`: one line on stderr, exit code 2, no store created, for
each case (an unreadable video, a det.txt row with the wrong arity or a non-number, a box
outside the frame, a frame past the end -- also in a container that claims more frames than
it holds); and the video reader's own answers (frame count, seeking) against sequential
decoding."""

import numpy as np
import pytest
import torch
from ingest_helpers import FRAMES, HEIGHT, WIDTH, det_rows, write_det, write_lines, write_video

from reid_srdl.cli import search as cli
from reid_srdl.core.checkpoint import save_model_file
from reid_srdl.models import build_model
from reid_srdl.search.ingest import VideoError, VideoSource, read_frame

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inputs")
    video = str(tmp / "cam1.avi")
    drawn = write_video(video)
    det = str(tmp / "det.txt")
    write_det(det, drawn)
    torch.manual_seed(0)
    model = str(tmp / "model.pt")
    save_model_file(build_model("small_reid", 4, feature_dim=8).eval(), model, task="reid", height=32, width=16)
    # A container that lies: the first 60 % of the file.  Its header still says 40 frames.
    truncated = str(tmp / "truncated.avi")
    with open(video, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: int(len(data) * 0.6)])
    return {"video": video, "det": det, "drawn": drawn, "model": model, "truncated": truncated, "tmp": tmp}


def ingest(capsys, footage, store, *extra, video=None, det=None):
    argv = ["ingest", "--store", store, "--model", footage["model"], "--video", video or footage["video"]]
    argv += ["--camera", "c1"]
    if not any(a in ("--detect", "--detections") for a in extra):
        argv += ["--detections", det or footage["det"]]
    code = cli.main([str(a) for a in argv + list(extra)])
    out = capsys.readouterr()
    return code, out.out, out.err


def rows_with(footage, tmp_path, index, row):
    rows = det_rows(footage["drawn"])
    rows[index] = row
    path = str(tmp_path / "det.txt")
    write_lines(path, rows)
    return path


def assert_one_line(code, err, *parts):
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for p in parts:
        assert p in err, err


def test_unreadable_and_missing_video(capsys, footage, tmp_path):
    store = tmp_path / "store"
    junk = tmp_path / "junk.avi"
    junk.write_text("not a video\n" * 100)
    code, _, err = ingest(capsys, footage, store, video=str(junk))
    assert_one_line(code, err, "cannot read video", "junk.avi")
    code, _, err = ingest(capsys, footage, store, video=str(tmp_path / "none.mp4"))
    assert_one_line(code, err, "none.mp4 does not exist")
    assert not store.exists()


@pytest.mark.parametrize(
    "row, parts",
    [
        ("13,1,5,57,10,24", ["line 3", "expected 7 to 10 comma-separated numbers", "got 6"]),
        ("13,1,5,57,10,24,0.9,-1,-1,-1,7", ["line 3", "got 11"]),
        ("13,1,abc,57,10,24,0.9,-1,-1,-1", ["line 3", "column 3 (bb_left)", "expected a number; got 'abc'"]),
        ("13,1,5,57,10,24,nan,-1,-1,-1", ["line 3", "column 7 (conf)", "finite"]),
        ("13,1,5,57,10,24,0.9,-1,-1,zz", ["line 3", "column 10 (z)", "got 'zz'"]),
        ("0,1,5,57,10,24,0.9,-1,-1,-1", ["line 3", "column 1 (frame)", "MOTChallenge frames start at 1"]),
        ("13.5,1,5,57,10,24,0.9,-1,-1,-1", ["line 3", "column 1 (frame)", "got 13.5"]),
        ("13,-2,5,57,10,24,0.9,-1,-1,-1", ["line 3", "column 2 (id)", "-1 (no track)"]),
        ("13,1,5,57,0,24,0.9,-1,-1,-1", ["line 3", "column 5 (bb_width)", "size > 0"]),
        # A box with no pixel in the 160 x 96 frame: 1-based left 161 is past the last column.
        ("13,1,161,57,10,24,0.9,-1,-1,-1", ["line 3", "no pixel inside the 160x96 frame"]),
        ("13,1,5,-40,10,24,0.9,-1,-1,-1", ["line 3", "bb_top=-40", "no pixel inside"]),
    ],
)
def test_bad_det_rows(capsys, footage, tmp_path, row, parts):
    store = tmp_path / "store"
    code, _, err = ingest(capsys, footage, store, det=rows_with(footage, tmp_path, 2, row))
    assert_one_line(code, err, *parts)
    assert not store.exists()


def test_binary_and_overlong_det_files(capsys, footage, tmp_path):
    store = tmp_path / "store"
    binary = tmp_path / "det.bin"
    binary.write_bytes(b"1,1,2,2,3,3,1\n\xff\xfe\x00\x01\n")
    code, _, err = ingest(capsys, footage, store, det=str(binary))
    assert_one_line(code, err, "line 2", "not text")
    huge = tmp_path / "det.huge"
    huge.write_bytes(b"1," * 100_000)  # no newline: read in bounded pieces, refused
    code, _, err = ingest(capsys, footage, store, det=str(huge))
    assert_one_line(code, err, "line 1", "longer than 4096 characters")
    assert not store.exists()


def test_frame_past_the_end(capsys, footage, tmp_path):
    store = tmp_path / "store"
    rows = det_rows(footage["drawn"]) + [f"{FRAMES + 1},1,5,57,10,24,0.9,-1,-1,-1"]  # frame 41 of 40
    path = str(tmp_path / "det.txt")
    write_lines(path, rows)
    code, _, err = ingest(capsys, footage, store, det=path)
    assert_one_line(code, err, f"line {len(rows)}", "frame 41 (1-based) is past the end", "says 40 frames")
    assert not store.exists()


def test_container_that_claims_more_frames_than_it_holds(capsys, footage, tmp_path):
    v = VideoSource(footage["truncated"])
    decodable = sum(1 for _ in v.frames())
    assert v.reported_frames == FRAMES and 0 < decodable < FRAMES  # the header lies
    assert v.has_frame(decodable - 1) and not v.has_frame(decodable)
    store = tmp_path / "store"
    code, _, err = ingest(capsys, footage, store, video=footage["truncated"])
    assert_one_line(code, err, "frame 40 (1-based) is past the end", "the container says 40 frames")
    assert not store.exists()


@pytest.mark.parametrize(
    "extra, parts",
    [
        (["--start-time", "yesterday"], ["--start-time", "ISO 8601", "'yesterday'"]),
        (["--every", "0"], ["every must be a whole number >= 1"]),
        (["--best", "0"], ["best must be a whole number >= 1"]),
        (["--fps", "-5"], ["frame rate must be a positive number"]),
        (["--detect", "motion", "--best", "2"], ["motion detection gives no tracks"]),
        (["--detect", "motion", "--motion-min-area", "2"], ["fractions of the frame"]),
    ],
)
def test_bad_options(capsys, footage, tmp_path, extra, parts):
    store = tmp_path / "store"
    code, _, err = ingest(capsys, footage, store, *extra)
    assert_one_line(code, err, *parts)
    assert not store.exists()


def test_a_camera_name_the_store_would_refuse(capsys, footage, tmp_path):
    store = tmp_path / "store"
    argv = ["ingest", "--store", store, "--model", footage["model"], "--video", footage["video"]]
    code = cli.main([str(a) for a in argv + ["--camera", "c1\x00", "--detections", footage["det"]]])
    assert_one_line(code, capsys.readouterr().err, "camera", "control character")
    assert not store.exists()


def test_best_needs_tracks(capsys, footage, tmp_path):
    store = tmp_path / "store"
    path = str(tmp_path / "det.txt")
    write_det(path, footage["drawn"], tracks=False)
    code, _, err = ingest(capsys, footage, store, "--best", "2", det=path)
    assert_one_line(code, err, "line 1 has no track (id -1", "use --every")
    assert not store.exists()


def test_video_reader_size_count_and_seeking(footage):
    v = VideoSource(footage["video"])
    assert (v.width, v.height, v.fps, v.reported_frames) == (WIDTH, HEIGHT, 10.0, FRAMES)
    frames = [f for _, f in v.frames()]
    assert len(frames) == FRAMES
    for i in (0, 1, 17, FRAMES - 1):  # seeking lands on the very frame sequential decoding gives
        assert np.array_equal(read_frame(footage["video"], i), frames[i])
        assert np.array_equal(frames[i], footage["drawn"].frames[i])  # FFV1: what was drawn
    with pytest.raises(VideoError, match="has no frame 40"):
        read_frame(footage["video"], FRAMES)
    # Frames not wanted as pixels are decoded but not converted.
    got = [(i, f is not None) for i, f in v.frames(wanted=lambda i: i % 10 == 0)]
    assert got == [(i, i % 10 == 0) for i in range(FRAMES)]
