"""PyTorch files read as data, never as code: the one safe ``torch.load`` of the project.

A ``.pt`` file is a pickle, and an ordinary pickle can run any code while it loads.  Every
file the project reads goes through :func:`load_torch_file`, which uses PyTorch's safe
unpickler (``weights_only=True``): tensors, dicts, lists, tuples, strings, numbers, booleans
and None only.  What the project writes is checked against the same rule at save time by
:func:`plain_data`, so every file it writes loads safely again.

A file that needs the unsafe unpickler (it refers to Python classes or functions) is refused
with one line that names what it refers to and the conversion command (:data:`CONVERT_TOOL`,
which reads the file with inert stand-ins and runs nothing it names); PyTorch's own advice
to retry with the unsafe unpickler is never shown.
"""

import collections
import pickle
import re
import warnings
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from reid_srdl.core import limits
from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.limits import LimitExceededError
from reid_srdl.core.torch_scan import ScanRefusal, scan_torch_file

CONVERT_TOOL = "tools/convert_checkpoint.py"

# Scalars the safe unpickler rebuilds without any global (exact types: a subclass such as
# numpy.float64 or an IntEnum is pickled with a reference to its class).
PLAIN_SCALARS = (str, bytes, bool, int, float, type(None))
# Pickle opcodes the safe unpickler rejects as "Unsupported operand" although they only
# occur when an object is pickled (STACK_GLOBAL, NEWOBJ_EX, EXT1/2/4): a protocol-4 pickle
# of a class instance.  Text-like opcodes (INST 'i', OBJ 'o') are left out: a text file
# starting with those letters is garbage, not a pickle.
_OBJECT_OPCODES = {0x93, 0x92, 0x82, 0x83, 0x84}
# How the safe unpickler names a global it does not know (group 1: the global; a builtin
# comes without its "builtins." prefix).
UNKNOWN_GLOBAL = r"GLOBAL (\S+) was not an allowed global"


class UnsafeFileError(ReidSrdlError, ValueError):
    """A PyTorch file holds Python objects that only the unsafe unpickler would rebuild."""


