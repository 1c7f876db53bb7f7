"""Errors as a person (or, with ``--json``, a program) reads them, with every violation."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence

import grpc

import trainingfiles_client as tfc
from trainingfiles.v1 import service_pb2

from .exits import HINTS, Exit, exit_code
from .output import Output

Validate = Callable[[], service_pb2.ValidateConversationsResponse]

_INDEXED = re.compile(r"^conversation_ids\[(\d+)\]$")


def every_violation(
    error: tfc.TrainingFilesError, validate: Validate | None
) -> Sequence[tfc.Violation] | None:
    """All of the error's violations when its details were cut, else None (use its own).

    The server lists only the first violations in the details (they must fit gRPC's
    metadata limit); ValidateConversations returns every one.
    """
    if not error.violations_cut or validate is None:
        return None
    try:
        problems = validate().problems
    except tfc.TrainingFilesError:
        return None  # the first ones, as the error listed them, will have to do
    # Argument problems name request fields; eligibility problems name conversations.
    arguments = error.code == grpc.StatusCode.INVALID_ARGUMENT
    found = [
        tfc.Violation(p.subject, p.reason, p.description)
        for p in problems
        if p.subject.startswith("conversation_ids") == arguments
    ]
    others = [v for v in error.violations if not v.subject.startswith("conversation_ids")]
    return [*others, *found] if arguments else found


def report_error(
    output: Output,
    error: tfc.TrainingFilesError,
    ids: Sequence[str] = (),
    target: str = "",
    every: Sequence[tfc.Violation] | None = None,
) -> Exit:
    """Print the error and every violation it carries (or `every`); returns the exit code.

    When the details list only the first violations and `every` is not given, how many
    there are in all is printed too (``violations_total`` with ``--json``).
    """
    code = exit_code(error)
    violations = []
    for violation in error.violations if every is None else every:
        # A BadRequest names `conversation_ids[3]`: show the id the user typed too.
        match = _INDEXED.match(violation.subject)
        value = ids[int(match[1])] if match and int(match[1]) < len(ids) else None
        violations.append((violation, value))
    # The details listed only the first ones, and no full list was fetched: say so.
    total = error.violations_total if every is None and error.violations_cut else None
    if output.json:
        listed = [
            {"subject": v.subject, "reason": v.reason, "description": v.description}
            | ({"value": value} if value is not None else {})
            for v, value in violations
        ]
        document: dict[str, object] = {
            "code": error.code.name,
            "message": error.message,
            "reason": error.reason,
            "exit_code": code,
            "violations": listed,
        }
        if total is not None:
            document["violations_total"] = total
        output.error_document({"error": document})
        return code
    reason = f" ({error.reason})" if error.reason and error.reason != error.code.name else ""
    message = error.message
    if violations and ": " in message:
        # The server's message goes on to repeat the violations listed below.
        message = message.split(": ", 1)[0]
    lines = [f"error: {error.code.name}{reason}: {message}"]
    rows = [
        (value, v.reason, f"{v.description} ({v.subject})")
        if value is not None
        else (v.subject, v.reason, v.description)
        for v, value in violations
    ]
    widths = [max((len(row[i]) for row in rows), default=0) for i in (0, 1)]
    for subject, why, description in rows:
        lines.append(f"  {subject:<{widths[0]}}  {why:<{widths[1]}}  {description}".rstrip())
    if total is not None:
        lines.append(f"  … and {total - len(rows)} more the server did not list ({total} in all)")
    hint = HINTS.get(code)
    if hint:
        lines.append("hint: " + hint.format(target=target or "the target"))
    print("\n".join(lines), file=sys.stderr)
    return code


def fail(output: Output, message: str, code: Exit, **extra: object) -> Exit:
    """A failure of the command itself (not of a call): one line, or one JSON document."""
    if output.json:
        error = {"code": extra.pop("status", None), "message": message, "exit_code": code}
        output.error_document({"error": error | extra})
    else:
        print(f"error: {message}" if code != Exit.INTERRUPTED else message, file=sys.stderr)
    return code
