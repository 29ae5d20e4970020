"""Train / test transforms per task, as in the papers the methods come from."""

from typing import Callable, Tuple

import torchvision.transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Per-channel statistics of each training set (the usual published values).
_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "tiny_imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}


def reid_random_erasing_settings():
    """(scale, ratio, value) of BoT's random erasing (see :func:`random_erasing`)."""
    return (0.02, 0.4), (0.3, 1 / 0.3), list(IMAGENET_MEAN)


def reid_pad(height: int) -> int:
    """Padding before the re-id random crop: 10 pixels at 256x128, scaled for other sizes."""
    return max(1, round(height / 25.6))


def random_erasing(probability: float) -> T.RandomErasing:
    """BoT's random erasing (Zhong et al., AAAI 2020) on the normalised tensor.

    torchvision's implementation with BoT's settings: an erased area of 2-40 % of the image,
    aspect ratio in [0.3, 1/0.3], filled with the ImageNet mean values written into the
    normalised tensor as BoT does.  torchvision's rather than BoT's own class because it draws
    from torch's RNG, which the per-sample augmentation seed controls (BoT's draws from
    Python's ``random``, which would make the erasing depend on the DataLoader worker).
    Remaining differences: the aspect ratio is drawn log-uniformly, with 10 attempts, not 100.
    """
    scale, ratio, value = reid_random_erasing_settings()
    return T.RandomErasing(p=probability, scale=scale, ratio=ratio, value=value)


def reid_train_transform(height: int, width: int, erasing: float = 0.0) -> Callable:
    """Re-id training: resize, horizontal flip, random crop with padding, ImageNet norm (SRDL),
    then random erasing with probability ``erasing`` (BoT; 0 = none).  The same steps on
    cached uint8 tensors: :class:`reid_srdl.data.decoded.TensorReidTrain`."""
    pad = reid_pad(height)
    steps = [
        T.Resize((height, width)),
        T.RandomHorizontalFlip(),
        T.Pad(pad),
        T.RandomCrop((height, width)),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
    if erasing > 0:
        steps.append(random_erasing(erasing))
    return T.Compose(steps)


def reid_test_transform(height: int, width: int) -> Callable:
    return T.Compose([T.Resize((height, width)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


# The size each classification set's images come in (ImageNet: the crop its recipe trains on).
NATIVE_SIZE = {"cifar10": 32, "cifar100": 32, "fashion_mnist": 28, "tiny_imagenet": 64, "imagenet": 224}


def classification_transforms(name: str, size: int = 0) -> Tuple[Callable, Callable]:
    """(train, test) transforms for a classification data set, on PIL images.

    ``size`` (0 = the set's own, :data:`NATIVE_SIZE`): every image is first resized to
    ``size`` x ``size`` (e.g. Fashion-MNIST's 28x28 upscaled for an ImageNet network), and
    the augmentation is the set's own scaled with it (the crop padding grows in proportion).
    """
    if name not in _STATS:
        raise ValueError(f"no transforms for data set '{name}'; known: {', '.join(_STATS)}")
    if size < 0:
        raise ValueError(f"image size must be >= 0 (0 = the set's own), got {size}")
    mean, std = _STATS[name]
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    native = NATIVE_SIZE[name]
    out = size or native
    resize = [T.Resize((out, out))] if size and name != "imagenet" else []
    pad = round({"cifar10": 4, "cifar100": 4, "fashion_mnist": 2, "tiny_imagenet": 8}.get(name, 0) * out / native)
    if name in ("cifar10", "cifar100", "fashion_mnist", "tiny_imagenet"):
        # CIFAR: random 32x32 crop of the 4-pixel reflection-padded image + horizontal flip;
        # Fashion-MNIST 28 with 2 pixels, Tiny ImageNet 64 with 8.
        train = resize + [T.RandomCrop(out, padding=pad, padding_mode="reflect"), T.RandomHorizontalFlip()]
        test = resize
    else:  # imagenet: the standard recipe, at `out` instead of 224 (test: resize 256/224 of it)
        train = [T.RandomResizedCrop(out), T.RandomHorizontalFlip()]
        test = [T.Resize(round(out * 256 / 224)), T.CenterCrop(out)]
    return T.Compose(train + norm), T.Compose(test + norm)
