"""A name -> object registry used for datasets, models and heads (one instance of each).

A registry may attach to another's names (``of``): models.backbones keeps each model's Keras builder
keyed by the names models.catalog declares, so the names are listed once and a builder cannot name a
model the catalog lacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, of: Registry[Any] | None = None):
        self.kind = kind
        self.of = of
        self._entries: dict[str, T] = {}
        self._private: set[str] = set()

    def register(self, name: str, private: bool = False) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register("xception")``. ``private``: found by ``get`` but left out of
        ``names()``, the list users see in errors (a test's stand-in, registered by the tests)."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if self.of is not None and name not in self.of:
                raise ValueError(f"{self.kind} {name!r}: no {self.of.kind} {name!r} is declared; declare it first")
            self._entries[name] = obj
            if private or (self.of is not None and name in self.of._private):
                self._private.add(name)
            return obj

        return add

    def get(self, name: str) -> T:
        from transferbench.core.errors import ConfigError

        if name not in self._entries:
            if self.of is not None:
                self.of.get(name)  # an unknown name: the error lists the names users see
                raise LookupError(f"{self.of.kind} {name!r} has no {self.kind}; register one")
            raise ConfigError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self._entries[name]

    def names(self, private: bool = False) -> list[str]:
        """The registered names, sorted; those registered as private only when ``private`` is true."""
        return sorted(name for name in self._entries if private or name not in self._private)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
