"""ExtractionOptions: every bad field is refused at construction with one line naming it, and
the gallery record it writes is the one the Embedder wrote before the dataclass existed."""

import numpy as np
import pytest
import torch.nn as nn

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.limits import MAX_INPUT_SIDE, LimitExceededError
from reid_srdl.core.precision import PrecisionError
from reid_srdl.inference.options import ExtractionOptions, ExtractionOptionsError
from reid_srdl.search.embedder import Embedder

Bad = ExtractionOptionsError


@pytest.mark.parametrize(
    "field, value, error, message",
    [
        ("flip", 1, Bad, "extraction option flip must be True or False; got 1"),
        ("normalize", "yes", Bad, "extraction option normalize must be True or False; got 'yes'"),
        ("fold_bn", 0.5, Bad, "extraction option fold_bn must be True, False or None; got 0.5"),
        ("precision", "fp8", PrecisionError, "precision must be one of fp32, bf16, fp16, auto; got 'fp8'"),
        ("batch_size", 0, Bad, "extraction option batch_size must be a positive integer; got 0"),
        (
            "batch_size",
            True,
            Bad,
            "extraction option batch_size must be a positive integer; got True",
        ),
        ("workers", -1, Bad, "extraction option workers must be an integer >= 0; got -1"),
        ("height", 2.5, Bad, "extraction option height must be a positive integer; got 2.5"),
        ("width", MAX_INPUT_SIDE + 1, LimitExceededError, f"width {MAX_INPUT_SIDE + 1} is over the limit of"),
        (
            "device",
            "gpu0",
            Bad,
            "device must be a torch device such as 'cpu' or 'cuda:0'; got 'gpu0'",
        ),
    ],
)
def test_a_bad_field_is_one_line_naming_it(field, value, error, message):
    with pytest.raises(error) as info:
        ExtractionOptions(**{field: value})
    text = str(info.value)
    assert isinstance(info.value, ReidSrdlError) and "\n" not in text
    assert text.startswith(message)


def test_numpy_integers_are_stored_as_plain_ints():
    o = ExtractionOptions(batch_size=np.int64(8), height=np.int32(64), width=np.uint16(32))
    assert (o.batch_size, o.height, o.width) == (8, 64, 32)
    assert all(type(v) is int for v in (o.batch_size, o.height, o.width))


class Pool(nn.Module):
    def forward(self, x):
        f = x.mean(dim=(2, 3))
        return f, f


@pytest.mark.parametrize(
    "keywords, expected",
    [
        # The record the Embedder wrote before ExtractionOptions, written out by hand.
        ({}, {"normalize": False, "flip": False, "precision": "fp32", "height": 256, "width": 128,
              "transform": "reid_test_transform"}),
        (dict(normalize=True, flip=True, precision="bf16", height=64, width=32, batch_size=7, workers=1),
         {"normalize": True, "flip": True, "precision": "bf16", "height": 64, "width": 32,
          "transform": "reid_test_transform"}),
    ],
)  # fmt: skip
def test_the_gallery_record_keeps_its_keys_and_values(keywords, expected):
    record = Embedder(Pool(), **keywords).settings
    assert record == expected and list(record) == list(expected)
    # The same record from the dataclass directly, and from an Embedder given one.
    options = ExtractionOptions(**{"height": 256, "width": 128, **keywords})
    assert options.as_record("reid_test_transform") == expected
    assert Embedder(Pool(), options).settings == expected


def test_a_custom_transform_is_recorded_by_its_class():
    class Shrink:
        def __call__(self, image):
            return image

    record = Embedder(Pool(), transform=Shrink(), height=8, width=4).settings
    assert record["transform"] == f"custom:{__name__}.test_a_custom_transform_is_recorded_by_its_class.<locals>.Shrink"


def test_fast_resolves_what_it_switches_on():
    fast = ExtractionOptions(fast=True, precision="fp32")
    assert (fast.use_fold_bn, fast.use_channels_last, fast.resolved_precision()) == (True, True, "fp32")
    plain = ExtractionOptions(channels_last=True)
    assert (plain.use_fold_bn, plain.use_channels_last, plain.resolved_precision()) == (False, True, "fp32")
