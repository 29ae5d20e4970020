"""Read a PyTorch file that refers to Python classes or functions without running any of them.

PyTorch's safe unpickler (``torch.load(weights_only=True)``) refuses every global it does not
know.  Here each such global is allow-listed, under its own name, as an *inert stand-in*: a
class of ours that records how the file asked to rebuild the object (the arguments of a call,
the state it would set) and does nothing else.  No module the file names is imported and no
function it names is called; the only real constructors used are NumPy's array, dtype and
scalar builders, which build values from bytes.  The file is still read by PyTorch's safe
unpickler, so tensors and storages are rebuilt exactly as the safe loader rebuilds them.

:func:`convert_to_plain` (through :func:`inert_as_data`) turns what was read into plain
data where that has one meaning (an object's state -> a dict, a pickled ``nn.Module`` -> its
state dict, a path -> a string, a namedtuple -> a tuple); a *call* of anything else (``open(...)``,
``os.system(...)``, an Enum lookup) has no data meaning and is refused by name.
"""

import collections
import pathlib
import pickle
import re
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from reid_srdl.core import limits
from reid_srdl.core.schema import clip_path, short_repr
from reid_srdl.core.torch_files import PLAIN_SCALARS, UNKNOWN_GLOBAL
from reid_srdl.core.torch_scan import ScanRefusal, scan_torch_file

# How often an unknown global may be discovered while loading (each discovery reloads the
# pickle; a zip-format file names all of them up front, so this bounds legacy files only).
_MAX_ROUNDS = 256
_UNKNOWN_GLOBAL = re.compile(UNKNOWN_GLOBAL)
_PATH_CLASS = re.compile(r"pathlib(?:\._local)?\.(Pure)?(Posix|Windows)?Path$")


class InertObject:
    """Stands in for a Python class or function a file refers to.

    ``NEWOBJ`` (an instance of a class) reaches ``__new__`` only; ``REDUCE`` (a call) reaches
    ``__new__`` and ``__init__``; ``BUILD`` (the state to set) reaches ``__setstate__``.  Each
    records and returns; the recorded values are themselves data or other stand-ins.
    """

    qualified_name = "?"

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        # (keyword arguments only come with NEWOBJ_EX, which the safe unpickler rejects)
        self.__dict__.update(inert_args=args, inert_state=None, inert_called=False)
        return self

    def __init__(self, *args, **kwargs):
        self.inert_called = True

    def __setstate__(self, state):
        self.inert_state = state

    def __repr__(self):
        return f"<inert {self.qualified_name}>"


class InertLoadError(ValueError):
    """The file cannot be read even with stand-ins; the message is one line."""


def _numpy_constructors() -> Dict[str, Any]:
    """NumPy's own array/dtype/scalar builders under the names pickles use: files written
    with NumPy 1 name ``numpy.core.multiarray``, with NumPy 2 ``numpy._core.multiarray``."""
    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy 1
        from numpy.core import multiarray
    found = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    # A dtype is rebuilt as ``numpy.dtype(...)`` and then given its state (BUILD), which the
    # safe unpickler allows only on allow-listed types: the concrete dtype classes.
    for name in dir(getattr(np, "dtypes", None)):
        dtype_class = getattr(np.dtypes, name)
        if isinstance(dtype_class, type) and issubclass(dtype_class, np.dtype):
            found[f"numpy.dtypes.{name}"] = dtype_class
    for module_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        found[f"{module_name}._reconstruct"] = multiarray._reconstruct
        found[f"{module_name}.scalar"] = multiarray.scalar
    return found


_NUMPY = _numpy_constructors()


def _stand_in(name: str) -> Any:
    if name in _NUMPY:
        return _NUMPY[name]
    module, _, qualname = name.rpartition(".")
    # Named like the original, so that messages read "<class 'collections.defaultdict'>".
    return type(qualname, (InertObject,), {"qualified_name": name, "__module__": module, "__qualname__": qualname})


def _qualified(name_in_message: str) -> str:
    # torch's message drops the "builtins." prefix ("GLOBAL open was not ...").
    return name_in_message if "." in name_in_message else f"builtins.{name_in_message}"


