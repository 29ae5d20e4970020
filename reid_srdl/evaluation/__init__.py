"""Re-id and classification evaluation.

metrics         CMC / mAP / mINP (single- and multi-query), numpy in, numbers out
match_ranks     the ranks of every true match of a block of distance rows (vectorised, exact)
open_set        open-set decisions: genuine/impostor distances, threshold at a FAR, TAR/DIR@FAR
distances       squared L2 distance blocks (numpy, no faiss)
exact_index     exact k-NN (faiss IndexFlatL2, GPU when present); ivf_index: IVF-Flat/IVF-PQ
search          compatibility re-exports of exact_index and ivf_index
io              .npz feature files and atomic output files
plots           CMC curve and ranked-list pictures
features        embedding extraction from a network (torch)
classification  top-k accuracy (torch)

Names are imported lazily so that numpy-only users (tools/eval_reid.py on feature files)
do not pay for importing torch.
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
    "ExactL2Index": "exact_index",
    "pairwise_squared_l2": "exact_index",
    "OpenSetResult": "open_set",
    "evaluate_open_set": "open_set",
    "threshold_at_far": "open_set",
    "FeatureSet": "io",
    "save_features": "io",
    "load_features": "io",
    "plot_cmc": "plots",
    "save_ranked_list": "plots",
    "extract_features": "features",
    "topk_accuracy": "classification",
    "evaluate_classifier": "classification",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
