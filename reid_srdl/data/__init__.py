"""Data: every image re-id set torchreid reads (real or synthetic) and classification sets,
as loaders for the trainer.

``build_data(cfg.data)`` is the entry point; the rest is exported for direct use.
"""

from reid_srdl.data.build import DataBundle, ReIDSplit, ReIDTarget, build_data, build_reid_target, default_root
from reid_srdl.data.classification import ClassificationData, DatasetFormatError
from reid_srdl.data.indexed import ImageFileDataset, ImageReadError, IndexedDataset, read_rgb_image
from reid_srdl.data.market1501 import (
    Market1501SRDL,
    MarketLayoutError,
    parse_market_name,
    read_market1501,
    register_market1501_srdl,
)
from reid_srdl.data.reid_sets import (
    DatasetLayoutError,
    DatasetReadError,
    ReidSetLists,
    read_reid_set,
    reid_dataset_names,
)
from reid_srdl.data.sources import combine_train_sets
from reid_srdl.data.synthetic.market import ensure_synthetic_market, make_synthetic_market
from reid_srdl.data.synthetic.reid_sets import (
    ensure_synthetic,
    make_synthetic_cuhk03,
    make_synthetic_duke,
    make_synthetic_msmt17,
    make_synthetic_viper,
)

__all__ = [
    "ClassificationData",
    "DataBundle",
    "DatasetFormatError",
    "DatasetLayoutError",
    "DatasetReadError",
    "ImageFileDataset",
    "ImageReadError",
    "IndexedDataset",
    "Market1501SRDL",
    "MarketLayoutError",
    "ReIDSplit",
    "ReIDTarget",
    "ReidSetLists",
    "build_data",
    "build_reid_target",
    "combine_train_sets",
    "default_root",
    "ensure_synthetic",
    "ensure_synthetic_market",
    "make_synthetic_cuhk03",
    "make_synthetic_duke",
    "make_synthetic_market",
    "make_synthetic_msmt17",
    "make_synthetic_viper",
    "parse_market_name",
    "read_market1501",
    "read_reid_set",
    "read_rgb_image",
    "reid_dataset_names",
    "register_market1501_srdl",
]
