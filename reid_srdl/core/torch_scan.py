"""What a PyTorch file asks to build, found before PyTorch builds any of it.

``torch.load(weights_only=True)`` runs no code from a file, but it allocates whatever the
file declares.  A few hundred bytes can ask for gigabytes:

* a call of an allow-listed constructor with a size: ``builtins.bytearray(2**34)``,
  ``torch.FloatTensor(2**34)``, ``torch.UntypedStorage(n)``, a quantized tensor's size;
* a tensor view larger than its stored data: ``Tensor.set_`` *grows* the storage to fit
  (``_rebuild_tensor_v2(storage, 0, (2**34,), (1,))`` on 4 stored bytes allocates 64 GB);
* a storage whose declared size differs from the bytes the archive holds;
* members of the zip archive that inflate far beyond the file (a zip bomb), or a pickle
  whose opcodes build far more objects than its bytes (``EMPTY_SET`` costs 216 bytes);
* in the legacy (pre-1.6, non-zip) format, storages allocated from their declared size
  before their data is read.

:func:`scan_torch_file` reads the archive directory, verifies every member's CRC-32 (torch's
reader does not), and replays each pickle with an *inert* unpickler: every global becomes a
stand-in that records how it is called and builds nothing, and every storage reference
records its declared size.  Then the declared sizes are compared with the file and
``reid_srdl.core.limits``.  It raises :class:`ScanRefusal` (a reason, without the path) and
imports and calls nothing the file names.  The pure-Python unpickler is used on purpose:
CPython's C unpickler (3.11) allocates a declared byte-string length before reading it.
"""

import _compat_pickle
import functools
import io
import math
import os
import pickle
import pickletools
import tarfile
import warnings
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import torch

from reid_srdl.core import archives, limits

# torch.save's legacy format starts with this number, pickled.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
# What one pickle opcode may cost in memory once executed, besides its argument's bytes (an
# empty set is 216 bytes, a memo entry ~100).
_BYTES_PER_OPCODE = 240
_CHUNK = 1 << 20
# NumPy's builders that take a shape, and the position of the shape in their arguments.
_NUMPY_ARRAY_BUILDERS = {
    "numpy.ndarray": 0,
    "numpy.core.multiarray._reconstruct": 1,
    "numpy._core.multiarray._reconstruct": 1,
}
_TENSOR_REBUILDS = ("torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_qtensor")


class ScanRefusal(Exception):
    """The file is refused.  ``reason`` says why (no path); ``over_limit`` marks a declared
    size beyond a limit (else the file is corrupt or not a PyTorch data file);
    ``torchscript`` marks a TorchScript program."""

    def __init__(self, reason: str, over_limit: bool = False, torchscript: bool = False):
        super().__init__(reason)
        self.reason, self.over_limit, self.torchscript = reason, over_limit, torchscript


