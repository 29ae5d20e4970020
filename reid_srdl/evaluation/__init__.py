"""Re-id and classification evaluation.

metrics         CMC / mAP / mINP (single- and multi-query), numpy in, numbers out
search          the only faiss user: exact L2 distances and k-NN (GPU when present)
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
    "ExactL2Index": "search",
    "pairwise_squared_l2": "search",
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
