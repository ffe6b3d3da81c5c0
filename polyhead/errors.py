"""The CLI's one translation of errors: what a user can cause becomes one line and exit code 2.

Errors raised on purpose (the training side's, datasets', manifests', serving's) are printed as
``error: MESSAGE``. A missing dependency means the command's extra is not installed (a serving
host has no torch), and says which ``pip install`` brings it. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from importlib import metadata
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

#: Base classes of the errors raised on purpose, by name: importing them would import torch.
_USER_ERRORS = {"PolyheadTrainingError", "DatasetError", "ManifestError", "PolyheadError"}
_OWN_PACKAGES = {"polyhead", "training", "serving"}
_EXTRA_NAMES = {"train": "training", "serve": "serving"}


def is_user_error(e: BaseException) -> bool:
    """Whether ``e`` was raised on purpose to tell the user what is wrong."""
    return bool({c.__name__ for c in type(e).__mro__} & _USER_ERRORS)


def is_missing_dependency(e: ImportError) -> bool:
    """Whether ``e`` is a third-party module that is not installed (or does not import)."""
    return e.name is None or e.name.partition(".")[0] not in _OWN_PACKAGES


def extra_hint(extra: str) -> str:
    """``pip install 'polyhead[EXTRA]'``, with the pinned torch the training extra needs."""
    hint = f"pip install 'polyhead[{extra}]'"
    try:
        requirements = metadata.requires("polyhead") or []
    except metadata.PackageNotFoundError:
        requirements = []
    for req in requirements:
        spec, _, marker = req.partition(";")
        if spec.startswith("torch==") and f'extra == "{extra}"' in marker:
            hint += f" ({spec.strip()})"
    return hint


def user_errors(command: str, extra: str | None) -> Callable[[F], F]:
    """Turn the errors a user can cause in ``command`` into one line on stderr and exit code 2.

    Args:
        command: the command as typed, e.g. ``polyhead data synth``.
        extra: the optional dependencies the command needs (``train``, ``serve``), if any.
    """

    def decorate(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except ImportError as e:
                if extra is None or not is_missing_dependency(e):
                    raise
                name = _EXTRA_NAMES.get(extra, extra)
                typer.echo(
                    f"error: `{command}` needs the {name} extra ({e}): {extra_hint(extra)}",
                    err=True,
                )
                raise typer.Exit(2) from e
            except Exception as e:
                if is_user_error(e):
                    typer.echo(f"error: {e}", err=True)
                    raise typer.Exit(2) from e
                raise

        return wrapper  # type: ignore[return-value]

    return decorate