def _reason(e: BaseException) -> str:
    """The safe unpickler's own complaint, without torch's wrapper text and advice."""
    text = str(e)
    if "Only persistent_load of storage is allowed" in text:
        # The pre-1.6 format stores a pickled module's class with its source code.
        return "it holds a whole nn.Module in PyTorch's pre-1.6 file format, which stores the class's source code"
    # torch wraps the complaint in advice (retry with the unsafe unpickler, file an issue,
    # read the docs): the complaint is the first line that is none of those.
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch 2.6")
    lines = [line.replace("WeightsUnpickler error:", "").strip() for line in text.splitlines()]
    line = next((line for line in lines if line and not line.startswith(boilerplate)), type(e).__name__)
    return line.split(". Please use")[0][:200]


def load_inert(path: str) -> Any:
    """The object a ``torch.save`` file holds, with every global PyTorch's safe unpickler does
    not know replaced by an :class:`InertObject` (nothing the file names is run or imported).
    Raises :class:`InertLoadError` for what the safe unpickler cannot read even so (a module
    PyTorch blocks outright such as ``os``, pickle protocol 4 objects, a dict subclass filled
    item by item)."""
    try:  # declared sizes and checksums first: the stand-ins bound code, not allocation
        scan_torch_file(path)
    except ScanRefusal as e:
        raise InertLoadError(e.reason) from None
    names: List[str] = []
    try:  # a zip-format file lists its globals without being unpickled
        names = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except (ValueError, RuntimeError, OSError, pickle.UnpicklingError):
        pass  # legacy format: globals are discovered one by one below
    stand_ins: Dict[str, Any] = {}
    for _ in range(_MAX_ROUNDS):
        for name in names:
            stand_ins.setdefault(name, _stand_in(name))
        try:
            allowed = {**_NUMPY, **stand_ins}
            with (
                warnings.catch_warnings(),
                torch.serialization.safe_globals([(obj, name) for name, obj in allowed.items()]),
            ):
                warnings.simplefilter("ignore", UserWarning)
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            m = _UNKNOWN_GLOBAL.search(str(e))
            if m is None or _qualified(m.group(1)) in stand_ins:
                raise InertLoadError(_reason(e)) from None
            names = [_qualified(m.group(1))]
        except Exception as e:  # e.g. NumPy refusing a stand-in as an array type
            raise InertLoadError(_reason(e)) from None
    raise InertLoadError(f"the file refers to more than {_MAX_ROUNDS} Python objects")


def _module_state_dict(state: dict, prefix: str, out: "collections.OrderedDict") -> None:
    """What ``nn.Module.state_dict()`` returns, from a pickled module's recorded ``__dict__``:
    own parameters, then persistent buffers, then each child under ``name.``."""
    for name, value in (state.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + name] = value
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for name, value in (state.get("_buffers") or {}).items():
        if value is not None and name not in non_persistent:
            out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, InertObject) and isinstance(child.inert_state, dict):
            _module_state_dict(child.inert_state, f"{prefix}{name}.", out)


def _short(args: tuple) -> str:
    text = ", ".join(short_repr(a) for a in args)
    return text if len(text) <= 60 else text[:57] + "..."


def inert_as_data(obj: InertObject, where: str) -> Any:
    """The plain-data meaning of what ``obj`` recorded (its parts may still hold NumPy values
    or other stand-ins for the caller to walk); ``TypeError`` naming ``where`` if it has none."""
    name, args, state = obj.qualified_name, obj.inert_args, obj.inert_state
    if obj.inert_called:
        m = _PATH_CLASS.match(name)
        if m and state is None and all(isinstance(a, str) for a in args):
            flavour = pathlib.PureWindowsPath if m.group(2) == "Windows" else pathlib.PurePosixPath
            return str(flavour(*args))
        raise TypeError(
            f"{where} is a call of {name}({_short(args)}), which the converter never runs; it has no plain-data form"
        )
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
        state = {**(state[0] or {}), **state[1]}  # (__dict__, __slots__ values)
    if isinstance(state, dict):
        if "_parameters" in state and "_modules" in state:  # a whole nn.Module was pickled
            out: collections.OrderedDict = collections.OrderedDict()
            _module_state_dict(state, "", out)
            return out
        return dict(state)
    if state is None:
        # An instance with nothing set, or a namedtuple (rebuilt from its fields alone).
        return tuple(args) if args else {}
    raise TypeError(f"{where} is a {name} whose state is a {type(state).__name__}; it has no plain-data form")


