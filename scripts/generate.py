"""Generate the Python protobuf and gRPC code from ``protos/`` into ``clients/python/src``.

Usage::

    python scripts/generate.py          # regenerate clients/python/src/trainingfiles/
    python scripts/generate.py --check  # exit 1, listing the files, if that is out of date

Every ``*.proto`` file under ``protos/`` is compiled with ``python -m grpc_tools.protoc``
into ``<module>_pb2.py`` with its ``.pyi`` stub (mypy-protobuf), and every file that
declares a service also into ``<module>_pb2_grpc.py`` with its ``.pyi`` stub, typed for
``grpc.aio`` (the runtime module itself works with sync channels too). All of them,
with their imports and their comments (source info), also go into one descriptor set,
``trainingfiles/v1/descriptor_set.binpb``: the server's reflection serves it, so that
``grpcurl describe`` prints the contract's documentation. The script
then adds an ``__init__.py`` to each generated package and a ``py.typed`` marker, so that
``trainingfiles.v1.service_pb2`` and friends import from the client distribution.

The whole ``clients/python/src/trainingfiles/`` tree belongs to this script: regenerating
rewrites the files that changed and deletes any it would not produce. The output depends
only on the protos and the tool versions pinned in ``requirements.lock``, so it is the same
bytes on every run; ``--check`` relies on that.

Run it with the virtual environment's interpreter: the mypy-protobuf plugins are looked up
next to ``sys.executable``. Only the standard library and ``grpc_tools`` are used.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_ROOT = ROOT / "clients" / "python" / "src"
# The top-level package the protos generate into; the script owns everything beneath it.
PACKAGE = "trainingfiles"

INIT_TEXT = '"""Generated from protos/ by scripts/generate.py; do not edit."""\n'
PY_TYPED = "py.typed"
# Bytecode caches are the interpreter's, not the generator's: never compared or deleted.
IGNORED_DIR = "__pycache__"

# The contract as a FileDescriptorSet with source info, for reflection (see the docstring).
DESCRIPTOR_SET = f"{PACKAGE}/v1/descriptor_set.binpb"

# A top-level `service Foo {` declaration; only such files get *_pb2_grpc modules (protoc
# would otherwise write an empty one for every file).
_SERVICE = re.compile(r"^service\s+\w+\s*\{", re.MULTILINE)


class GenerationError(Exception):
    """protoc failed, a tool is missing, or the protos generate outside ``PACKAGE``."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate the Python protobuf and gRPC code from protos/."
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="generate into a temporary directory and fail if the committed files differ",
    )
    args = parser.parse_args(argv)
    target = OUT_ROOT / PACKAGE
    try:
        with tempfile.TemporaryDirectory(prefix="generate-") as tmp:
            generate(Path(tmp))
            fresh = read_tree(Path(tmp) / PACKAGE)
    except GenerationError as exc:
        print(f"generate.py: {exc}", file=sys.stderr)
        return 2
    current = read_tree(target)
    if args.check:
        return report(fresh, current, target)
    sync(fresh, current, target)
    return 0


