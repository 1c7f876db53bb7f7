"""Shell completion: ``completion bash|zsh|fish`` prints the script to load."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from ..exits import Exit
from ..session import PROG, Session, command

SHELLS = ("bash", "zsh", "fish")
# The variable the script sets when it asks this command for completions.
COMPLETE_VAR = f"_{PROG.upper()}_COMPLETE"


@command(
    "completion",
    examples=[
        "completion bash > ~/.local/share/bash-completion/completions/trainingfiles",
        'completion zsh > "${fpath[1]}/_trainingfiles"',
        "completion fish > ~/.config/fish/completions/trainingfiles.fish",
    ],
)
@click.argument("shell", type=click.Choice(SHELLS))
def completion(session: Session, shell: str) -> int:
    """Print the completion script for bash, zsh or fish.

    Commands, options and choices complete offline; FILE_ID asks the server (the same
    target and token as any command) for the newest training files.
    """
    root = click.get_current_context().find_root().command
    completer = get_completion_class(shell)
    assert completer is not None  # one of SHELLS
    script = completer(root, {}, PROG, COMPLETE_VAR).source()
    if session.output.json:
        session.output.document({"shell": shell, "variable": COMPLETE_VAR, "script": script})
    else:
        click.echo(script)
    return Exit.OK


COMMANDS = [completion]
