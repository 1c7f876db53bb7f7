"""What every command shares: the connection and output options, declared once, and the
run of a command, with its client opened and its failures turned into exit codes.

The shared options are accepted before or after the command's name (``trainingfiles
--json list`` and ``trainingfiles list --json``): each is declared once here and added
to the group and to every command, and wherever it is given, its value lands in the one
`Settings` of the invocation.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from click.core import ParameterSource
from click.shell_completion import CompletionItem
from google.protobuf.message import Message

import trainingfiles_client as tfc

from .exits import DownloadError, Exit, UsageError
from .output import Output, as_dict
from .report import fail, report_error

PROG = "trainingfiles"
M = TypeVar("M", bound=Message)
# Completing a FILE_ID asks the server; a shell must not hang on a server that is down.
COMPLETION_TIMEOUT = 2.0


@dataclass
class Settings:
    """The shared options of one invocation; None: the client's own default applies."""

    target: str | None = None
    token: str | None = None
    tls: bool | None = None
    json: bool = False
    timeout: float | None = None
    verbose: bool = False


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Keep a shared option's value, wherever on the command line it was given."""
    if param.name and ctx.get_parameter_source(param.name) is not ParameterSource.DEFAULT:
        setattr(ctx.ensure_object(Settings), param.name, value)
    return value


def shared() -> list[click.Parameter]:
    """The options every command takes (new objects for each command that adds them)."""
    options: list[tuple[list[str], dict[str, Any]]] = [
        (
            ["--target", "--address", "target"],
            {
                "metavar": "HOST:PORT",
                "help": "server address (env TRAININGFILES_TARGET; default 127.0.0.1:50051)",
            },
        ),
        (
            ["--token"],
            {"help": "bearer token (env TRAININGFILES_TOKEN, preferred: flags show in `ps`)"},
        ),
        (
            ["--tls/--plaintext", "tls"],
            {
                "default": None,
                "help": "TLS or plaintext (env TRAININGFILES_TLS=1/0; default: plaintext "
                "for loopback targets only)",
            },
        ),
        (
            ["--json", "json"],
            {"is_flag": True, "help": "print JSON: one document, or one line per event"},
        ),
        (
            ["--verbose", "-v", "verbose"],
            {
                "is_flag": True,
                "help": "show each warning of a build, not only each kind's total",
            },
        ),
        (
            ["--timeout"],
            {
                "type": click.FloatRange(min=0, min_open=True),
                "metavar": "SECONDS",
                "help": "deadline per call (default: each call's own, 30 s for reads; "
                "none for create, add, remove, refresh and export)",
            },
        ),
    ]
    return [
        click.Option(names, expose_value=False, callback=_remember, **extra)
        for names, extra in options
    ]


class Session:
    """A command's view of the invocation: its settings, its output, its client."""

    def __init__(self, settings: Settings, output: Output) -> None:
        self.settings = settings
        self.output = output

    @functools.cached_property
    def client(self) -> tfc.TrainingFilesClient:
        """Opened on first use (a command that calls nothing opens nothing)."""
        settings = self.settings
        return tfc.TrainingFilesClient(settings.target, token=settings.token, tls=settings.tls)

    @property
    def target(self) -> str:
        opened = "client" in self.__dict__
        return self.client.target if opened else (self.settings.target or "")

    def options(self) -> dict[str, Any]:
        """The per-call options from the command line: ``--timeout``, if given."""
        timeout = self.settings.timeout
        return {} if timeout is None else {"timeout": timeout}

    def listed(self, items: Iterable[M], limit: int | None, key: str) -> list[M] | None:
        """Up to `limit` of a pager's items. With ``--json`` they are printed as one
        document, ``{key: [...]}``, and None is returned: nothing is left to show."""
        found = list(itertools.islice(items, limit))
        if not self.output.json:
            return found
        self.output.document({key: [as_dict(item) for item in found]})
        return None

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()


Handler = Callable[..., int]


def command(name: str, *, examples: Sequence[str] = ()) -> Callable[[Handler], click.Command]:
    """Make `handler(session, **params)` the command `name`, with the shared options.

    Its docstring is the command's help (the first line its summary in the list of
    commands), `examples` follow it; its click arguments and options are declared under
    this decorator as usual.
    """

    def decorate(handler: Handler) -> click.Command:
        def callback(**params: Any) -> int:
            return run(handler, params)

        own: list[click.Parameter] = list(reversed(getattr(handler, "__click_params__", [])))
        help_text = inspect.getdoc(handler) or ""
        return click.Command(
            name,
            callback=callback,
            params=[*own, *shared()],
            help=help_text,
            short_help=help_text.split("\n", 1)[0].rstrip("."),
            epilog=example_text(examples),
        )

    return decorate


def example_text(examples: Sequence[str]) -> str:
    """Examples as a block of the help's epilog (``\\b``: kept as written)."""
    return "\n".join(["\b", "Examples:", *(f"  {PROG} {example}" for example in examples)])


def run(handler: Handler, params: dict[str, Any]) -> int:
    """Run a command; every failure becomes its exit code and a report on stderr."""
    ctx = click.get_current_context()
    settings = ctx.ensure_object(Settings)
    output = Output.create(settings.json, settings.verbose)
    session = Session(settings, output)
    try:
        return handler(session, **params)
    except (UsageError, ValueError) as error:  # ValueError: configuration from the environment
        if output.json:
            return fail(output, str(error), Exit.USAGE)
        raise click.UsageError(str(error), ctx) from error
    except tfc.TrainingFilesError as error:
        return report_error(output, error, target=session.target)
    except DownloadError as error:
        return fail(output, str(error), Exit.DOWNLOAD_FAILED)
    except KeyboardInterrupt:
        return fail(output, "interrupted", Exit.INTERRUPTED)
    finally:
        session.close()


def complete_file_id(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """The ids of the newest training files (their names as help), asked of the server."""
    settings = ctx.find_object(Settings) or Settings()
    try:
        with tfc.TrainingFilesClient(
            settings.target, token=settings.token, tls=settings.tls
        ) as client:
            pager = client.list_training_files(
                include_archived=True, timeout=COMPLETION_TIMEOUT, retry=None
            )
            files = list(itertools.islice(pager, 200))
    except (tfc.TrainingFilesError, ValueError):
        return []  # no server, no token: nothing to offer, and nothing to complain about
    return [CompletionItem(f.id, help=f.name) for f in files if f.id.startswith(incomplete)]


def file_id_argument(handler: Handler) -> Handler:
    """The FILE_ID argument, completed from the server."""
    return click.argument("file_id", metavar="FILE_ID", shell_complete=complete_file_id)(handler)


def limit_option(handler: Handler) -> Handler:
    """``--limit`` of the listing commands."""
    limit = click.IntRange(min=1)
    return click.option("--limit", type=limit, help="at most this many (default: all)")(handler)


def version_option(handler: Handler) -> Handler:
    """``--version N``: a version of the file instead of its current one."""
    return click.option(
        "--version", type=click.IntRange(min=0), metavar="N",
        help="this version of the file (0 or left out: the current one); `versions` lists them",
    )(handler)  # fmt: skip


# The largest page the field can ask for: the contract serves its own maximum instead.
_MOST = 2**31 - 1


def page_size(limit: int | None) -> int:
    """As many per page as `--limit` asks for (the server caps it), else its largest."""
    return limit or _MOST
