"""A small strict registry: things are found by a plain string, one decorator.

A duplicate name raises; an unknown name lists the valid ones.  An entry may carry facts
about itself (``register(name, **info)``: a method's options dataclass, an architecture's
ImageNet weight layout), so that whoever needs them asks the registry instead of keeping a
copied list.  Each registry lives in the package whose files fill it
(``reid_srdl.methods.METHODS``, ``reid_srdl.models.MODELS``); that package's ``__init__``
imports its entry files, so the registry is full once the package is imported.  A lower
layer that needs one (the config reads the method registry to know each method's options)
receives it from its caller instead of importing it.
"""

from typing import Any, Callable, Dict, List, TypeVar

from reid_srdl.core.errors import ReidSrdlError

T = TypeVar("T")


class UnknownNameError(ReidSrdlError, ValueError):
    """Asked for a name nobody registered; the message lists the valid ones."""


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, object] = {}
        self._info: Dict[str, Dict[str, Any]] = {}

    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            self._info[name] = dict(info)
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a toy entry clean up after themselves)."""
        self._items.pop(name, None)
        self._info.pop(name, None)

    def get(self, name: str):
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'; valid {self.kind}s: {', '.join(self.list())}"
            ) from None

    def info(self, name: str) -> Dict[str, Any]:
        """What ``name`` was registered with (an empty dict for none); unknown names raise."""
        self.get(name)
        return dict(self._info[name])

    def list(self) -> List[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
