"""Every stream the service iterates is closed where it is iterated.

An async generator left at a `yield` (its consumer stopped: a call that ends while a
message is sent, a cancelled consumer) is not closed when its consumer goes; Python closes
it later, from the garbage collector, in a task of its own. A build's cleanup (aborting
its uploads, stopping its fetch workers) then runs after the file already shows FAILED.
So each `async for` in the server iterates a stream opened with `contextlib.aclosing`
(`async with contextlib.aclosing(x) as y:` or `async with contextlib.aclosing(x):`
around `async for … in x`), unless it iterates something that is not our generator
(below, with the reason). `e2e/test_failures.py::
test_a_create_closed_between_messages_is_clean_when_the_close_returns` shows the bug
this prevents.
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server" / "trainingfiles_server"

# (module, iterated expression): not an async generator of ours, nothing to close.
NOT_GENERATORS = {
    # aiohttp's chunk iterator: the response's `async with` releases the connection.
    ("storage.py", "response.content.iter_chunked(chunk_size)"),
    # The call's request stream: grpc owns it.
    ("interceptors.py", "requests"),
}


def _closed_names(node: ast.AsyncWith) -> set[str]:
    """What an `async with contextlib.aclosing(x) [as y]` closes: `x` (a name) and `y`."""
    names = set()
    for item in node.items:
        call = item.context_expr
        if not (isinstance(call, ast.Call) and ast.unparse(call.func) == "contextlib.aclosing"):
            continue
        if isinstance(call.args[0], ast.Name):
            names.add(call.args[0].id)
        if isinstance(item.optional_vars, ast.Name):
            names.add(item.optional_vars.id)
    return names


def _unclosed(tree: ast.AST, module: str) -> list[str]:
    found: list[str] = []

    def visit(node: ast.AST, closed: frozenset[str]) -> None:
        if isinstance(node, ast.AsyncWith):
            closed = closed | _closed_names(node)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            closed = frozenset()
        if isinstance(node, ast.AsyncFor):
            iterated = ast.unparse(node.iter)
            named = isinstance(node.iter, ast.Name) and node.iter.id in closed
            if not named and (module, iterated) not in NOT_GENERATORS:
                found.append(f"{module}:{node.lineno}: async for … in {iterated}")
        for child in ast.iter_child_nodes(node):
            visit(child, closed)

    visit(tree, frozenset())
    return found


def test_every_async_for_in_the_server_iterates_a_closed_stream() -> None:
    unclosed = [
        line
        for path in sorted(SERVER.rglob("*.py"))
        for line in _unclosed(ast.parse(path.read_text()), path.name)
    ]
    assert unclosed == []


def test_the_check_finds_an_unclosed_stream() -> None:
    """The check is not vacuous: a bare `async for` over a call is reported, a closed
    one is not, and a closing outside a nested function does not cover it."""
    source = """
async def relay(make):
    async for event in make():
        yield event
    events = make()
    async with contextlib.aclosing(events):
        async for event in events:
            yield event
    async with contextlib.aclosing(make()) as more:
        async def inner():
            async for event in more:
                yield event
"""
    assert _unclosed(ast.parse(source), "x.py") == [
        "x.py:3: async for … in make()",
        "x.py:11: async for … in more",
    ]