# ----------------------------------------------------------------------------- sizes
@functools.lru_cache(maxsize=1)
def _storage_itemsizes() -> Dict[str, int]:
    """Bytes per element of each storage class a file may name (``torch.FloatStorage``...)."""
    sizes = {"torch.UntypedStorage": 1, "torch.storage.UntypedStorage": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "TypedStorage is deprecated"
        for module_name, module in (("torch", torch), ("torch.cuda", torch.cuda)):
            for name in dir(module):
                if name.endswith("Storage") and name not in ("Storage", "TypedStorage", "UntypedStorage"):
                    try:
                        sizes[f"{module_name}.{name}"] = torch._utils._element_size(getattr(module, name).dtype)
                    except (AttributeError, RuntimeError, TypeError):
                        pass
    return sizes


@functools.lru_cache(maxsize=1)
def _dtype_itemsizes() -> Dict[str, int]:
    return {f"torch.{n}": getattr(torch, n).itemsize for n in dir(torch) if isinstance(getattr(torch, n), torch.dtype)}


class StorageRef:
    """A storage the pickle refers to: its key and declared size (nothing allocated)."""

    def __init__(self, key: str, nbytes: int, itemsize: int):
        self.key, self.nbytes, self.itemsize = key, nbytes, itemsize


class _StandIn:
    """Base of the stand-ins for the globals a pickle names: records calls and states."""

    qualified_name = "?"
    scan: "Optional[_Scan]" = None

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.recorded_args = args
        cls.scan.calls.append((cls.qualified_name, args))
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        type(self).scan.builds.append((self.qualified_name, state))

    # Containers rebuilt by a call and then filled (OrderedDict(), then SETITEMS).
    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _Scan:
    """What one pickle asked for: calls ``(global, args)``, states set on stand-ins, storages."""

    def __init__(self):
        self.calls: List[Tuple[str, tuple]] = []
        self.builds: List[Tuple[str, Any]] = []
        self.storages: Dict[str, StorageRef] = {}
        self._classes: Dict[str, type] = {}

    def stand_in(self, name: str) -> type:
        if name not in self._classes:
            short = name.rpartition(".")[2] or name
            self._classes[name] = type(short, (_StandIn,), {"qualified_name": name, "scan": self})
        return self._classes[name]

    def persistent(self, pid: Any) -> Any:
        """A storage reference: ``('storage', type, key, location, numel)`` (zip format) or
        ``(..., numel, view_metadata)`` (legacy)."""
        if not isinstance(pid, tuple) or not pid:
            raise ScanRefusal("not a file written by torch.save, or corrupt (a malformed storage reference)")
        typename = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
        if typename == "module" and len(pid) >= 2:
            return pid[1]  # a pickled module's source (legacy): torch's safe loader refuses it by name
        if typename != "storage" or len(pid) not in (5, 6):
            raise ScanRefusal(f"not a file written by torch.save, or corrupt (an unknown reference {typename!r})")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        name = getattr(storage_type, "qualified_name", None)
        itemsize = _storage_itemsizes().get(name) if name else None
        if itemsize is None:
            what = name or type(storage_type).__name__
            raise ScanRefusal(f"not a file written by torch.save, or corrupt (unknown storage type {what})")
        if not isinstance(key, str) or isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise ScanRefusal("not a file written by torch.save, or corrupt (a malformed storage reference)")
        ref = self.storages.setdefault(key, StorageRef(key, numel * itemsize, itemsize))
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return ref
        try:
            view_key, offset, view_numel = view
            view_bytes = (int(offset) + int(view_numel)) * itemsize
        except (TypeError, ValueError):
            raise ScanRefusal("not a file written by torch.save, or corrupt (a malformed storage view)") from None
        if offset < 0 or view_numel < 0 or view_bytes > ref.nbytes:
            raise ScanRefusal(f"a storage view reaches past its storage ({view_bytes} > {ref.nbytes} bytes)", True)
        return StorageRef(str(view_key), int(view_numel) * itemsize, itemsize)


class _InertUnpickler(pickle._Unpickler):
    """Python's own unpickler, with every global a recording stand-in (see the module
    docstring); reads with ``encoding="utf-8"`` as torch.load does."""

    def __init__(self, file, scan: _Scan):
        super().__init__(file, encoding="utf-8")
        self.scan = scan

    def find_class(self, module, name):
        if self.proto < 3 and self.fix_imports:  # Python-2 names, as pickle maps them
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        return self.scan.stand_in(f"{module}.{name}")

    def persistent_load(self, pid):
        return self.scan.persistent(pid)


class ChunkedReader:
    """A binary file whose ``read(n)`` never allocates ``n`` bytes up front (a declared
    length is only read as far as the file goes), and whose lines are bounded."""

    def __init__(self, f):
        self.f = f

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self.f.read()
        parts = []
        while n > 0:
            chunk = self.f.read(min(n, _CHUNK))
            if not chunk:
                break
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self) -> bytes:
        return self.f.readline(_CHUNK)

    def tell(self) -> int:
        return self.f.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)


