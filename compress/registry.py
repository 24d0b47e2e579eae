"""One registry helper for methods, backends, datasets, model sources and layers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from compress.errors import CompressError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table whose misses list what is available.

    Args:
        kind: what the entries are, used in error messages ("dataset", "model source").
        error: the CompressError subclass raised for unknown names.
    """

    def __init__(self, kind: str, error: type[CompressError] = CompressError) -> None:
        self.kind = kind
        self.error = error
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register `obj` under `name`; without `obj`, return a decorator."""
        if obj is not None:
            self._add(name, obj)
            return obj

        def decorator(o: T) -> T:
            self._add(name, o)
            return o

        return decorator

    def _add(self, name: str, obj: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise self.error(
                f"unknown {self.kind} '{name}'; available: {', '.join(sorted(self._entries)) or '(none)'}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())
