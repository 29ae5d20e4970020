"""What each field of a plain-data file may hold, checked in one place before anything uses it.

A file read from disk (a training state, a method's resume state) is plain data: dicts,
lists, numbers, strings, tensors.  Its fields are described by :class:`Field` objects and
checked by :func:`check_fields`, which names the first field that is missing, of another
type, out of range, NaN or infinite -- ``field 'epoch' must be an integer in 1..4, got -3``
-- instead of letting a wrong value train silently or fail later with a traceback.
"""

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

#: Field kinds: what ``isinstance`` accepts for each (booleans are not numbers here).
KINDS = {
    "int": "an integer",
    "number": "a finite number",
    "bool": "true or false",
    "str": "a string",
    "mapping": "a mapping",
    "list": "a list",
    "tensor": "a tensor",
    "any": "anything",
}


@dataclass(frozen=True)
class Field:
    """One field: its kind, an inclusive range or fixed choices (int, number), what a
    mapping's or list's items are (``items``) or which keys a mapping has (``fields``)."""

    kind: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Optional[Tuple[Any, ...]] = None
    items: Optional["Field"] = None
    fields: Optional[Mapping[str, "Field"]] = None
    required: bool = True
    nullable: bool = False
    # What the value means, added to the message ("epochs done", "0-based stage").
    note: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown field kind {self.kind!r}; one of {', '.join(KINDS)}")


def _shown(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {tuple(value.shape)} tensor"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind_ok(value: Any, kind: str) -> bool:
    if kind == "any":
        return True
    if isinstance(value, bool):
        return kind == "bool"
    return {
        "int": lambda v: isinstance(v, int),
        "number": lambda v: isinstance(v, (int, float)) and math.isfinite(v),
        "bool": lambda v: False,
        "str": lambda v: isinstance(v, str),
        "mapping": lambda v: isinstance(v, dict),
        "list": lambda v: isinstance(v, (list, tuple)),
        "tensor": lambda v: isinstance(v, torch.Tensor),
    }[kind](value)


def value_problem(value: Any, spec: Field) -> Optional[str]:
    """What is wrong with ``value`` against ``spec`` itself (not its items), or None."""
    if value is None and spec.nullable:
        return None
    if not _kind_ok(value, spec.kind):
        return f"must be {KINDS[spec.kind]}{' or null' if spec.nullable else ''}, got {_shown(value)}"
    if spec.choices is not None and value not in spec.choices:
        allowed = " or ".join(_shown(c) for c in spec.choices)
        return f"must be {allowed}, got {_shown(value)}"
    low, high = spec.minimum, spec.maximum
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            bounds = f"in {low}..{high}"
        else:
            bounds = f">= {low}" if low is not None else f"<= {high}"
        return f"must be {KINDS[spec.kind]} {bounds}, got {_shown(value)}"
    return None


def field_problem(value: Any, spec: Field, name: str) -> Optional[str]:
    """``field 'name' must be ...`` for the first problem in ``value`` or its items, or None."""
    problem = value_problem(value, spec)
    if problem:
        return f"field '{name}' {problem}" + (f" ({spec.note})" if spec.note else "")
    if value is None:
        return None
    if spec.fields is not None:
        return fields_problem(value, spec.fields, prefix=f"{name}.")
    if spec.items is not None:
        pairs = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in pairs:
            if spec.kind == "mapping" and not isinstance(key, str):
                return f"field '{name}' must have string keys, got {_shown(key)}"
            inner = f"{name}.{key}" if spec.kind == "mapping" else f"{name}[{key}]"
            problem = field_problem(item, spec.items, inner)
            if problem:
                return problem
    return None


def fields_problem(
    obj: Dict[str, Any], fields: Mapping[str, Field], prefix: str = "", strict: bool = True
) -> Optional[str]:
    """The first problem of mapping ``obj`` against ``fields``: a required field missing, a
    field of another kind or range, or (``strict``) a field the schema does not know."""
    for name, spec in fields.items():
        if name not in obj:
            if spec.required:
                return f"field '{prefix}{name}' is missing"
            continue
        problem = field_problem(obj[name], spec, f"{prefix}{name}")
        if problem:
            return problem
    if strict:
        unknown = sorted(str(k) for k in obj if k not in fields)
        if unknown:
            known = ", ".join(fields) or "none"
            return f"field '{prefix}{unknown[0]}' is not one this file has (fields: {known})"
    return None


def check_fields(obj: Any, fields: Mapping[str, Field], where: str, error=ValueError, strict: bool = True) -> None:
    """Raise ``error`` (the caller's error class) naming ``where`` and the first bad field."""
    if not isinstance(obj, dict):
        raise error(f"{where}: expected a mapping of fields, got {_shown(obj)}")
    problem = fields_problem(obj, fields, strict=strict)
    if problem:
        raise error(f"{where}: {problem}")
