"""The CIFAR "python version" batches, read with an unpickler that admits only their structure.

The official files (``cifar-10-batches-py/data_batch_1``..., ``cifar-100-python/train``...)
are Python-2 pickles (protocol 2, read with ``encoding="bytes"``) of a dict with byte-string
keys: labels and file names as lists, the images as one NumPy ``uint8`` array.  The only
globals such a file names are NumPy's array rebuild:

* ``numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')`` -- the empty array that
  ``BUILD`` then fills with ``(version, shape, dtype, is_fortran, raw bytes)`` (NumPy checks
  the bytes against the shape);
* ``numpy.dtype('u1', 0, 1)`` and its ``BUILD`` state (byte order...).

A batch re-saved by Python 3 with protocol 2 also names ``_codecs.encode(text, 'latin1')``
(how protocol 2 writes a byte string) and NumPy 2's ``numpy._core.multiarray``.  Those are
admitted in exactly these uses; every other global -- and a call of these in any other form
(a non-empty shape, an object dtype, another codec) -- is refused by name before anything
is built, so a crafted batch cannot run code (``pickle.load`` would run ``os.system``).
The pickle's opcodes are first counted against ``limits.MAX_PICKLE_OBJECT_BYTES``, and it
is read with Python's own unpickler through a reader that never allocates a declared
length up front.
"""

import _compat_pickle
import pickle
from typing import Any

import numpy as np

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.torch_scan import ChunkedReader, pickle_memory_problem


class CifarPickleError(ReidSrdlError, ValueError):
    """A CIFAR batch names something the official files never do (``refused``), or is not a
    pickle."""

    def __init__(self, message: str, refused: bool = False):
        super().__init__(message)
        self.refused = refused


class _Refused(Exception):
    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class _NDArrayName:
    """Stands for ``numpy.ndarray`` as the first argument of ``_reconstruct``; a call of it
    (an array of any declared shape, allocated before any data) is refused."""

    def __call__(self, *args, **kwargs):
        raise _Refused(f"a call of numpy.ndarray{args!r:.60} (only as _reconstruct's argument)")


_NDARRAY = _NDArrayName()


def _reconstruct(subtype, shape, typecode):
    """``_reconstruct(ndarray, (0,), b'b')``: the empty array a pickled array starts from."""
    if subtype is not _NDARRAY or tuple(shape) != (0,) or typecode not in (b"b", "b"):
        raise _Refused(f"numpy _reconstruct{(type(subtype).__name__, shape, typecode)!r} (only the empty start)")
    return np.ndarray((0,), "b")


def _dtype(spec, align=False, copy=True):
    """A plain numeric dtype (``'u1'``, ``'<i8'``...): no object or structured types."""
    if isinstance(spec, bytes):
        spec = spec.decode("ascii", "replace")
    if not isinstance(spec, str) or len(spec) > 8:
        raise _Refused(f"numpy.dtype({spec!r}) (only numeric types)")
    try:
        dtype = np.dtype(spec)
    except TypeError:
        raise _Refused(f"numpy.dtype({spec!r}) (only numeric types)") from None
    if dtype.kind not in "biuf" or dtype.hasobject:
        raise _Refused(f"numpy.dtype({spec!r}) (only numeric types)")
    return dtype


def _latin1(text, encoding="latin1"):
    """``_codecs.encode(text, 'latin1')``: a byte string as protocol 2 writes it from Python 3."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode(..., {encoding!r}) (only latin-1 byte strings)")
    return text.encode("latin1")


_ADMITTED = {
    "numpy.core.multiarray._reconstruct": _reconstruct,
    "numpy._core.multiarray._reconstruct": _reconstruct,
    "numpy.ndarray": _NDARRAY,
    "numpy.dtype": _dtype,
    "_codecs.encode": _latin1,
}


class _CifarUnpickler(pickle._Unpickler):
    """Python's own unpickler with the globals of :data:`_ADMITTED` only."""

    def find_class(self, module, name):
        if self.proto < 3 and self.fix_imports and (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        found = _ADMITTED.get(f"{module}.{name}")
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found

    def persistent_load(self, pid):
        raise _Refused("a persistent reference")


def read_cifar_pickle(path: str) -> Any:
    """The object in a CIFAR pickle file (see the module docstring); a
    :class:`CifarPickleError` naming ``path`` for anything else."""
    try:
        with open(path, "rb") as raw:
            stream = ChunkedReader(raw)
            problem = pickle_memory_problem(stream)
            if problem:
                raise CifarPickleError(f"'{path}' is not a CIFAR batch: {problem}")
            raw.seek(0)
            return _CifarUnpickler(stream, encoding="bytes").load()
    except _Refused as e:
        raise CifarPickleError(
            f"refusing to read '{path}': it refers to {e.what}, which the official CIFAR batches never do "
            f"(they name only NumPy's array builders); a data set file is data, never code",
            refused=True,
        ) from None
    except CifarPickleError:
        raise
    except RecursionError:
        raise CifarPickleError(f"'{path}' is not a readable CIFAR pickle batch: nested too deeply") from None
    except OSError:
        raise
    except Exception as e:  # a malformed pickle fails in many ways; say which file
        reason = (str(e).splitlines() or [""])[0][:160] or type(e).__name__
        raise CifarPickleError(f"'{path}' is not a readable CIFAR pickle batch: {reason}") from None
