"""The ``trainingfiles`` command: the Training File Service from a terminal.

A thin consumer of the public client API (``trainingfiles_client``) on click, with rich
for tables and progress bars; installed with the ``cli`` extra. One module per concern:

=================  ==========================================================
``main``           the group, its help and the entry point
``session``        the shared options (declared once), running a command
``exits``          exit codes, and the errors that are not the server's
``output``         stdout/stderr, JSON, tables, formatting
``report``         errors with every violation (ValidateConversations, or the count, if cut)
``progress``       the live view of a build (Create, Add, Remove, Refresh, Export)
``ids``            conversation ids from flags, files and standard input
``selectors``      the selector options of create, add and eligible
``outputs``        format and split options; a file's outputs as shown
``download``       saving an object with a progress bar
``commands/``      one module per group of commands
=================  ==========================================================
"""

from __future__ import annotations

try:
    import click  # noqa: F401
    import rich  # noqa: F401
except ModuleNotFoundError as missing:  # pragma: no cover - only without the extra
    raise SystemExit(
        "trainingfiles: the command-line tool needs click and rich: "
        "pip install 'trainingfiles-client[cli]'"
    ) from missing

from .main import main

__all__ = ["main"]