def convert_to_plain(obj: Any, where: str = "file", converted: Optional[collections.Counter] = None) -> Any:
    """What :func:`load_inert` read, turned into plain data, for tools/convert_checkpoint.py.

    Beyond :func:`reid_srdl.core.torch_files.plain_data`: NumPy arrays become tensors (numeric) or lists, NumPy scalars
    numbers, Parameters plain tensors, sets sorted lists, ``Counter`` a dict, and each inert
    stand-in its data meaning (:func:`inert_as_data`: an
    object's state a dict, a pickled ``nn.Module`` its state dict, a path a string).
    ``converted`` (a Counter) counts the conversions by type name.  What has no plain-data
    form (a call, a reference to a class or function, a container that contains itself,
    nesting deeper than ``limits.MAX_NESTING_DEPTH``) is a ``TypeError`` naming where it is.

    Each object is converted once: a part shared by several containers (a pickle's memo
    makes a 40-level DAG of 2^40 paths from a few hundred bytes) stays one shared part.
    """
    counts = converted if converted is not None else collections.Counter()
    # id -> (object, its conversion); the object is kept so that its id is not reused.
    done: Dict[int, Tuple[Any, Any]] = {}
    open_ids: set = set()

    def note(name, out):
        counts[name] += 1
        return out

    def type_name(value):
        return f"{type(value).__module__}.{type(value).__qualname__}"

    def walk(value, at, depth):
        if type(value) in PLAIN_SCALARS or isinstance(value, (torch.dtype, torch.device, torch.Size)):
            return value
        key = id(value)
        if key in done:
            return done[key][1]
        if key in open_ids:
            raise TypeError(f"{clip_path(at)} contains itself (a cycle), which has no plain-data form")
        if depth > limits.MAX_NESTING_DEPTH:
            raise TypeError(f"{clip_path(at)} is nested more than {limits.MAX_NESTING_DEPTH} levels deep")
        open_ids.add(key)
        out = convert(value, at, depth + 1)
        open_ids.discard(key)
        done[key] = (value, out)
        return out

    def convert(value, at, depth):
        if type(value) in PLAIN_SCALARS:  # e.g. what a path stand-in means
            return value
        if isinstance(value, InertObject):
            return note(value.qualified_name, convert(inert_as_data(value, at), at, depth))
        if isinstance(value, type) and issubclass(value, InertObject):
            what = f"a reference to {value.qualified_name} (a class or function)"
            raise TypeError(f"{clip_path(at)} is {what}, which has no plain-data form")
        if isinstance(value, np.generic):
            return note(type_name(value), value.item())
        if isinstance(value, torch.Tensor):
            # A Tensor subclass (e.g. Parameter) is saved as a plain tensor.
            if type(value) is torch.Tensor:
                return value
            return note(type_name(value), value.detach().clone().as_subclass(torch.Tensor))
        if isinstance(value, np.ndarray):
            if value.dtype.kind in "biuf":
                return note(type_name(value), torch.from_numpy(np.ascontiguousarray(value).copy()))
            return note(type_name(value), convert(value.tolist(), at, depth))
        if isinstance(value, dict):
            out = {walk(k, f"{at} key", depth): walk(v, f"{at}[{short_repr(k)}]", depth) for k, v in value.items()}
            if type(value) is collections.OrderedDict:
                out = collections.OrderedDict(out)
                if hasattr(value, "_metadata"):
                    out._metadata = walk(value._metadata, f"{at}._metadata", depth)
            elif type(value) is not dict:
                note(type_name(value), None)  # e.g. a Counter: kept as its items
            return out
        if isinstance(value, (list, tuple)):
            items = [walk(v, f"{at}[{i}]", depth) for i, v in enumerate(value)]
            return list(items) if isinstance(value, list) else tuple(items)
        if isinstance(value, (set, frozenset)):
            # Sorted when the items are plain (repr of a shared structure could be huge).
            plain = all(type(v) in PLAIN_SCALARS for v in value)
            return note(type_name(value), convert(sorted(value, key=repr) if plain else list(value), at, depth))
        raise TypeError(f"{clip_path(at)} is a {type_name(value)}, which has no plain-data form")

    return walk(obj, where, 0)
