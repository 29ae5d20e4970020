"""Re-id training images decoded once, resized, kept as uint8 tensors, augmented as tensors.

The file path (:func:`reid_srdl.data.transforms.reid_train_transform` on PIL images) decodes
every JPEG and resizes it at every step.  The resize is deterministic and comes before every
random step, so its output can be kept: :class:`DecodedImages` holds each training image
decoded (by the same :func:`~reid_srdl.data.indexed.read_rgb_image`) and resized (by the same
PIL ``Resize``) in one ``(N, 3, H, W)`` uint8 tensor, and :class:`TensorReidTrain` does the
random part on it -- flip, pad + random crop, ``to_tensor``'s ``/255``, normalisation, random
erasing -- drawing from torch's RNG exactly what the PIL transforms draw, in the same order
(torchvision's own ``get_params``), with the same float operations on tensors of the same
shape.  So a fixed-seed batch is bit-for-bit the file path's (tests/test_data_decoded.py).
What is kept: the PIL resize (not reproduced on tensors; its pixels are cached as they come).
What runs on tensors: flip, pad, crop, scaling, normalisation, erasing (all exact).

Memory: ``N x 3 x H x W`` bytes (Market-1501's 12,936 training images at 256x128: 1,213 MiB;
at 128x64: 303 MiB), estimated before anything is decoded; a set over the budget
(``data.cache_mb``, MiB) or over half the memory available keeps the file path.  The cache is
filled in the main process by a few threads (PIL releases the GIL while it decodes and
resizes) when a loader first iterates
(:class:`PreparedLoader`), before any worker process is started, so workers read the same
pages (fork) instead of each decoding and holding its own copy.
"""

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader, Dataset

from reid_srdl.data.indexed import read_rgb_image
from reid_srdl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, reid_pad, reid_random_erasing_settings

log = logging.getLogger(__name__)

MB = 1 << 20
DEFAULT_CACHE_MB = 4096


def cache_bytes(num_images: int, height: int, width: int) -> int:
    """Bytes of the decoded cache of ``num_images`` RGB images at ``height x width``."""
    return num_images * 3 * height * width


