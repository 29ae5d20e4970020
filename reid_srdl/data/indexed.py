"""Map-style datasets over sample lists, and the wrapper that adds each sample's index.

SRDL (and any method with per-sample targets) looks up a logit bank by sample index, so
the loaders yield ``(image, label, index)``; :class:`IndexedDataset` appends the index to
whatever a dataset yields.  The image decoding every file-based dataset here shares lives in
:func:`read_rgb_image`, so that a corrupt file is reported by name wherever it is met.
"""
from typing import Callable, Optional, Sequence, Tuple

from PIL import Image
from torch.utils.data import Dataset

from reid_srdl.errors import ReidSrdlError


class ImageReadError(ReidSrdlError, ValueError):
    """An image file could not be decoded."""


def read_rgb_image(path: str) -> Image.Image:
    """Decode `path` fully as an RGB PIL image; an unreadable file raises naming the file."""
    try:
        with Image.open(path) as img:
            # convert() forces the full decode now, so a truncated file fails here (with its
            # name) rather than later inside a transform.
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:  # PIL raises all three on bad files
        raise ImageReadError(f"cannot read image '{path}': {e}") from None


class ImageFileDataset(Dataset):
    """Items ``(image, *sample[1:])`` for samples ``(path, target, ...)``.

    A training sample ``(path, label)`` gives ``(image, label)``; a re-id evaluation sample
    ``(path, pid, camid)`` gives ``(image, pid, camid)``.  Targets must be Python ints so
    that the default collation turns them into int64 tensors.
    """

    def __init__(
        self,
        samples: Sequence[Tuple],
        transform: Optional[Callable] = None,
        loader: Callable[[str], Image.Image] = read_rgb_image,
    ):
        self.samples = list(samples)
        self.transform = transform
        self.loader = loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, *targets = self.samples[index]
        image = self.loader(path)
        if self.transform is not None:
            image = self.transform(image)
        return (image, *targets)


class IndexedDataset(Dataset):
    """Wraps a dataset yielding tuples; yields the same tuple with the sample index appended.

    ``(image, label)`` -> ``(image, label, index)``, where ``index`` is the position in this
    wrapper (so a subset wrapped here is numbered 0..len-1, matching a per-sample bank).
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self.dataset):
            raise IndexError(f"index {index} out of range for a dataset of {len(self.dataset)}")
        item = self.dataset[index]
        if not isinstance(item, tuple):
            item = (item,)
        return (*item, index)
