"""Map-style datasets over sample lists, and the wrapper that adds each sample's index.

SRDL (and any method with per-sample targets) looks up a logit bank by sample index, so
the loaders yield ``(image, label, index)``; :class:`IndexedDataset` appends the index to
whatever a dataset yields.  The image decoding every file-based dataset here shares lives in
:func:`read_rgb_image`, so that a corrupt file is reported by name wherever it is met.

Training augmentation is seeded per sample (:class:`SeededSampler`): sample ``i`` of an
epoch is augmented from a seed made of the run's seed, the epoch and ``i``, in whichever
process decodes it.  So the augmentation does not depend on the number of DataLoader workers, on
which worker got the sample, or on whether the workers were started this epoch or kept
alive from the previous one (persistent workers: no start-up cost per epoch), and a
resumed run replays exactly the augmentations an uninterrupted one would have.
"""

import contextlib
import os
from typing import Callable, Iterator, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler, get_worker_info

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.images import ImageRejected, check_image, decode_rgb
from reid_srdl.core.seeding import AUGMENTATION, derive_seed

# How a DataLoader worker's exception reaches the main process (torch's ExceptionWrapper):
# "Caught ImageReadError in DataLoader worker process 1.\nOriginal Traceback ...", the
# original "...ImageReadError: <message>" as the last line.
_WORKER_PREFIX = "Caught ImageReadError"


class ImageReadError(ReidSrdlError, ValueError):
    """An image file could not be decoded; the message names the file, in one line.

    Constructible from one message string, so that torch's DataLoader re-raises it in the
    main process with its type intact (``ExceptionWrapper.reraise`` calls
    ``type(message)``).  That message is the worker's whole traceback; only the original
    line is kept, so a corrupt image reads the same with 0 or N workers.
    """

    def __init__(self, message: str):
        message = str(message)
        if message.startswith(_WORKER_PREFIX):
            last = message.rstrip().splitlines()[-1]
            message = last.split(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message)


def _image_problem(path: str, e: BaseException) -> str:
    if os.path.isdir(path):
        return f"cannot read image '{path}': it is a folder, not an image file"
    if isinstance(e, FileNotFoundError):
        return f"cannot read image '{path}': the file does not exist"
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return f"cannot read image '{path}': the file is empty (0 bytes)"
    return f"cannot read image '{path}': {e}"


def read_rgb_image(path: str) -> Image.Image:
    """Decode `path` fully as an RGB PIL image; an unreadable file, or one declaring more
    than ``limits.MAX_IMAGE_PIXELS`` pixels (a decompression bomb), raises naming the file."""
    try:
        # The whole decode happens now, so a truncated file fails here (with its name)
        # rather than later inside a transform.
        return decode_rgb(path)
    except (ImageRejected, OSError) as e:
        raise ImageReadError(_image_problem(path, e)) from None


def check_image_header(path: str) -> None:
    """Raise :class:`ImageReadError` unless `path` is an image file whose header decodes and
    whose size is within ``limits.MAX_IMAGE_PIXELS``.

    Cheaper than :func:`read_rgb_image` (no pixel is decoded): enough to find a missing,
    empty, foreign, oversized or folder-named file before a run starts.  A file cut inside
    its pixel data still passes; the full decode reports it when it is met.
    """
    try:
        check_image(path)
    except (ImageRejected, OSError) as e:
        raise ImageReadError(_image_problem(path, e)) from None


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


class SeededSampler(Sampler):
    """The training order and augmentation seeds of an epoch, from ``(seed, epoch)`` alone.

    Yields ``(index, epoch_seed)`` for each index ``base`` gives (a ``DistributedSampler``:
    with one replica, a seeded shuffle of the whole set; under torchrun, this rank's share of
    the same permutation).  Nothing is drawn from torch's global RNG, so the order does not
    depend on what else used it (the DataLoader draws its worker seed from it once per
    iterator, which persistent workers make once per run instead of once per epoch).
    ``set_epoch`` selects the epoch; a loop that never calls it gets the next epoch on each
    pass.
    """

    def __init__(self, base: Sampler, seed: int):
        self.base, self.seed, self.epoch = base, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        self.base.set_epoch(epoch)
        epoch_seed = derive_seed(self.seed, AUGMENTATION, epoch)
        for index in self.base:
            yield int(index), epoch_seed

    def __len__(self) -> int:
        return len(self.base)


def sample_seed(epoch_seed: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in the epoch seeded ``epoch_seed``."""
    return (epoch_seed * 1_000_003 + index) % (2**63 - 1)


@contextlib.contextmanager
def seeded_augmentation(seed: int):
    """torch's global RNG (the one torchvision's random transforms draw from) seeded with
    ``seed``.  In a DataLoader worker the RNG is the worker's own; in the main process
    (workers=0) its state is put back afterwards, so the training loop's RNG stream does
    not depend on how the data was loaded."""
    # The CPU generator only: torch.manual_seed would also seed every accelerator backend,
    # ~190 us per call here against ~3 us (a tenth of a 1000-image Fashion-MNIST epoch).
    generator = torch.default_generator
    saved = generator.get_state() if get_worker_info() is None else None
    generator.manual_seed(seed)
    try:
        yield
    finally:
        if saved is not None:
            generator.set_state(saved)


class IndexedDataset(Dataset):
    """Wraps a dataset yielding tuples; yields the same tuple with the sample index appended.

    ``(image, label)`` -> ``(image, label, index)``, where ``index`` is the position in this
    wrapper (so a subset wrapped here is numbered 0..len-1, matching a per-sample bank).
    A key ``(index, epoch_seed)`` (from :class:`SeededSampler`) decodes the sample with its
    augmentation seeded by :func:`sample_seed`.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, epoch_seed = key
            with seeded_augmentation(sample_seed(epoch_seed, index)):
                return self._item(index)
        return self._item(key)

    def _item(self, index: int):
        if not 0 <= index < len(self.dataset):
            raise IndexError(f"index {index} out of range for a dataset of {len(self.dataset)}")
        item = self.dataset[index]
        if not isinstance(item, tuple):
            item = (item,)
        return (*item, index)
