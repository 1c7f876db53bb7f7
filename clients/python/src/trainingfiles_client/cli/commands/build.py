"""Building training files: ``create`` and ``add``, with live progress."""

from __future__ import annotations

import click
from rich.markup import escape

from trainingfiles.v1 import resources_pb2

from ..ids import options as ids_options
from ..ids import read_ids
from ..progress import follow
from ..session import Session, command, file_id_argument


def _summary(training_file: resources_pb2.TrainingFile) -> str:
    return (
        f"{training_file.conversation_count} conversations, "
        f"{training_file.total_training_pairs} training pairs, "
        f"version {training_file.version}"
    )


@command(
    "create",
    examples=[
        "create demo --ids 5795833f-20da-45aa-9b56-d4b07e575bcc "
        "9c41aecb-e43a-4af7-9751-862e7009fb08",
        "create twenty --ids-file ids.txt --description 'first try'",
        "eligible --limit 20 --ids-only | trainingfiles create twenty --ids -",
    ],
)
@click.argument("name")
@click.option("--description", help="free text kept with the file")
@ids_options
def create(
    session: Session,
    name: str,
    description: str | None,
    ids: tuple[str, ...],
    ids_file: tuple[str, ...],
) -> int:
    """Create a training file, with live progress.

    NAME is the new file's name; the server says what it accepts. Every offending id is
    listed with its reason; Ctrl-C cancels the build on the server.
    """
    chosen = read_ids(ids, ids_file)
    client = session.client
    operation = client.create_training_file(name, chosen, description, **session.options())
    return follow(
        session.output,
        client.target,
        operation,
        chosen,
        lambda f: f"[green]✓[/] created {escape(f.name)} {f.id}: {_summary(f)}",
        lambda file_id: (
            f"training file {file_id} ends FAILED" if file_id else "no training file was created"
        ),
        lambda: client.validate_conversations(chosen, **session.options()),
    )


@command(
    "add",
    examples=[
        "add FILE_ID --ids e84503e0-3170-4096-a8a2-607a2fa003d6,"
        "168391b5-de40-4120-a198-cba11f065424",
        "eligible --exclude FILE_ID --limit 3 --ids-only | trainingfiles add FILE_ID --ids -",
    ],
)
@file_id_argument
@ids_options
def add(session: Session, file_id: str, ids: tuple[str, ...], ids_file: tuple[str, ...]) -> int:
    """Add conversations to an active training file, with live progress.

    The file keeps its content until the rebuilt one replaces it (version + 1); on any
    failure, or Ctrl-C, it stays as it was.
    """
    chosen = read_ids(ids, ids_file)
    client = session.client
    operation = client.add_conversations(file_id, chosen, **session.options())
    return follow(
        session.output,
        client.target,
        operation,
        chosen,
        lambda f: f"[green]✓[/] added {len(chosen)} to {escape(f.name)} {f.id}: {_summary(f)}",
        lambda _: f"training file {file_id} keeps its previous content",
        lambda: client.validate_conversations(chosen, file_id, **session.options()),
    )


COMMANDS = [create, add]
