"""A small strict registry: things are found by a plain string, one decorator.

A duplicate name raises; an unknown name lists the valid ones.  An entry may carry facts
about itself (``register(name, **info)``: a method's options dataclass, an architecture's
ImageNet weight layout), so that whoever needs them asks the registry instead of keeping a
copied list.  ``modules`` are imported on the first lookup: the built-in entries register
themselves when their package is imported, and a registry consulted from a lower layer
(the config reads the method registry to know each method's options) still sees them
without that layer importing the upper one.
"""

import importlib
import threading
from typing import Any, Callable, Dict, List, Sequence, TypeVar

from reid_srdl.core.errors import ReidSrdlError

T = TypeVar("T")


class UnknownNameError(ReidSrdlError, ValueError):
    """Asked for a name nobody registered; the message lists the valid ones."""


class Registry:
    def __init__(self, kind: str, modules: Sequence[str] = ()):
        self.kind = kind
        self._items: Dict[str, object] = {}
        self._info: Dict[str, Dict[str, Any]] = {}
        self._modules = tuple(modules)
        self._loaded = not self._modules
        self._loading = False
        # Held while the modules import: another thread's first lookup waits for the whole
        # registry instead of seeing it half-filled (two experiment jobs reading saved
        # configs at once did).  Re-entrant: the modules' own registrations look names up.
        self._lock = threading.RLock()

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded or self._loading:  # done meanwhile, or our own import's lookup
                return
            self._loading = True
            try:
                for name in self._modules:
                    importlib.import_module(name)
            finally:
                self._loading = False
                self._loaded = True

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
        self._load()
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
        self._load()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items


#: Training methods: ``@METHODS.register("name", options=NameOptions)`` in their own file.
METHODS = Registry("method", modules=("reid_srdl.methods",))
#: Network architectures: ``@MODELS.register("name", imagenet=ImageNetLayout(...))``.
MODELS = Registry("model", modules=("reid_srdl.models",))