# ----------------------------------------------------------------------------- one pickle
def pickle_memory_problem(stream) -> Optional[str]:
    """Why the pickle at ``stream``'s position would build too much (more than
    ``limits.MAX_PICKLE_OBJECT_BYTES`` of Python objects, estimated from its opcodes without
    building any), or None.  The stream is consumed up to STOP; a malformed pickle raises
    ValueError (or EOFError, UnicodeDecodeError...)."""
    total = 0
    for opcode, arg, _ in pickletools.genops(stream):
        total += _BYTES_PER_OPCODE
        if isinstance(arg, (bytes, bytearray)):
            total += len(arg)
        elif isinstance(arg, str):
            total += 4 * len(arg)
        elif isinstance(arg, int) and opcode.name.startswith("LONG"):
            total += arg.bit_length() // 8
        if total > limits.MAX_PICKLE_OBJECT_BYTES:
            return (
                f"its pickle would build more than {limits.human_bytes(limits.MAX_PICKLE_OBJECT_BYTES)} of "
                f"Python objects (reid_srdl.core.limits.MAX_PICKLE_OBJECT_BYTES)"
            )
    return None


def _check_object_memory(stream) -> None:
    try:
        problem = pickle_memory_problem(stream)
    except (ValueError, EOFError, KeyError, IndexError, UnicodeDecodeError) as e:
        raise ScanRefusal(f"not a file written by torch.save, or corrupt ({_first_line(e)})") from None
    if problem:
        raise ScanRefusal(problem, over_limit=True)


def _first_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0][:120]
    return text or type(e).__name__


def _replay(stream, scan: _Scan) -> Any:
    """The pickle at ``stream``'s position replayed with stand-ins (see the module docstring)."""
    try:
        return _InertUnpickler(stream, scan).load()
    except ScanRefusal:
        raise
    except RecursionError:
        raise ScanRefusal("not a file written by torch.save, or corrupt (nested too deeply)") from None
    except Exception as e:  # any failure of an inert replay means a corrupt pickle
        raise ScanRefusal(f"not a file written by torch.save, or corrupt ({_first_line(e)})") from None


def _scan_pickle(stream, scan: _Scan) -> Any:
    start = stream.tell()
    _check_object_memory(stream)
    stream.seek(start)
    return _replay(stream, scan)


# ----------------------------------------------------------------------------- declared sizes
def _ints(value: Any) -> Optional[Tuple[int, ...]]:
    """A size or stride as a tuple of ints (from a tuple, a list or a recorded torch.Size)."""
    if isinstance(value, _StandIn) and value.qualified_name == "torch.Size" and value.recorded_args:
        value = value.recorded_args[0]
    if isinstance(value, (tuple, list)) and all(type(v) is int for v in value):
        return tuple(value)
    return None


def _elements(args: tuple) -> int:
    """Elements a legacy constructor allocates: ``FloatTensor(3, 4)`` or ``FloatTensor((3, 4))``."""
    if args and all(type(a) is int for a in args):
        return math.prod(args)
    if len(args) == 1 and _ints(args[0]) is not None:
        return math.prod(_ints(args[0]))
    return 0


def _is_constructor(name: str) -> bool:
    """torch.FloatTensor, torch.Tensor, torch.cuda.ByteStorage, torch.storage.UntypedStorage..."""
    module, _, short = name.rpartition(".")
    return module in ("torch", "torch.cuda", "torch.sparse", "torch.cuda.sparse", "torch.storage") and (
        short.endswith("Tensor") or short.endswith("Storage")
    )


def _constructor_itemsize(name: str) -> int:
    """Bytes per element of ``torch.FloatTensor`` / ``torch.FloatStorage``... (16, the
    largest, for a class without a fixed type such as ``torch.Tensor``)."""
    sizes = _storage_itemsizes()
    module, _, short = name.rpartition(".")
    storage = f"{module}.{short[: -len('Tensor')]}Storage" if short.endswith("Tensor") else name
    return sizes.get(storage, 16)


def _view_bytes(offset: Any, size: Any, stride: Any, itemsize: int) -> int:
    """Bytes a tensor view ``(offset, size, stride)`` reaches into its storage."""
    size_t, stride_t = _ints(size), _ints(stride)
    if type(offset) is not int or size_t is None or stride_t is None or len(size_t) != len(stride_t):
        raise ScanRefusal("not a file written by torch.save, or corrupt (a malformed tensor shape)")
    if offset < 0 or any(s < 0 for s in size_t) or any(s < 0 for s in stride_t):
        raise ScanRefusal(f"a tensor declares a negative size, stride or offset ({size_t}, {stride_t}, {offset})")
    if 0 in size_t:
        return 0
    return (offset + sum((s - 1) * st for s, st in zip(size_t, stride_t)) + 1) * itemsize


