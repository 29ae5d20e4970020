"""Footage to gallery items: a video, its detections (or a crude motion detector), crops with
camera, time, frame and box, embedded and added to a gallery store.

video       VideoSource: frames in order, the frame size, the frame rate, "does frame N exist?"
detections  DetectionFile: MOTChallenge det/gt rows checked, converted to 0-based, by frame
motion      MotionDetector: background subtraction boxes for a fixed camera (crude)
sampling    every N-th frame, or the K best crops per track with bounded memory
pipeline    plan_ingest (every check first), IngestPlan.crops (streaming), ingest (into a store)
"""

from reid_srdl.search.ingest.detections import Detection, DetectionFile, DetectionFormatError
from reid_srdl.search.ingest.motion import MotionDetector, MotionOptions
from reid_srdl.search.ingest.pipeline import (
    Crop,
    IngestError,
    IngestPlan,
    IngestReport,
    ingest,
    parse_start_time,
    plan_ingest,
)
from reid_srdl.search.ingest.video import VideoError, VideoSource, read_frame

__all__ = [
    "Crop",
    "Detection",
    "DetectionFile",
    "DetectionFormatError",
    "IngestError",
    "IngestPlan",
    "IngestReport",
    "MotionDetector",
    "MotionOptions",
    "VideoError",
    "VideoSource",
    "ingest",
    "parse_start_time",
    "plan_ingest",
    "read_frame",
]