class UnreadableFileError(ReidSrdlError, ValueError):
    """A file is not a PyTorch file at all, or it is truncated or corrupt; ``reason`` says
    which, without the path."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


def convert_command(path: str) -> str:
    return f"python {CONVERT_TOOL} {path} NEW.pt"


def _refers_to(message: str) -> Optional[str]:
    """What a safe-unpickler refusal says the file refers to; None when the message is not
    about Python objects (then the file is garbage rather than a foreign pickle)."""
    patterns = (
        (UNKNOWN_GLOBAL, "the Python object {}"),
        (r"GLOBAL (\S+) whose module \S+ is blocked", "the Python object {}"),
        (r"reduce for unrecognized function (.+?)(?: which belongs|$)", "a call of {}"),
        (r"Can only (?:create new object|build) .* but got (.+)", "an instance of {}"),
    )
    for pattern, text in patterns:
        m = re.search(pattern, message, re.MULTILINE)
        if m:
            return text.format(m.group(1).strip())
    m = re.search(r"Unsupported operand (\d+)", message)
    if m and int(m.group(1)) in _OBJECT_OPCODES:
        return "a Python object (pickle protocol 4 global)"
    return None


def _torch_reason(e: BaseException) -> str:
    """The first sentence of a torch error's first line, never torch's advice about
    weights_only."""
    line = (str(e).strip().splitlines() or [""])[0].strip()
    line = line.split(". ")[0].rstrip(".")
    if not line or "weights_only" in line or len(line) > 160:
        return type(e).__name__
    return line


def check_torch_file(path: str, what: str = "PyTorch file") -> str:
    """The checks done before ``torch.load`` (reid_srdl.core.torch_scan): every declared size
    within the file and ``reid_srdl.core.limits``, every record's CRC-32 verified.  Returns
    the format (``"zip"`` or ``"legacy"``); raises :class:`~reid_srdl.core.limits.LimitExceededError`
    or :class:`UnreadableFileError` naming ``what`` and ``path`` (OSError when it cannot be opened)."""
    try:
        return scan_torch_file(path)
    except ScanRefusal as e:
        if e.over_limit:
            raise LimitExceededError(f"refusing to load {what} {path}: {e.reason}") from None
        raise UnreadableFileError(f"cannot read {what} {path}: {e.reason}", e.reason) from None


def load_torch_file(path: str, what: str = "PyTorch file") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, after :func:`check_torch_file`,
    with one-line errors.

    Raises :class:`UnsafeFileError` (the file refers to Python objects: refused, never
    executed; the message names the conversion command), :class:`UnreadableFileError`
    (not a PyTorch file, truncated, corrupt, a folder...) or
    :class:`~reid_srdl.core.limits.LimitExceededError` (it declares sizes it does not hold).
    ``what`` names the file in messages.
    """
    try:
        check_torch_file(path, what)
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4": the outcome is reported below, in one line.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except ReidSrdlError:
        raise
    except pickle.UnpicklingError as e:
        refers = _refers_to(str(e))
        if refers is not None:
            raise UnsafeFileError(
                f"refusing to load {what} {path}: it refers to {refers}, which the safe loader does not "
                f"rebuild because loading it could run code; convert it to plain data (read without "
                f"running anything) with: {convert_command(path)}"
            ) from None
        reason = "not a file written by torch.save, or corrupt"
    except RuntimeError as e:
        if "TorchScript" in str(e):
            reason = "it is a TorchScript program, not a data file"
        else:
            reason = f"not a file written by torch.save, or truncated ({_torch_reason(e)})"
    except (EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        reason = f"truncated or corrupt ({_torch_reason(e)})"
    except IsADirectoryError:
        reason = "it is a folder"
    except OSError as e:
        reason = (e.strerror or type(e).__name__).lower()
    raise UnreadableFileError(f"cannot read {what} {path}: {reason}", reason)


def plain_data(obj: Any, where: str = "value") -> Any:
    """``obj`` in the types the safe unpickler accepts, for saving.

    NumPy scalars become Python numbers (they would need NumPy globals to load); containers
    are walked (``OrderedDict`` kept, with a state dict's ``_metadata``); anything else is a
    ``TypeError`` naming where it was found, so that a file which would not load safely is
    never written.  Containers that need no change are returned as they are.  A container
    met twice is walked once (shared parts stay shared); one that contains itself, or
    nesting deeper than ``limits.MAX_NESTING_DEPTH``, is a ``TypeError``.
    """
    done: Dict[int, Tuple[Any, Any]] = {}  # id -> (container, its plain form); kept alive
    open_ids: set = set()

    def walk(value: Any, at: str, depth: int) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, torch.Tensor) or type(value) in PLAIN_SCALARS:
            return value
        if isinstance(value, (torch.dtype, torch.device, torch.Size)):
            return value
        if not isinstance(value, (dict, list, tuple)):
            raise TypeError(
                f"{at} is a {type(value).__module__}.{type(value).__qualname__}, which the safe loader cannot "
                f"read back; save plain data (tensors, dicts, lists, str, int, float, bool, None)"
            )
        key = id(value)
        if key in done:
            return done[key][1]
        if key in open_ids:
            raise TypeError(f"{at} contains itself (a cycle); save plain nested data")
        if depth >= limits.MAX_NESTING_DEPTH:
            raise TypeError(f"{at} is nested more than {limits.MAX_NESTING_DEPTH} levels deep")
        open_ids.add(key)
        out = container(value, at, depth + 1)
        open_ids.discard(key)
        done[key] = (value, out)
        return out

    def container(obj: Any, at: str, depth: int) -> Any:
        if isinstance(obj, dict):
            changed = False
            items = []
            for k, v in obj.items():
                pk, pv = walk(k, f"{at} key", depth), walk(v, f"{at}[{k!r}]", depth)
                changed |= pk is not k or pv is not v
                items.append((pk, pv))
            if not changed and type(obj) in (dict, collections.OrderedDict):
                return obj
            out = collections.OrderedDict(items) if isinstance(obj, collections.OrderedDict) else dict(items)
            if hasattr(obj, "_metadata"):
                out._metadata = obj._metadata
            return out
        items = [walk(v, f"{at}[{i}]", depth) for i, v in enumerate(obj)]
        if type(obj) in (list, tuple) and all(a is b for a, b in zip(items, obj)):
            return obj
        return list(items) if isinstance(obj, list) else tuple(items)

    return walk(obj, where, 0)