def _check_view(name: str, storage: Any, offset: Any, size: Any, stride: Any, itemsize: Optional[int] = None):
    if not isinstance(storage, StorageRef):
        raise ScanRefusal(f"not a file written by torch.save, or corrupt ({name} without stored data)")
    need = _view_bytes(offset, size, stride, itemsize or storage.itemsize)
    if need > storage.nbytes:
        raise ScanRefusal(
            f"a tensor of size {list(_ints(size))} needs {limits.human_bytes(need)} but its stored data "
            f"(data/{storage.key}) holds {limits.human_bytes(storage.nbytes)}; loading it would allocate the "
            f"difference",
            over_limit=True,
        )


def _call_text(name: str, args: tuple) -> str:
    shown = ", ".join(repr(a) if isinstance(a, (int, float, str, bytes)) else type(a).__name__ for a in args)
    return f"{name}({shown[:60]})"


def _check_call(name: str, args: tuple, depth: int = 0) -> None:
    if name == "torch._tensor._rebuild_from_type_v2" and len(args) >= 3 and isinstance(args[2], (tuple, list)):
        # torch calls args[0](*args[2]) while loading: check that call as well.
        if depth > limits.MAX_NESTING_DEPTH:
            raise ScanRefusal(f"tensor rebuilds nested more than {limits.MAX_NESTING_DEPTH} levels deep")
        inner = getattr(args[0], "qualified_name", None)
        if inner:
            _check_call(inner, tuple(args[2]), depth + 1)
        return
    if name in _TENSOR_REBUILDS and len(args) >= 4:
        _check_view(name, *args[:4])
        if name.endswith("_rebuild_qtensor"):
            elements = math.prod(_ints(args[2]) or (0,))
            if elements > max(args[0].nbytes, limits.MAX_PICKLE_CALL_BYTES):
                raise ScanRefusal(f"a quantized tensor of {elements} elements exceeds its stored data", True)
        return
    if name == "torch._utils._rebuild_tensor_v3" and len(args) >= 7:
        dtype = getattr(args[6], "qualified_name", None)
        _check_view(name, *args[:4], itemsize=_dtype_itemsizes().get(dtype, 16))
        return
    need = 0
    if name == "builtins.bytearray" and args and type(args[0]) is int:
        need = args[0]
    elif _is_constructor(name):
        need = _constructor_itemsize(name) * _elements(args)
    elif name in _NUMPY_ARRAY_BUILDERS and len(args) > _NUMPY_ARRAY_BUILDERS[name]:
        # (the converter admits NumPy's array builders; a shape allocates before any data)
        shape = args[_NUMPY_ARRAY_BUILDERS[name]]
        need = 16 * (abs(shape) if type(shape) is int else math.prod(_ints(shape) or (0,)))
    if need > limits.MAX_PICKLE_CALL_BYTES:
        raise ScanRefusal(
            f"it calls {_call_text(name, args)}, which would allocate {limits.human_bytes(need)} "
            f"(a call inside a file may allocate at most {limits.human_bytes(limits.MAX_PICKLE_CALL_BYTES)}: "
            f"reid_srdl.core.limits.MAX_PICKLE_CALL_BYTES)",
            over_limit=True,
        )


def _check_scan(scan: _Scan) -> None:
    for name, args in scan.calls:
        _check_call(name, args)
    for name, state in scan.builds:
        # BUILD on a tensor with a legacy state is ``tensor.set_(storage, offset, size, stride)``.
        if _is_constructor(name) or name == "torch.nn.parameter.Parameter":
            if isinstance(state, (tuple, list)) and len(state) == 4:
                _check_view(name, *state)


# ----------------------------------------------------------------------------- whole files
def _archive_prefix(archive: zipfile.ZipFile) -> str:
    """The folder torch's reader takes every record from: that of the first member."""
    first = archive.infolist()[0].filename if archive.infolist() else ""
    return first.split("/", 1)[0] + "/" if "/" in first else ""