def generate(out: Path) -> None:
    """Compile every proto under ``PROTO_ROOT`` into the empty directory ``out``."""
    protos = sorted(path.relative_to(PROTO_ROOT).as_posix() for path in PROTO_ROOT.rglob("*.proto"))
    if not protos:
        raise GenerationError(f"no .proto files under {PROTO_ROOT}")
    services = [name for name in protos if _SERVICE.search((PROTO_ROOT / name).read_text("utf-8"))]
    bin_dir = Path(sys.executable).parent
    mypy_plugin = _tool(bin_dir / "protoc-gen-mypy")
    mypy_grpc_plugin = _tool(bin_dir / "protoc-gen-mypy_grpc")

    _protoc(
        f"--plugin=protoc-gen-mypy={mypy_plugin}",
        f"--python_out={out}",
        f"--mypy_out=quiet:{out}",
        *protos,
    )
    if services:
        _protoc(
            f"--plugin=protoc-gen-mypy_grpc={mypy_grpc_plugin}",
            f"--grpc_python_out={out}",
            # The service and its clients are grpc.aio only: typing the stubs for aio alone
            # makes a servicer's `async def` methods and an aio channel's stub check exactly
            # (the sync-and-async stubs need grpc's own stubs to type-check at all).
            f"--mypy_grpc_out=quiet,only_async:{out}",
            *services,
        )

    (out / DESCRIPTOR_SET).parent.mkdir(parents=True, exist_ok=True)
    _protoc(
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={out / DESCRIPTOR_SET}",
        *protos,
    )

    package_root = out / PACKAGE
    stray = sorted(p.name for p in out.iterdir() if p != package_root)
    if stray or not package_root.is_dir():
        raise GenerationError(f"protos must all be in package {PACKAGE}.*; also got {stray}")
    (package_root / PY_TYPED).write_bytes(b"")
    for directory in sorted({p.parent for p in package_root.rglob("*.py")} | {package_root}):
        # Each generated directory and every directory between it and the package root.
        while True:
            init = directory / "__init__.py"
            if not init.exists():
                init.write_bytes(INIT_TEXT.encode())
            if directory == package_root:
                break
            directory = directory.parent


def _protoc(*args: str) -> None:
    well_known = _well_known_types()
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "--proto_path=.",
        f"--proto_path={well_known}",
        *args,
    ]
    result = subprocess.run(command, cwd=PROTO_ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise GenerationError(f"protoc exited with {result.returncode}:\n{result.stderr}")
    if result.stderr:
        # protoc warnings (unused imports and the like): show them, they are worth fixing.
        print(result.stderr, end="", file=sys.stderr)


def _well_known_types() -> Path:
    """The ``google/protobuf/*.proto`` files bundled with grpc_tools."""
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or not spec.submodule_search_locations:
        raise GenerationError("grpc_tools is not installed; run `make venv`")
    return Path(next(iter(spec.submodule_search_locations))) / "_proto"


def _tool(path: Path) -> Path:
    if not path.is_file():
        raise GenerationError(f"{path} not found; run this script with the venv's python")
    return path


def read_tree(root: Path) -> dict[str, bytes]:
    """Map each file under ``root`` (relative POSIX path) to its bytes; {} if no ``root``."""
    if not root.is_dir():
        return {}
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and IGNORED_DIR not in path.relative_to(root).parts
    }


def report(fresh: dict[str, bytes], current: dict[str, bytes], target: Path) -> int:
    """Print how ``current`` differs from ``fresh``; return the exit status."""
    problems = []
    for name in sorted(fresh.keys() | current.keys()):
        if name not in current:
            problems.append(f"missing   {_display(target / name)}")
        elif name not in fresh:
            problems.append(f"extra     {_display(target / name)}")
        elif fresh[name] != current[name]:
            problems.append(f"differs   {_display(target / name)}")
    if not problems:
        print(f"{_display(target)} is up to date with protos/")
        return 0
    print(
        f"{_display(target)} is out of date with protos/; run `make generate`:",
        *problems,
        sep="\n  ",
        file=sys.stderr,
    )
    return 1


def sync(fresh: dict[str, bytes], current: dict[str, bytes], target: Path) -> None:
    """Make ``target`` hold exactly ``fresh``, touching only the files that change."""
    for name, content in sorted(fresh.items()):
        if current.get(name) != content:
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            print(f"wrote     {_display(path)}")
    for name in sorted(current.keys() - fresh.keys()):
        path = target / name
        path.unlink()
        print(f"deleted   {_display(path)}")
    # Directories left empty by deletions, deepest first.
    for directory in sorted((p for p in target.rglob("*") if p.is_dir()), reverse=True):
        if directory.name != IGNORED_DIR and not any(directory.iterdir()):
            directory.rmdir()


def _display(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


if __name__ == "__main__":
    sys.exit(main())
