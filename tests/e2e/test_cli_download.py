"""The command's downloader against a real HTTP server on loopback (the object store's
part, played by the standard library's server): streamed, checked, never resumed."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from trainingfiles.v1 import service_pb2
from trainingfiles_client.cli import download
from trainingfiles_client.cli.exits import DownloadError

BODY = bytes(range(256)) * 8192  # 2 MiB: large enough for a progress bar


class _Object(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/expired":  # what an object store says to a stale presigned URL
            self.send_error(403, "Forbidden")
            return
        body = BODY[: int(self.path.strip("/") or len(BODY))]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def store() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Object)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def link(url: str, size: int) -> service_pb2.GetDownloadUrlResponse:
    return service_pb2.GetDownloadUrlResponse(url=url, size_bytes=size, file_name="f.jsonl")


def test_a_checked_download_replaces_any_leftover_part(store: str, tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    (tmp_path / "f.jsonl.part").write_bytes(b"left by an earlier run")
    fetched = download.save(link(f"{store}/", len(BODY)), path, None, 10)
    assert path.read_bytes() == BODY  # started over, not resumed
    assert (fetched.size, fetched.sha256) == (len(BODY), hashlib.sha256(BODY).hexdigest())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.jsonl"]


def test_a_short_download_is_not_kept(store: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="received 100 bytes, but the stored object has"):
        download.save(link(f"{store}/100", len(BODY)), tmp_path / "f.jsonl", None, 10)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DownloadError, match="HTTP 403 Forbidden"):
        download.stream(link(f"{store}/expired", 1), io.BytesIO(), lambda n: None, 10)
    with pytest.raises(DownloadError, match="download failed"):
        download.stream(link("http://127.0.0.1:1/", 1), io.BytesIO(), lambda n: None, 10)


def test_large_files_show_progress(store: str, tmp_path: Path) -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    download.save(link(f"{store}/", len(BODY)), tmp_path / "f.jsonl", console, 10)
    assert "f.jsonl" in screen.getvalue() and "MB" in screen.getvalue()
    small = io.StringIO()
    console = Console(file=small, force_terminal=True, width=100)
    download.save(link(f"{store}/1000", 1000), tmp_path / "g.jsonl", console, 10)
    assert small.getvalue() == ""  # over before a bar is worth drawing


def test_the_sha256_is_checked_once_the_service_reports_it(store: str) -> None:
    assert download.expected_sha256(link(f"{store}/", 1)) is None  # not in the contract yet
    digest = hashlib.sha256(BODY).hexdigest()
    reported = SimpleNamespace(
        DESCRIPTOR=SimpleNamespace(fields_by_name={"sha256": None}),
        url=f"{store}/",
        size_bytes=len(BODY),
        file_name="f.jsonl",
        sha256=digest.upper(),
    )
    assert download.stream(reported, io.BytesIO(), lambda n: None, 10).sha256 == digest  # type: ignore[arg-type]
    reported.sha256 = "0" * 64
    with pytest.raises(DownloadError, match="SHA-256"):
        download.stream(reported, io.BytesIO(), lambda n: None, 10)  # type: ignore[arg-type]
