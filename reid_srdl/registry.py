"""A tiny strict registry: things are found by a plain string, one decorator.

A duplicate name raises; an unknown name lists the valid ones.
"""
from typing import Callable, Dict, List, TypeVar

from reid_srdl.errors import ReidSrdlError

T = TypeVar("T")


class UnknownNameError(ReidSrdlError, ValueError):
    """Asked for a name nobody registered; the message lists the valid ones."""


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, object] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str):
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'; valid {self.kind}s: {', '.join(self.list())}"
            ) from None

    def list(self) -> List[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
