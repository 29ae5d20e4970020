"""A small checker of plain values read from files (JSON, a model file's pickle), against a
schema written as data, with messages that name where the bad value sits.

Every field the project reads from a file it did not just write (a model file's spec and
metadata, an exported model's description, a gallery's metadata) is checked here once,
right after reading, so the code that uses it can rely on the types and ranges instead of
failing with a traceback deep inside::

    MODEL_SPEC = Dict({"name": Str(max_chars=200), "num_classes": Int(1, 1000)}, extra=Scalar())
    spec = check(obj["spec"], MODEL_SPEC, "runs/a/final.pt: spec")
    # SchemaError: runs/a/final.pt: spec.num_classes: expected an integer in 1..1000, got 1000000000

Walking is bounded: nesting deeper than ``limits.MAX_NESTING_DEPTH`` and containers that
contain themselves are refused by name, and a container met twice (a shared sub-structure)
is checked once, so a small file cannot make the check itself run long.
"""

import math
import numbers
from typing import Any, Iterable, Sequence
from typing import Dict as DictT
from typing import Optional as OptionalT

from reid_srdl.core import limits
from reid_srdl.core.errors import ReidSrdlError


class SchemaError(ReidSrdlError, ValueError):
    """A value read from a file does not have the expected type or range (the message names
    the file and the field)."""


def short_repr(value: Any, width: int = 60) -> str:
    """``repr`` for messages: plain values shown (cut to ``width``), anything else by type."""
    if value is None or isinstance(value, (bool, numbers.Number, str, bytes)):
        text = repr(value)
    elif isinstance(value, (dict, list, tuple)):
        text = f"a {type(value).__name__} of {len(value)} item(s)"
    else:
        text = f"a {type(value).__module__}.{type(value).__qualname__}"
    return text if len(text) <= width else text[: width - 3] + "..."


def clip_path(where: str, width: int = 100) -> str:
    """A long path (deep nesting) cut in the middle, for a one-line message; the file part
    before the first ``": "`` is always kept whole."""
    head, sep, path = where.partition(": ")
    if not sep:
        head, path = "", where
    if len(path) > width:
        path = f"{path[: width // 2]}...{path[-width // 2 + 3 :]}"
    return f"{head}{sep}{path}"


def _at(where: str) -> str:
    """``where`` followed by one colon (a file part ``"f.pt:"`` already has it)."""
    return where if where.endswith(":") else f"{where}:"


def _child(where: str, key: Any) -> str:
    """``where.key`` (``where key`` after a colon: ``f.pt: spec``), ``where['odd key']``."""
    if isinstance(key, str) and key.isidentifier():
        return f"{where} {key}" if where.endswith(":") else f"{where}.{key}"
    return f"{where}[{short_repr(key)}]"


class _Walk:
    """State of one check: depth, the containers on the current path (cycles) and those
    already checked against a given schema (shared parts are checked once)."""

    def __init__(self):
        self.depth = 0
        self.open: set = set()
        self.done: set = set()

    def enter(self, value: Any, spec: "Spec", where: str) -> bool:
        """False when ``value`` was already checked against ``spec`` (skip it)."""
        key = (id(value), id(spec))
        if key in self.done:
            return False
        if id(value) in self.open:
            raise SchemaError(f"{_at(clip_path(where))} contains itself (a cycle); expected plain nested data")
        if self.depth >= limits.MAX_NESTING_DEPTH:
            raise SchemaError(f"{_at(clip_path(where))} nested more than {limits.MAX_NESTING_DEPTH} levels deep")
        self.open.add(id(value))
        self.depth += 1
        return True

    def leave(self, value: Any, spec: "Spec") -> None:
        self.open.discard(id(value))
        self.depth -= 1
        self.done.add((id(value), id(spec)))


class Spec:
    """One schema node: :meth:`check` returns the value (possibly normalised) or raises."""

    def describe(self) -> str:
        raise NotImplementedError

    def check(self, value: Any, where: str, walk: _Walk) -> Any:
        raise NotImplementedError

    def fail(self, value: Any, where: str) -> SchemaError:
        return SchemaError(f"{_at(clip_path(where))} expected {self.describe()}, got {short_repr(value)}")


