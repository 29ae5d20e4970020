"""Data: Market-1501 (real or synthetic) and classification sets, as loaders for the trainer.

``build_data(cfg.data)`` is the entry point; the rest is exported for direct use.
"""
from reid_srdl.data.build import DataBundle, ReIDSplit, build_data, default_root
from reid_srdl.data.classification import ClassificationData, DatasetFormatError
from reid_srdl.data.indexed import ImageFileDataset, ImageReadError, IndexedDataset, read_rgb_image
from reid_srdl.data.market1501 import (
    Market1501SRDL,
    MarketLayoutError,
    parse_market_name,
    read_market1501,
    register_market1501_srdl,
)
from reid_srdl.data.synthetic import ensure_synthetic_market, make_synthetic_market

__all__ = [
    "ClassificationData",
    "DataBundle",
    "DatasetFormatError",
    "ImageFileDataset",
    "ImageReadError",
    "IndexedDataset",
    "Market1501SRDL",
    "MarketLayoutError",
    "ReIDSplit",
    "build_data",
    "default_root",
    "ensure_synthetic_market",
    "make_synthetic_market",
    "parse_market_name",
    "read_market1501",
    "read_rgb_image",
    "register_market1501_srdl",
]
