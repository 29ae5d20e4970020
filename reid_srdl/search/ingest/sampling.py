"""Which detections become gallery crops: every N-th frame, or the K best crops of each track.

``every``: the detections of frames ``0, N, 2N, ...`` (0-based indices).

``best``: per track, the K crops with the largest box area (``by="area"``, the clipped box:
what is cut out) or the highest detector confidence (``by="conf"``); a tie goes to the
earlier frame, then to the earlier line of the file.  Tracks are seen frame by frame, so the
choice is made with bounded memory: a track keeps at most K candidate crops (the pixels of
the box, copied out of the frame) and is *flushed* -- its crops handed on, its state dropped
-- once it has not been seen for ``gap`` frames, or at the end of the video.  Memory is at
most K crops for each track seen in the last ``gap`` frames.  A track id that comes back
after its flush starts afresh and may give K more crops.
"""

import heapq
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.search.ingest.detections import Detection

BEST_BY = ("area", "conf")


class SamplingError(ReidSrdlError, ValueError):
    """A sampling option is out of range."""


def check_sampling(every: int, best, by: str, gap: int) -> None:
    for name, value in (("every", every), ("gap", gap)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise SamplingError(f"{name} must be a whole number >= 1; got {value!r}")
    if best is not None and (isinstance(best, bool) or not isinstance(best, (int, np.integer)) or best < 1):
        raise SamplingError(f"best must be a whole number >= 1 (crops per track); got {best!r}")
    if by not in BEST_BY:
        raise SamplingError(f"best-by is one of {', '.join(BEST_BY)}; got {by!r}")


def sampled_frame(frame: int, every: int) -> bool:
    """Whether 0-based ``frame`` is one of ``--every N``'s frames."""
    return frame % every == 0


def score(det: Detection, by: str) -> float:
    return float(det.box[2] * det.box[3]) if by == "area" else det.conf


@dataclass(order=True)
class _Candidate:
    # Heap order: the worst candidate on top.  Larger score is better; on a tie the earlier
    # frame (then line) is better, so it is the later one that sorts first.
    key: Tuple[float, int, int]
    det: Detection = field(compare=False)
    pixels: np.ndarray = field(compare=False)


@dataclass
class _Track:
    last_seen: int
    heap: List[_Candidate] = field(default_factory=list)


class BestPerTrack:
    """The K best crops per track, chosen while the frames stream by (module docstring)."""

    def __init__(self, k: int, by: str = "area", gap: int = 250):
        check_sampling(1, k, by, gap)
        self.k, self.by, self.gap = int(k), by, int(gap)
        self._tracks: Dict[int, _Track] = {}

    def offer(self, det: Detection, pixels: np.ndarray) -> None:
        """Consider one detection of a track with its crop (``pixels``, a view into the frame, is
        copied only if chosen, so the frame itself is never held)."""
        track = self._tracks.setdefault(det.track, _Track(det.frame))
        track.last_seen = max(track.last_seen, det.frame)
        candidate_key = (score(det, self.by), -det.frame, -det.line)
        if len(track.heap) < self.k:
            heapq.heappush(track.heap, _Candidate(candidate_key, det, np.array(pixels, copy=True)))
        elif candidate_key > track.heap[0].key:
            heapq.heapreplace(track.heap, _Candidate(candidate_key, det, np.array(pixels, copy=True)))

    def expired(self, frame: int) -> List[Tuple[Detection, np.ndarray]]:
        """Flush the tracks not seen in the ``gap`` frames before ``frame``: their chosen crops,
        in frame order."""
        done = [t for t, s in self._tracks.items() if frame - s.last_seen > self.gap]
        return self._flush(done)

    def flush_all(self) -> List[Tuple[Detection, np.ndarray]]:
        return self._flush(list(self._tracks))

    def _flush(self, tracks: List[int]) -> List[Tuple[Detection, np.ndarray]]:
        out = []
        for t in sorted(tracks):
            out.extend((c.det, c.pixels) for c in self._tracks.pop(t).heap)
        out.sort(key=lambda dp: (dp[0].frame, dp[0].line, dp[0].track))
        return out

    @property
    def held(self) -> int:
        """How many crops are held in memory now."""
        return sum(len(t.heap) for t in self._tracks.values())