def _range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f" in {lo}..{hi}"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


class Int(Spec):
    """A whole number (not a bool) in ``lo..hi`` (inclusive; None: unbounded)."""

    def __init__(self, lo: OptionalT[int] = None, hi: OptionalT[int] = None):
        self.lo, self.hi = lo, hi

    def describe(self) -> str:
        return "an integer" + _range(self.lo, self.hi)

    def check(self, value, where, walk):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise self.fail(value, where)
        value = int(value)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise self.fail(value, where)
        return value


class Float(Spec):
    """A real number (an int is accepted) in ``lo..hi``, finite unless ``finite=False``."""

    def __init__(self, lo: OptionalT[float] = None, hi: OptionalT[float] = None, finite: bool = True):
        self.lo, self.hi, self.finite = lo, hi, finite

    def describe(self) -> str:
        return ("a finite number" if self.finite else "a number") + _range(self.lo, self.hi)

    def check(self, value, where, walk):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise self.fail(value, where)
        value = float(value)
        if self.finite and not math.isfinite(value):
            raise self.fail(value, where)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise self.fail(value, where)
        return value


class Bool(Spec):
    def describe(self) -> str:
        return "true or false"

    def check(self, value, where, walk):
        if not isinstance(value, bool):
            raise self.fail(value, where)
        return value


class Null(Spec):
    def describe(self) -> str:
        return "nothing (null)"

    def check(self, value, where, walk):
        if value is not None:
            raise self.fail(value, where)
        return value


class Str(Spec):
    """A string of at most ``max_chars`` characters, one of ``choices`` when given."""

    def __init__(self, max_chars: OptionalT[int] = None, choices: OptionalT[Sequence[str]] = None):
        self.max_chars, self.choices = max_chars, tuple(choices) if choices is not None else None

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        return f"a string of at most {self._max()} characters"

    def _max(self) -> int:
        return self.max_chars if self.max_chars is not None else limits.MAX_STRING_CHARS

    def check(self, value, where, walk):
        if not isinstance(value, str) or len(value) > self._max():
            raise self.fail(value, where)
        if self.choices is not None and value not in self.choices:
            raise self.fail(value, where)
        return value


class OneOf(Spec):
    """The first alternative that accepts the value; the message lists them all."""

    def __init__(self, *alternatives: Spec):
        self.alternatives = alternatives

    def describe(self) -> str:
        return " or ".join(a.describe() for a in self.alternatives)

    def check(self, value, where, walk):
        for alternative in self.alternatives:
            try:
                return alternative.check(value, where, walk)
            except SchemaError as e:
                # A container of the right type with a bad part: report the part, not "or".
                if isinstance(alternative, (List, Dict)) and alternative.accepts_type(value):
                    raise e from None
        raise self.fail(value, where)


def Optional(spec: Spec) -> Spec:  # reads like typing.Optional in a schema
    """``spec`` or None."""
    return OneOf(spec, Null())


class Scalar(Spec):
    """Any JSON scalar: a string (within the length limit), a finite number, a bool or None."""

    def describe(self) -> str:
        return "a string, a number, true/false or null"

    def check(self, value, where, walk):
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and math.isfinite(value):
            return float(value)
        if isinstance(value, str) and len(value) <= limits.MAX_STRING_CHARS:
            return value
        raise self.fail(value, where)