def usable_cores() -> int:
    """The cores this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class DecodedImages:
    """Images of ``paths`` decoded and resized to ``height x width`` once, in one uint8
    ``(N, 3, H, W)`` tensor; an image is decoded on first use or by :meth:`fill`."""

    def __init__(self, paths: Sequence[str], height: int, width: int):
        self.paths = list(paths)
        self.height, self.width = height, width
        self._resize = T.Resize((height, width))  # the file path's own resize (PIL, bilinear + antialias)
        self.pixels = torch.empty((len(self.paths), 3, height, width), dtype=torch.uint8)
        self._filled = np.zeros(len(self.paths), dtype=bool)

    @property
    def nbytes(self) -> int:
        return cache_bytes(len(self.paths), self.height, self.width)

    @property
    def complete(self) -> bool:
        return bool(self._filled.all())

    def _decode(self, index: int) -> None:
        image = self._resize(read_rgb_image(self.paths[index]))
        self.pixels[index] = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
        self._filled[index] = True

    def __getitem__(self, index: int) -> torch.Tensor:
        """The ``(3, H, W)`` uint8 image ``index`` (a view into the cache: do not modify)."""
        if not self._filled[index]:
            self._decode(index)
        return self.pixels[index]

    def fill(self, threads: Optional[int] = None) -> None:
        """Decode every image not decoded yet, with ``threads`` threads (default: the usable
        cores).  A file that cannot be decoded raises :class:`ImageReadError` naming it."""
        missing = np.flatnonzero(~self._filled)
        if missing.size == 0:
            return
        start = time.perf_counter()
        threads = threads or usable_cores()
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(self._decode, missing.tolist(), chunksize=64):
                pass
        log.info(
            "decoded %d training images once (%dx%d, %.0f MB kept) in %.1f s",
            missing.size,
            self.height,
            self.width,
            self.nbytes / MB,
            time.perf_counter() - start,
        )


def available_memory() -> Optional[int]:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``), None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def decoded_images_if_they_fit(
    paths: Sequence[str], height: int, width: int, budget_mb: int
) -> Optional[DecodedImages]:
    """A :class:`DecodedImages` of ``paths`` when it fits ``budget_mb`` and half the memory
    available now, else None (logged: the loaders then decode every file at every step)."""
    if budget_mb <= 0 or not paths:
        return None
    needed = cache_bytes(len(paths), height, width)
    what = f"decoded-image cache: {len(paths)} images at {height}x{width} need {needed / MB:.0f} MB"
    if needed > budget_mb * MB:
        log.info("%s, over data.cache_mb=%d; decoding each step", what, budget_mb)
        return None
    available = available_memory()
    if available is not None and needed > available // 2:
        log.info("%s, over half the %.0f MB of memory available; decoding each step", what, available / MB)
        return None
    return DecodedImages(paths, height, width)


# --------------------------------------------------------------------------- tensor transforms
def _to_normalized(image: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """torchvision's ``to_tensor`` (``uint8 -> float32 / 255``) then ``Normalize``, with the
    same tensor operations on a tensor of the same shape (the same float results)."""
    return image.to(dtype=torch.float32).div(255).sub_(mean).div_(std)


class TensorReidTest:
    """:func:`reid_test_transform` after its resize: ``to_tensor`` + ImageNet normalisation."""

    def __init__(self):
        self.mean = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(IMAGENET_STD, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return _to_normalized(image, self.mean, self.std)


class TensorReidTrain(TensorReidTest):
    """:func:`reid_train_transform` after its resize, on a ``(3, H, W)`` uint8 tensor.

    The draws, in the file path's order: the flip (``torch.rand(1) < 0.5``), the crop offsets
    in the padded image (``RandomCrop.get_params``), the erasing coin and box
    (``torch.rand(1) < p``, ``RandomErasing.get_params``).  The crop is cut straight from the
    unpadded image into a zeroed output (the padding is zeros), flipped first if drawn so.
    """

    def __init__(self, height: int, width: int, erasing: float = 0.0):
        super().__init__()
        self.height, self.width = height, width
        self.pad = reid_pad(height)
        # get_params only reads the shape of the padded image
        self._padded = torch.empty((3, height + 2 * self.pad, width + 2 * self.pad), dtype=torch.uint8)
        self.erasing = erasing
        self.erase_scale, self.erase_ratio, self.erase_value = reid_random_erasing_settings()

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        h, w, p = self.height, self.width, self.pad
        if tuple(image.shape) != (3, h, w):
            raise ValueError(f"expected a (3, {h}, {w}) uint8 image, got {tuple(image.shape)}")
        flip = bool(torch.rand(1) < 0.5)  # RandomHorizontalFlip
        top, left, _, _ = T.RandomCrop.get_params(self._padded, (h, w))  # RandomCrop on the padded image
        source = image.flip(-1) if flip else image
        # The crop's window in the unpadded image, and where it lands in the output; the
        # padding is zeros, which to_tensor turns into 0.0 -- so a zeroed float32 output takes
        # the window's pixels (uint8 -> float32 is exact) and then goes through /255 and the
        # normalisation whole, as the file path's padded crop does.
        r0, r1 = max(top - p, 0), min(top - p + h, h)
        c0, c1 = max(left - p, 0), min(left - p + w, w)
        out = torch.zeros((3, h, w), dtype=torch.float32)
        if r0 < r1 and c0 < c1:
            window = source.narrow(1, r0, r1 - r0).narrow(2, c0, c1 - c0)
            out.narrow(1, r0 - (top - p), r1 - r0).narrow(2, c0 - (left - p), c1 - c0).copy_(window)
        out.div_(255).sub_(self.mean).div_(self.std)
        if self.erasing > 0 and torch.rand(1) < self.erasing:  # RandomErasing (value: a list)
            i, j, eh, ew, v = T.RandomErasing.get_params(
                out, scale=self.erase_scale, ratio=self.erase_ratio, value=self.erase_value
            )
            if v is not out:  # get_params hands back the image itself when no box fitted: no-op
                out.narrow(1, i, eh).narrow(2, j, ew).copy_(v.expand(-1, eh, ew))  # F.erase, in place
        return out


class DecodedImageDataset(Dataset):
    """Items ``(image, *sample[1:])`` like :class:`ImageFileDataset`, from a
    :class:`DecodedImages` of the samples' paths and a tensor transform."""

    def __init__(self, samples: Sequence[Tuple], images: DecodedImages, transform: Callable):
        if len(samples) != len(images.paths):
            raise ValueError(f"{len(samples)} samples but {len(images.paths)} decoded images")
        self.samples = list(samples)
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        _path, *targets = self.samples[index]
        return (self.transform(self.images[index]), *targets)

    def prepare(self) -> None:
        """Decode the whole set now (threads, main process)."""
        self.images.fill()


class PreparedLoader(DataLoader):
    """A DataLoader that lets its dataset prepare itself (``dataset.prepare()``, if it has
    one) each time it starts iterating, in the main process, before worker processes start."""

    def __iter__(self):
        prepare = getattr(self.dataset, "prepare", None)
        if prepare is not None:
            prepare()
        return super().__iter__()