def starts_as_zip(path: str) -> bool:
    """What torch.load goes by (``torch.serialization._is_zipfile``): the first four bytes
    are a zip local-file header.  Anything else is read as the legacy format."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def is_torchscript_archive(path: str) -> bool:
    """True when ``path`` is a zip archive written by ``torch.jit.save`` (a program)."""
    try:
        if not starts_as_zip(path):
            return False
        with zipfile.ZipFile(path) as archive:
            prefix = _archive_prefix(archive)
            return f"{prefix}constants.pkl" in set(archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _scan_zip(path: str, archive: zipfile.ZipFile) -> None:
    reason = archives.oversize_reason(archive, os.path.getsize(path))
    if reason:
        raise ScanRefusal(reason, over_limit=True)
    prefix = _archive_prefix(archive)
    names = set(archive.namelist())
    if f"{prefix}constants.pkl" in names:
        raise ScanRefusal("it is a TorchScript program, not a data file", torchscript=True)
    if f"{prefix}data.pkl" not in names:
        raise ScanRefusal("not a file written by torch.save (a zip archive without data.pkl)")
    bad = archives.corrupt_member(archive, path)
    if bad is not None:
        raise ScanRefusal(f"it is corrupt: the CRC-32 checksum of its record {bad} does not match its data")
    scan = _Scan()
    _scan_pickle(io.BytesIO(archives.read_member(archive, f"{prefix}data.pkl")), scan)
    for key, ref in scan.storages.items():
        record = f"{prefix}data/{key}"
        if record not in names:
            raise ScanRefusal(f"it is corrupt: the stored data {record} of a tensor is missing")
        held = archive.getinfo(record).file_size
        if held != ref.nbytes:
            raise ScanRefusal(
                f"a storage declares {limits.human_bytes(ref.nbytes)} but its record {record} holds "
                f"{limits.human_bytes(held)}",
                over_limit=ref.nbytes > held,
            )
    _check_scan(scan)


def _scan_legacy(path: str) -> None:
    """torch.save's pre-1.6 format: pickles of the magic number, protocol and system info,
    the object, the storage keys, then each storage's 8-byte length and bytes."""
    size = os.path.getsize(path)
    with open(path, "rb") as raw:
        stream = ChunkedReader(raw)
        header = _Scan()
        if _scan_pickle(stream, header) != LEGACY_MAGIC:
            raise ScanRefusal("not a file written by torch.save, or corrupt")
        _scan_pickle(stream, header)  # protocol version
        _scan_pickle(stream, header)  # system info
        scan = _Scan()
        _scan_pickle(stream, scan)
        _scan_pickle(stream, _Scan())  # the storage keys
        remaining = size - raw.tell()
    # torch allocates every storage the object refers to while unpickling it, before it
    # reads their data: all of them must fit in what follows.
    declared = sum(8 + ref.nbytes for ref in scan.storages.values())
    if declared > remaining:
        raise ScanRefusal(
            f"its tensors declare {limits.human_bytes(declared)} of data but only "
            f"{limits.human_bytes(remaining)} follow",
            over_limit=True,
        )
    _check_scan(scan)


def scan_torch_file(path: str) -> str:
    """Check a file before ``torch.load`` (see the module docstring); returns its format,
    ``"zip"`` or ``"legacy"``.  Raises :class:`ScanRefusal`, or OSError when it cannot be
    opened."""
    if os.path.isdir(path):
        raise IsADirectoryError(path)
    if starts_as_zip(path):
        try:
            with zipfile.ZipFile(path) as archive:
                _scan_zip(path, archive)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as e:
            raise ScanRefusal(f"not a file written by torch.save, or truncated ({_first_line(e)})") from None
        return "zip"
    with open(path, "rb") as f:
        head = f.read(1)
    if not head:
        raise ScanRefusal("the file is empty")
    if tarfile.is_tarfile(path):
        raise ScanRefusal("a PyTorch < 0.4 tar file, a format the safe loader does not read")
    _scan_legacy(path)
    return "legacy"