class List(Spec):
    """A list (or tuple) of at most ``max_items`` items, each checked by ``item``."""

    def __init__(self, item: Spec, max_items: OptionalT[int] = None, min_items: int = 0):
        self.item, self.max_items, self.min_items = item, max_items, min_items

    def accepts_type(self, value) -> bool:
        return isinstance(value, (list, tuple))

    def describe(self) -> str:
        size = f" of at most {self.max_items} items" if self.max_items is not None else ""
        return f"a list{size} of {self.item.describe()}"

    def check(self, value, where, walk):
        if not self.accepts_type(value):
            raise self.fail(value, where)
        if len(value) < self.min_items or (self.max_items is not None and len(value) > self.max_items):
            raise SchemaError(
                f"{_at(where)} expected {self.min_items}..{self.max_items} items, got {len(value)}"
                if self.max_items is not None
                else f"{_at(where)} expected at least {self.min_items} items, got {len(value)}"
            )
        if not walk.enter(value, self, where):
            return value
        out = [self.item.check(v, f"{where}[{i}]", walk) for i, v in enumerate(value)]
        walk.leave(value, self)
        return out if isinstance(value, list) else tuple(out)


class Dict(Spec):
    """A dict with string keys: ``fields`` names the known keys and their schemas,
    ``required`` those that must be present; other keys are checked by ``extra`` (a schema
    for their values; None refuses them).  ``max_items`` bounds the number of keys."""

    def __init__(
        self,
        fields: OptionalT[DictT[str, Spec]] = None,
        required: Iterable[str] = (),
        extra: OptionalT[Spec] = None,
        max_items: OptionalT[int] = None,
        key: OptionalT[Spec] = None,
    ):
        self.fields = dict(fields or {})
        self.required = tuple(required)
        self.extra, self.max_items = extra, max_items
        self.key = key if key is not None else Str(max_chars=1000)

    def accepts_type(self, value) -> bool:
        return isinstance(value, dict)

    def describe(self) -> str:
        if self.fields:
            return "a mapping with keys " + ", ".join(self.fields)
        return "a mapping"

    def check(self, value, where, walk):
        if not self.accepts_type(value):
            raise self.fail(value, where)
        if self.max_items is not None and len(value) > self.max_items:
            raise SchemaError(f"{_at(where)} expected at most {self.max_items} keys, got {len(value)}")
        missing = [k for k in self.required if k not in value]
        if missing:
            raise SchemaError(f"{_at(where)} missing {', '.join(missing)}")
        if not walk.enter(value, self, where):
            return value
        out = {}
        for k, v in value.items():
            self.key.check(k, f"{where} key {short_repr(k)}", walk)
            spec = self.fields.get(k, self.extra)
            if spec is None:
                known = ", ".join(self.fields) or "none"
                raise SchemaError(f"{_at(where)} unexpected key {short_repr(k)} (known: {known})")
            out[k] = spec.check(v, _child(where, k), walk)
        walk.leave(value, self)
        return out


class JSON(Spec):
    """Any JSON-like value: dicts with string keys, lists, and :class:`Scalar` values (or
    values ``leaf`` accepts, e.g. tensors in a model file's metadata)."""

    def __init__(self, leaf: OptionalT[Spec] = None):
        # One node of each kind, reused: a shared part is then recognised as checked.
        self._dict, self._list, self._scalar = Dict(extra=self), List(self), Scalar()
        self._leaf = OneOf(self._scalar, leaf) if leaf is not None else self._scalar

    def describe(self) -> str:
        return "plain data (mappings, lists, strings, numbers, true/false, null)"

    def check(self, value, where, walk):
        if isinstance(value, dict):
            return self._dict.check(value, where, walk)
        if type(value) in (list, tuple):  # not a tuple subclass such as torch.Size
            return self._list.check(value, where, walk)
        return self._leaf.check(value, where, walk)


class Predicate(Spec):
    """A value accepted by ``test`` (e.g. a tensor); ``description`` names what is expected."""

    def __init__(self, test, description: str):
        self.test, self.description = test, description

    def describe(self) -> str:
        return self.description

    def check(self, value, where, walk):
        problem = self.test(value)
        if problem:
            raise SchemaError(f"{_at(where)} expected {self.description}, got {problem}")
        return value


def check(value: Any, spec: Spec, where: str) -> Any:
    """``value`` checked against ``spec`` (dicts and lists rebuilt with checked items, ints
    and floats as Python numbers); a :class:`SchemaError` naming ``where`` and the path of
    the first bad part otherwise."""
    return spec.check(value, where, _Walk())
