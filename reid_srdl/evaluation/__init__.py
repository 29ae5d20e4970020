"""Re-id evaluation: numpy arrays of features and ids in, numbers and pictures out.

metrics         CMC / mAP / mINP (single- and multi-query), numpy in, numbers out
match_ranks     the ranks of every true match of a block of distance rows (vectorised, exact)
open_set        open-set decisions: genuine/impostor distances, threshold at a FAR, TAR/DIR@FAR
ranking         evaluation of a query/gallery split (plain, multi-query, re-ranked)
rerank          k-reciprocal re-ranking; streaming: metrics from precomputed distance rows
stats           confidence intervals; io: .npz feature files; plots, colours: pictures

Distances and nearest-neighbour indexes are in :mod:`reid_srdl.index`, feature extraction
from a network (torch) in :mod:`reid_srdl.inference`.  Names are imported lazily so that
importing one module does not import the others.
"""

import importlib

_EXPORTS = {
    "EvaluationInputError": "metrics",
    "MultiQuery": "metrics",
    "ReIDResult": "metrics",
    "evaluate_reid": "metrics",
    "pool_multi_query": "metrics",
    "ranked_gallery": "metrics",
    "average_precision": "metrics",
    "format_results_table": "metrics",
    "OpenSetResult": "open_set",
    "evaluate_open_set": "open_set",
    "threshold_at_far": "open_set",
    "FeatureSet": "io",
    "save_features": "io",
    "load_features": "io",
    "plot_cmc": "plots",
    "save_ranked_list": "plots",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
