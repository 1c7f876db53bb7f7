"""Conversation ids from the command line, files and standard input."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import click

from .exits import UsageError

_SEPARATORS = re.compile(r"[\s,]+")
F = TypeVar("F", bound=Callable[..., Any])


class _Several(click.Option):
    """An option that takes every value up to the next option: ``--ids A B C``.

    Click options take a fixed number of values; this one hooks its parser entry (the
    recipe click's maintainers point to) so that the words after ``--ids`` that are not
    options are its values, in order. A command's arguments therefore come before it.
    """

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        entry = parser._long_opt[self.opts[0]]
        store = entry.process

        def process(value: Any, state: Any) -> None:
            store(value, state)
            while state.rargs and (state.rargs[0] == "-" or not state.rargs[0].startswith("-")):
                store(state.rargs.pop(0), state)

        entry.process = process


def options(handler: F) -> F:
    """Declare ``--ids`` and ``--ids-file`` on a command (its handler receives `ids` and
    `ids_file`; `read_ids` makes one list of them)."""
    handler = click.option(
        "--ids-file",
        multiple=True,
        metavar="FILE",
        help="a file of conversation ids, one per line (# comments); - is standard input",
    )(handler)
    return click.option(
        "--ids",
        cls=_Several,
        multiple=True,
        metavar="ID ...",
        help="conversation ids (spaces or commas between them); - reads standard input",
    )(handler)


def _tokens(lines: Iterable[str]) -> Iterator[str]:
    """Ids separated by newlines, spaces or commas; `#` starts a comment."""
    for line in lines:
        yield from (token for token in _SEPARATORS.split(line.split("#", 1)[0]) if token)


def read_ids(
    values: Sequence[str] | None,
    files: Sequence[str] | None,
    *,
    required: bool = True,
    otherwise: str = "",
) -> list[str]:
    """Ids from ``--ids`` (``-``: standard input) then from each ``--ids-file``, in order.

    None at all is a usage error if `required` (`otherwise` says what else the command
    takes instead), else an empty list."""
    ids: list[str] = []
    for value in values or ():
        ids.extend(_tokens(sys.stdin) if value == "-" else _tokens([value]))
    for name in files or ():
        if name == "-":
            ids.extend(_tokens(sys.stdin))
            continue
        try:
            with open(name, encoding="utf-8") as lines:
                ids.extend(_tokens(lines))
        except OSError as error:
            raise UsageError(f"cannot read --ids-file {name}: {error.strerror}") from error
    if not ids and required:
        raise UsageError(
            "no conversation ids: pass --ids ID ..., --ids-file FILE or --ids -" + otherwise
        )
    return ids
