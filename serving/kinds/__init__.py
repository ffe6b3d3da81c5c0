"""Task kinds of the serving side, one module each, registered by name.

Every module in this package is imported here, so a new kind is one new file: a subclass of
:class:`Kind` decorated with :func:`register`. A kind defined elsewhere (a plugin) registers the
same way once its module is imported.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TypeVar

from serving.kinds.base import (
    Column,
    DecodedTensor,
    DecodeOptions,
    Kind,
    V2Output,
)

K = TypeVar("K", bound=type[Kind])

KINDS: dict[str, Kind] = {}


def register(cls: K) -> K:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    name = cls.name
    if name in KINDS:
        raise ValueError(f"task kind {name!r} is already registered")
    KINDS[name] = cls()
    return cls


def get_kind(name: str) -> Kind:
    """The kind called ``name``; unknown names list the kinds."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown task kind {name!r}; valid: {', '.join(sorted(KINDS))}") from None


def kind_names() -> list[str]:
    """Registered kinds, sorted."""
    return sorted(KINDS)


def _import_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_import_all()

__all__ = [
    "KINDS",
    "Column",
    "DecodeOptions",
    "DecodedTensor",
    "Kind",
    "V2Output",
    "get_kind",
    "kind_names",
    "register",
]
