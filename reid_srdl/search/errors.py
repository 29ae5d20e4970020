"""The search layer's own error: what a search, a gallery or a calibration was given is wrong.

Raised by the searcher, its requests, embedder options, gallery records and calibrations (the
stores' :class:`~reid_srdl.search.stores.StoreError` is one too).  Errors of the layers below
reach callers unchanged: a feature array refused by ``evaluation``'s checks stays an
``EvaluationInputError``, an unreadable image its own error.  It is a ``ValueError`` as well, so
code that caught ``ValueError`` still does.
"""

from reid_srdl.core.errors import ReidSrdlError


class SearchError(ReidSrdlError, ValueError):
    """Bad search input: the message names the argument, the gallery or the file at fault."""
