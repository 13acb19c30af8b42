"""How the command line presents itself in ``--help``: flags without a type, docstrings as plain paragraphs."""

from __future__ import annotations

import inspect
import re
from typing import Any, Optional

from rich.markup import escape
from typer.core import TyperCommand, TyperGroup


class _PlainFlags:
    """Boolean flags shown the way typer's docs show them (``--debug``), not as ``--debug <bool>``.

    This typer release labels every option with its type, flags included, unless it has a metavar;
    a flag takes no value, so each flag of a command (``--help`` too) gets an empty one.
    """

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class Command(_PlainFlags, TyperCommand):
    """Every autokd command: :class:`_PlainFlags`."""


class Group(_PlainFlags, TyperGroup):
    """Every autokd command group: :class:`_PlainFlags`."""


def plain_help(doc: Optional[str]) -> str:
    """A docstring as ``--help`` shows it: paragraphs reflowed by the terminal, no reStructuredText.

    This typer keeps a docstring's line breaks after its first paragraph, and its rich markup
    would read ``[...]`` as a style; ````x```` and ``:class:`x``` become plain text.
    """
    text = inspect.cleandoc(doc or "")
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    text = re.sub(r"``([^`]+)``", r"'\1'", text)
    paragraphs = (" ".join(line.strip() for line in block.splitlines()) for block in re.split(r"\n\s*\n", text))
    return escape("\n\n".join(p for p in paragraphs if p))
