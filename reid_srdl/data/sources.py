"""Several training sources as one training set: identity labels and cameras kept apart.

As torchreid's ``Dataset.__add__`` (what its data manager does for ``sources=[a, b]``), the
labels of source k are offset by the number of training identities of sources 0..k-1 and
each sample carries its source index (``dsetid``).  Cameras are offset too, by one more than
the largest camera id of the sources before (torchreid offsets by the *number* of cameras;
the two agree whenever a source's cameras are 0..C-1, and this way two sources' cameras can
never share an id even when one of them is missing a camera in its training split).
"""

from dataclasses import dataclass
from typing import List, Sequence, Tuple

from reid_srdl.data.reid_sets import DatasetReadError, Sample

TrainSample = Tuple[str, int, int, int]  # (path, label, camid, dsetid)


@dataclass(frozen=True)
class SourceRange:
    """Where one source's labels and cameras landed in the combined set."""

    name: str
    first_label: int
    num_pids: int
    first_camid: int
    num_camids: int  # the id range reserved: max camid + 1
    num_images: int


@dataclass(frozen=True)
class CombinedTrainSet:
    samples: List[TrainSample]  # source 0's samples first, each source in its own order
    sources: Tuple[SourceRange, ...]

    @property
    def num_pids(self) -> int:
        return sum(s.num_pids for s in self.sources)

    @property
    def num_camids(self) -> int:
        return sum(s.num_camids for s in self.sources)


def combine_train_sets(named: Sequence[Tuple[str, List[Sample]]]) -> CombinedTrainSet:
    """``[(name, train samples)]`` -> one training set with per-source label/camera offsets.

    Every source's labels must be 0..N-1 (as torchreid's classes relabel them); anything else
    would leave gaps or clashes in the classifier's outputs, so it is an error naming the set.
    """
    samples: List[TrainSample] = []
    ranges = []
    label_offset = camid_offset = 0
    for dsetid, (name, train) in enumerate(named):
        labels = sorted({s[1] for s in train})
        if labels != list(range(len(labels))):
            shown = labels[:5] + (["..."] if len(labels) > 5 else [])
            raise DatasetReadError(
                f"training labels of '{name}' are not 0..{len(labels) - 1} ({len(labels)} identities, labels "
                f"{shown}); its training list is inconsistent"
            )
        num_camids = max(s[2] for s in train) + 1
        if min(s[2] for s in train) < 0:
            raise DatasetReadError(f"'{name}' has negative camera ids in its training list")
        samples.extend((path, label + label_offset, camid + camid_offset, dsetid) for path, label, camid in train)
        ranges.append(SourceRange(name, label_offset, len(labels), camid_offset, num_camids, len(train)))
        label_offset += len(labels)
        camid_offset += num_camids
    return CombinedTrainSet(samples, tuple(ranges))
