"""Gallery search for deployment: index person crops once, then find who a query looks like
and whether that person is in the gallery at all.

The implementation lives in :mod:`reid_srdl.search` (gallery index, embedder, calibration,
searcher); this module keeps the public names where they have always been.

>>> import numpy as np
>>> from reid_srdl.api import ReIDSearcher
>>> gallery = np.array([[0, 0], [3, 4], [1, 0]], dtype=np.float32)
>>> searcher = ReIDSearcher(gallery, pids=[7, 8, 7], camids=[1, 2, 2])
>>> hit = searcher.search(np.array([0.0, 0.0]), k=2)[0]
>>> hit.indices.tolist(), hit.pids.tolist(), hit.distances.tolist()
([0, 2], [7, 7], [0.0, 1.0])

Camera ids are 0-based (a Market-1501 file name ``c1`` is camid 0).  Leave out a whole camera,
or -- the evaluation protocol's rule -- only the same person seen by the same camera:

>>> searcher.search(np.array([0.0, 0.0]), k=2, exclude_camid=1)[0].indices.tolist()
[2, 1]
>>> searcher.search(np.array([0.0, 0.0]), k=2, exclude_pid_camid=(7, 2))[0].indices.tolist()
[0, 1]
>>> searcher.search(np.array([0.0, 0.0]), exclude_camid="c2")
Traceback (most recent call last):
...
reid_srdl.search.errors.SearchError: exclude_camid must be an integer id (0-based: file name c1 is camid 0) or one per query; got 'c2' (file name c2 is camid 1)

A decision needs a threshold: a distance, or one calibrated on labelled queries at a false
accept rate (see :meth:`ReIDSearcher.calibrate` and docs/search.md):

>>> r = searcher.search(np.array([[0.1, 0.0], [9.0, 9.0]]), k=1, threshold=0.5)
>>> [x.decision for x in r], r[1].nearest_distance > 0.5
(['match', 'no match'], True)

Distances are Euclidean (L2, not squared).  Results are ordered by distance, ties by the
smaller gallery index.  Searches are exact (faiss ``IndexFlatL2``, on GPU when faiss sees one).
"""

from reid_srdl.search.gallery import UNKNOWN, GalleryMismatchError
from reid_srdl.search.searcher import ReIDSearcher, SearchResult

__all__ = ["ReIDSearcher", "SearchResult", "UNKNOWN", "GalleryMismatchError"]
