"""The web console as a real process, and a real headless Chromium to drive it.

The console runs as `python -m trainingfiles_web` on a free port against the session's
gRPC server, and Playwright drives the operating system's Chromium (`/usr/bin/chromium`,
from Debian's `chromium` package; no browser is ever downloaded). Both are stopped when
the session ends, also when tests fail. Screenshots of each page go to
`.artifacts/console/` (git-ignored).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.conftest import mint

# `dataset`: the end-to-end suite's conversations (its owner's), a fixture here too.
from tests.e2e.conftest import OWNER, dataset  # noqa: F401
from trainingfiles_dev.embedded import free_port
from trainingfiles_server.app import RunningServer

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL = "apt-get install -y chromium chromium-driver"
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "console"
# Every wait of a browser test is bounded by this (milliseconds).
WAIT_MS = 20_000


@dataclass(frozen=True)
class Console:
    url: str
    process: subprocess.Popen[bytes]


def _wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the console exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/signin", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError("the console did not answer within 30 s")


@pytest.fixture(scope="session")
def console(server: RunningServer) -> Iterator[Console]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trainingfiles_web",
            "--target",
            f"127.0.0.1:{server.port}",
            "--port",
            str(port),
            "--development-sign-in",
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_serving(url, process)
        yield Console(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _require_chromium() -> None:
    """Skip without Chromium (saying how to install it); under CI, fail instead."""
    if not CHROMIUM.exists():
        message = f"Chromium is missing ({CHROMIUM}); as root: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the browser tests", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    _require_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=WAIT_MS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def context(browser: Browser, console: Console) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(
        base_url=console.url, accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(WAIT_MS)
    try:
        yield context
    finally:
        await context.close()


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


@pytest.fixture(scope="session")
def owner_token() -> str:
    """The e2e dataset's owner: the user the console's tests sign in as."""
    return mint("authenticated", OWNER)


async def sign_in(page: Page, token: str) -> None:
    await page.goto(f"/signin/link?token={token}")
    await page.wait_for_url("**/files")


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        data: bytes = response.read()
        return data


async def fetch_async(url: str) -> bytes:
    return await asyncio.to_thread(fetch, url)
