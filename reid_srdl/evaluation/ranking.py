"""Pool -> distance -> score: the one ranking evaluation the end of a training run
(engine/evaluate.py) and ``tools/eval_reid.py`` share, with its options explicit.

Single query ranks the gallery by L2 distance of each query's feature; multi-query first
pools the gt_bbox features of each query's identity and camera (mean or max); re-ranking
replaces the L2 distance by the k-reciprocal one (Zhong et al., 2017) of the (pooled)
queries.  The scores are those of :func:`reid_srdl.evaluation.metrics.evaluate_reid`.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from reid_srdl.evaluation.metrics import MultiQuery, ReIDResult, evaluate_reid, pool_multi_query


@dataclass(frozen=True)
class Rerank:
    """k-reciprocal re-ranking settings; the defaults are the paper's (and torchreid's)."""

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    def describe(self) -> str:
        return f"re-ranked k1={self.k1} k2={self.k2} lambda={self.lambda_value:g}"


def evaluate_ranking(
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    *,
    max_rank: int = 50,
    ap: str = "torchreid",
    multi_query: Optional[MultiQuery] = None,
    pool: str = "mean",
    normalize: bool = False,
    rerank: Optional[Rerank] = None,
) -> ReIDResult:
    """CMC / mAP / mINP of ``q_feats`` against ``g_feats`` under the Market-1501 protocol.

    ``multi_query``: the gt_bbox features to pool per query (``normalize``: L2-normalise the
    pooled feature, as the single-query features were); ``rerank``: rank by the k-reciprocal
    distance instead of L2.
    """
    if rerank is None:
        return evaluate_reid(
            q_feats,
            g_feats,
            q_pids,
            g_pids,
            q_camids,
            g_camids,
            max_rank=max_rank,
            ap=ap,
            multi_query=multi_query,
            pool=pool,
            # normalize applies to the pooled features only (single-query features are ranked as given)
            normalize=normalize and multi_query is not None,
        )
    from reid_srdl.evaluation.rerank import k_reciprocal_distances
    from reid_srdl.evaluation.streaming import evaluate_distances

    if multi_query is not None:
        q_feats = pool_multi_query(q_feats, q_pids, q_camids, multi_query, pool=pool, normalize=normalize)
    dist = k_reciprocal_distances(q_feats, g_feats, rerank.k1, rerank.k2, rerank.lambda_value)
    return evaluate_distances(dist, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, ap=ap)
