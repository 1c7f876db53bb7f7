"""The ``trainingfiles`` group: its help, its commands, and `main`, the entry point."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from .commands import analytics, build, completion, conversations, downloads, files
from .exits import Exit, help_text
from .session import PROG, Settings, example_text, shared

EXAMPLES = (
    "eligible --limit 5",
    "create demo --ids 5795833f-20da-45aa-9b56-d4b07e575bcc 9c41aecb-e43a-4af7-9751-862e7009fb08",
    "eligible --limit 20 --ids-only | trainingfiles create twenty --ids -",
    "download FILE_ID --format jsonl -o demo.jsonl",
    "download FILE_ID --all dataset/",
    "analytics FILE_ID",
    "completion bash > ~/.local/share/bash-completion/completions/trainingfiles",
)
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(
    PROG,
    context_settings=CONTEXT,
    epilog=f"{help_text()}\n\n{example_text(EXAMPLES)}",
    params=shared(),
)
@click.version_option(package_name="trainingfiles-client", prog_name=PROG)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Build, inspect and download LoRA training files (Training File Service,
    trainingfiles.v1).

    Results go to stdout; progress, warnings and errors to stderr. The options below
    work before or after a command's name; `trainingfiles COMMAND -h` shows its own.
    """
    ctx.ensure_object(Settings)


for group in (build, files, analytics, conversations, downloads, completion):
    for each in group.COMMANDS:
        each.context_settings = CONTEXT
        cli.add_command(each)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see ``--help``)."""
    try:
        code = cli.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.ClickException as error:  # usage errors: exit code 2
        error.show()
        return error.exit_code
    except click.exceptions.Abort:  # Ctrl-C while the command line was read
        print("interrupted", file=sys.stderr)
        return Exit.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return Exit.ERROR
    return int(code or 0)
