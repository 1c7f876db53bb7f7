"""Exit codes: one per kind of failure, listed by ``trainingfiles --help``."""

from __future__ import annotations

import enum

import trainingfiles_client as tfc


class Exit(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    INVALID_ARGUMENT = 3
    NOT_FOUND = 4
    ALREADY_EXISTS = 5
    FAILED_PRECONDITION = 6
    RESOURCE_EXHAUSTED = 7
    UNAUTHENTICATED = 8
    PERMISSION_DENIED = 9
    UNAVAILABLE = 10
    DEADLINE_EXCEEDED = 11
    DOWNLOAD_FAILED = 12
    INTERRUPTED = 130


MEANINGS: dict[Exit, str] = {
    Exit.OK: "success",
    Exit.ERROR: "any other error (INTERNAL, CANCELLED by the server, ...)",
    Exit.USAGE: "usage error: bad options, no ids (nor selector), unreadable --ids-file",
    Exit.INVALID_ARGUMENT: "INVALID_ARGUMENT: malformed or repeated ids, bad name, ...",
    Exit.NOT_FOUND: "NOT_FOUND: no such training file (or version)",
    Exit.ALREADY_EXISTS: "ALREADY_EXISTS: the name is taken",
    Exit.FAILED_PRECONDITION: "FAILED_PRECONDITION: ineligible ids (or stale conversations), "
    "nothing selected, ids not in the file, removing all, file not active, version pruned",
    Exit.RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED: too many ids (or selected), file too large",
    Exit.UNAUTHENTICATED: "UNAUTHENTICATED: missing, expired or invalid token",
    Exit.PERMISSION_DENIED: "PERMISSION_DENIED: not allowed (--owner takes a service_role token)",
    Exit.UNAVAILABLE: "UNAVAILABLE: server (or its database or storage) unreachable",
    Exit.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED: --timeout passed",
    Exit.DOWNLOAD_FAILED: "download failed, or its size or SHA-256 differs from the stored one",
    Exit.INTERRUPTED: "interrupted (Ctrl-C); a running create/add/remove/refresh/export was "
    "cancelled on the server",
}

_BY_ERROR: tuple[tuple[type[tfc.TrainingFilesError], Exit], ...] = (
    (tfc.InvalidArgument, Exit.INVALID_ARGUMENT),
    (tfc.OutOfRange, Exit.INVALID_ARGUMENT),
    (tfc.NotFound, Exit.NOT_FOUND),
    (tfc.AlreadyExists, Exit.ALREADY_EXISTS),
    (tfc.FailedPrecondition, Exit.FAILED_PRECONDITION),
    (tfc.ResourceExhausted, Exit.RESOURCE_EXHAUSTED),
    (tfc.Unauthenticated, Exit.UNAUTHENTICATED),
    (tfc.PermissionDenied, Exit.PERMISSION_DENIED),
    (tfc.Unavailable, Exit.UNAVAILABLE),
    (tfc.DeadlineExceeded, Exit.DEADLINE_EXCEEDED),
)

# What to try next, after the error itself.
HINTS: dict[Exit, str] = {
    Exit.UNAUTHENTICATED: "pass --token or set TRAININGFILES_TOKEN (make run prints one)",
    Exit.UNAVAILABLE: "is the server running at {target}? (make run; --target or "
    "TRAININGFILES_TARGET)",
    Exit.DEADLINE_EXCEEDED: "no answer within --timeout; is the server running at {target}?",
}


def exit_code(error: tfc.TrainingFilesError) -> Exit:
    for kind, code in _BY_ERROR:
        if isinstance(error, kind):
            return code
    return Exit.ERROR


def help_text() -> str:
    """The exit codes as a block of the ``--help`` epilog (kept as written)."""
    lines = ["\b", "Exit codes:"]
    lines.extend(f"  {code.value:<4} {meaning}" for code, meaning in MEANINGS.items())
    return "\n".join(lines)


class UsageError(Exception):
    """A problem with the command line that the parser cannot see (ids, files)."""


# The object could not be fetched completely, or is not the stored one (the client's).
DownloadError = tfc.DownloadError
