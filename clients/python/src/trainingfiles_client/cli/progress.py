"""The live view of a Create, Add, Remove, Refresh or Export: one progress line per stage,
fed by the stream."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

import trainingfiles_client as tfc
from trainingfiles.v1 import resources_pb2, service_pb2

from .exits import Exit
from .output import Output, as_dict, stage_name
from .report import Validate, every_violation, fail, report_error


class _CountColumn(ProgressColumn):
    """``done/total``, blank for stages that are not counted per conversation."""

    def render(self, task: Task) -> Text:
        if not task.fields.get("counted") or not task.total:
            return Text("")
        return Text(f"{int(task.completed)}/{int(task.total)}", style="progress.download")


class _RateColumn(ProgressColumn):
    """Conversations (pairs, when rendering) per second over the stage so far (steadier
    than a moving window)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed
        if not task.fields.get("counted") or not elapsed or not task.completed:
            return Text("")
        unit = task.fields.get("unit", "conv")
        return Text(f"{task.completed / elapsed:,.1f} {unit}/s", style="progress.data.speed")


# The stage whose `done` of `total` counts training pairs, not conversations.
_RENDERING = service_pb2.TrainingFileProgress.STAGE_RENDERING


class WarningTally:
    """A build's warnings by kind, in the order the kinds first came."""

    def __init__(self) -> None:
        self.kinds: dict[str, list[service_pb2.ProgressWarning]] = {}

    def add(self, warning: service_pb2.ProgressWarning) -> None:
        self.kinds.setdefault(warning.code, []).append(warning)

    def summary(self) -> Text:
        """One line per kind: the warning itself when it came once, else its total (the
        conversations named, or the warnings when they name none)."""
        lines = Text()
        for code, warnings in self.kinds.items():
            if lines:
                lines.append("\n")
            lines.append("warning", style="yellow")
            if len(warnings) == 1:
                lines.append(f" {code}: {warnings[0].message}")
                continue
            named = {c for warning in warnings for c in warning.conversation_ids}
            total = f"{len(named)} conversations" if named else f"{len(warnings)} warnings"
            lines.append(f" {code}: {total}")
        return lines


class _WithWarnings(Progress):
    """The stages' lines, then the warnings' summary (one line per kind)."""

    def __init__(self, *columns: ProgressColumn, warnings: WarningTally, console: Console) -> None:
        self._warnings = warnings  # before Progress renders for the first time
        super().__init__(*columns, console=console)

    def get_renderables(self) -> Iterable[RenderableType]:
        yield from super().get_renderables()
        if self._warnings.kinds:
            yield self._warnings.summary()


class StageProgress:
    """One progress line per stage of a build (Create, Add, Remove, Refresh, Export), fed
    by its stream's events, and one line per kind of warning with its total: a build
    that warns about hundreds of conversations keeps its bars on the screen. `verbose`
    also prints each warning with its message."""

    def __init__(self, console: Console, verbose: bool = False) -> None:
        self.verbose = verbose
        self.warnings = WarningTally()
        self.progress = _WithWarnings(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description:<12}"),
            BarColumn(),
            _CountColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            warnings=self.warnings,
            console=console,
        )
        self._tasks: dict[int, TaskID] = {}
        self._current: int | None = None

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Started by the first event only: a rejected request leaves no empty display.
        if self._tasks:
            if exc_info[0] is None:
                self._finish_current()
            self.progress.stop()

    def _finish_current(self) -> None:
        if self._current is not None:
            task = self._tasks[self._current]
            total = self.progress.tasks[task].total or 1
            self.progress.update(task, total=total, completed=total)

    def update(self, event: service_pb2.TrainingFileProgress) -> None:
        if not self._tasks:
            self.progress.start()
        if event.stage != self._current:
            self._finish_current()
            self._current = event.stage
            self._tasks[event.stage] = self.progress.add_task(
                stage_name(event.stage),
                total=event.total or None,
                counted=bool(event.total),
                unit="pair" if event.stage == _RENDERING else "conv",
            )
        self.progress.update(
            self._tasks[event.stage], completed=event.done, total=event.total or None
        )
        for warning in event.warnings:
            self.warnings.add(warning)
            if self.verbose:
                named = f" ({', '.join(warning.conversation_ids)})"
                self.progress.console.print(
                    f"[yellow]warning[/] {escape(warning.code)}: {escape(warning.message)}"
                    + (escape(named) if warning.conversation_ids else "")
                )
        if event.warnings:
            self.progress.refresh()


def follow(
    output: Output,
    target: str,
    operation: tfc.TrainingFileOperation,
    ids: Sequence[str],
    describe: Callable[[resources_pb2.TrainingFile], str],
    on_cancel: Callable[[str | None], str],
    validate: Validate | None = None,
    hints: Mapping[str, str] | None = None,
    on_event: Callable[[service_pb2.TrainingFileProgress], object] | None = None,
) -> Exit:
    """Show a build's stream until its end; Ctrl-C cancels the call on the server.

    When the error's details list only the first violations (the server keeps them
    under gRPC's metadata limit), `validate` fetches every one to show. `hints` maps an
    error's reason to what to try next, printed after it. `on_event` sees each event
    as it arrives.
    """
    try:
        try:
            if output.json:
                for event in operation:
                    if on_event is not None:
                        on_event(event)
                    output.document(as_dict(event))
            else:
                with StageProgress(output.err, output.verbose) as view:
                    for event in operation:
                        if on_event is not None:
                            on_event(event)
                        view.update(event)
            training_file = operation.result()
        except KeyboardInterrupt:
            operation.cancel()
            file_id = operation.training_file_id
            message = f"interrupted: the call was cancelled on the server; {on_cancel(file_id)}"
            return fail(
                output, message, Exit.INTERRUPTED, status="CANCELLED", training_file_id=file_id
            )
    except tfc.TrainingFilesError as error:
        code = report_error(output, error, ids, target, every_violation(error, validate))
        if not output.json:
            hint = (hints or {}).get(error.reason)
            if hint:
                output.err.print(f"hint: {escape(hint)}", highlight=False)
            if operation.training_file_id:
                output.err.print(f"training file: {operation.training_file_id}", highlight=False)
        return code
    if not output.json:
        output.out.print(describe(training_file), highlight=False)
    return Exit.OK
