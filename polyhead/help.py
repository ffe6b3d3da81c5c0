"""Help pages without type noise: typer's command and group classes, one column tidied.

Typer prints a value type beside every option, including flags (``--resume <bool>``,
``--help <bool>``) and repeatable options (``--set <list[str]>``). A flag takes no value, so it
gets no type here; a repeatable option or variadic argument shows the type of one value, which
is what the user types after it each time.
"""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperCommand, TyperGroup

_LIST_TYPE = re.compile(r"<list\[(\w+)\]>")


def _one_value(label: str | None) -> str | None:
    """``<list[Path]>`` -> ``<path>``, the way typer labels a single value of that type."""
    if label is None:
        return None
    return _LIST_TYPE.sub(lambda m: f"<{m[1].lower()}>", label)


def _tidy(params: list[Any]) -> None:
    for param in params:
        if getattr(param, "_polyhead_tidy", False):
            continue
        param._polyhead_tidy = True
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # shown instead of the type: nothing
            continue
        shown = param.display_type_rich

        def display_type_rich(ctx: Any, shown: Any = shown) -> str | None:
            return _one_value(shown(ctx=ctx))

        param.display_type_rich = display_type_rich


class TidyCommand(TyperCommand):
    """A command whose help shows no type for flags and one value's type for lists."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """Tidy the parameters' type column, then let typer render the page."""
        _tidy(self.get_params(ctx))
        super().format_help(ctx, formatter)


class TidyGroup(TyperGroup):
    """A group of commands, its own options tidied like :class:`TidyCommand`'s."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """Tidy the parameters' type column, then let typer render the page."""
        _tidy(self.get_params(ctx))
        super().format_help(ctx, formatter)
