"""Compatibility module: exact search and IVF indexes now live in separate files.

* :mod:`reid_srdl.evaluation.distances` -- squared L2 distance blocks in numpy (no faiss);
* :mod:`reid_srdl.evaluation.exact_index` -- ``ExactL2Index`` (faiss ``IndexFlatL2``) and the
  GPU-capable ``pairwise_squared_l2``;
* :mod:`reid_srdl.evaluation.ivf_index` -- ``IVFIndex``, ``save_index``, ``load_index``.

Existing imports (``from reid_srdl.evaluation.search import ExactL2Index``) keep working.
"""

from reid_srdl.evaluation.exact_index import (  # noqa: F401
    ExactL2Index,
    _search_overfetch,
    as_float32_matrix,
    pairwise_squared_l2,
    squared_norms,
    use_gpu,
)
from reid_srdl.evaluation.ivf_index import IVF_KINDS, AnyIndex, IVFIndex, SearchIndexError, load_index, save_index  # noqa: F401
