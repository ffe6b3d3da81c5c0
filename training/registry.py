"""A tiny name -> object registry used for task kinds, backbones, heads and weightings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from training.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects registered by name; duplicates are errors, unknown names list the valid ones."""

    def __init__(self, what: str) -> None:
        """Create an empty registry of ``what`` (used in error messages)."""
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under ``name``."""

        def add(obj: T) -> T:
            if name in self._items:
                raise RegistryError(f"{self.what} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """Return the object registered as ``name`` or fail listing the valid names."""
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.what} {name!r}; valid: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
