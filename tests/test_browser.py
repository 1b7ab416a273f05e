"""A real browser on the running dashboard: ask, wait for the answer, screenshot each page.

Headless Chromium from Debian's packages (installed here when missing, which
needs root and apt-get) is driven by Playwright. The screenshots land in the
test's temporary directory, or in ``$SCREENSHOTS_DIR``: ``./run screenshots``
sets it to ``docs/`` to renew the README's pictures, so the suite itself never
writes into the working tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from council.bus.transport.server import free_port

pytestmark = [pytest.mark.model, pytest.mark.browser]

EVAL_RESULTS = Path(__file__).parent.parent / "evals" / "results"
"""The saved report of the README's eval run, shown on the Eval page."""
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip


def find_or_install_chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium"], env=env, check=False, timeout=900
    )
    return shutil.which("chromium")


@contextmanager
def dashboard_in_chromium(chromium: str, env: dict[str, str], **page_options: Any) -> Iterator[Any]:
    """`council dashboard` as a process (with ``env``), and a Chromium page on it once
    it answers."""
    from playwright.sync_api import sync_playwright

    port = free_port()
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "council.cli", "dashboard", "--dashboard-port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page(**page_options)
            for _ in range(120):  # the dashboard process starting
                try:
                    page.goto(f"http://127.0.0.1:{port}")
                    break
                except Exception:  # noqa: BLE001 - not listening yet
                    time.sleep(0.5)
            try:
                yield page
            finally:
                browser.close()
    finally:
        dashboard.terminate()
        dashboard.wait(30)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_or_install_chromium()
    if path is None:
        pytest.skip("no Chromium, and it cannot be installed here (needs root and apt-get)")
    return path


@pytest.fixture(scope="module")
def dashboard_url(council_processes: dict[str, str]) -> Iterator[str]:
    """`council dashboard` as a real process on a free port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "council.cli", "dashboard", "--dashboard-port", str(port)],
        env={**council_processes, "COUNCIL_EVALS_DIR": str(EVAL_RESULTS)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    break
        except OSError:
            pass
        assert process.poll() is None, "council dashboard exited"
        assert time.monotonic() < deadline, "the dashboard did not answer in 60 s"
        time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(30)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    chosen = os.environ.get("SCREENSHOTS_DIR")
    folder = Path(chosen) if chosen else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_browser_asks_sees_the_answer_and_every_page(
    chromium: str, dashboard_url: str, shots: Path
) -> None:
    """In Chromium: a question and a follow-up on the Chat page, a question on the Ask
    page with its final answer, then every other page."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        direct = browser.new_page()  # a page opened by its own URL keeps the navigation
        direct.goto(f"{dashboard_url}/health")
        expect(direct.get_by_role("link", name="Responses")).to_be_visible(timeout=60_000)
        direct.close()
        page.goto(dashboard_url)  # the Chat page: a question, then a follow-up
        expect(page.get_by_text("Chat with the council")).to_be_visible(timeout=60_000)
        for number, said in enumerate(["Name a planet.", "And one of its moons?"], 1):
            box = page.get_by_placeholder("Ask the council")
            box.fill(said)
            box.press("Enter")
            expect(page.get_by_text("Deliberation")).to_have_count(number, timeout=240_000)
        expect(page.get_by_text("And one of its moons?", exact=True)).to_be_visible()
        page.wait_for_timeout(1500)
        page.screenshot(path=shots / "dashboard-chat.png", full_page=True)

        page.goto(f"{dashboard_url}/ask")
        expect(page.get_by_text("Ask the council")).to_be_visible(timeout=60_000)
        question = page.get_by_label("Question")
        question.fill("What is the largest planet in the solar system?")
        page.get_by_role("button", name="Ask").click()
        expect(page.get_by_text("Final answer", exact=True)).to_be_visible(timeout=240_000)
        expect(page.get_by_text("synthesis: 1/1")).to_be_visible()
        page.screenshot(path=shots / "dashboard-ask.png", full_page=True)

        for path, marker in [
            ("responses", "Scores: reviewer × reviewed"),
            ("kpis", "Per model"),
            ("history", "Open in Responses"),
            ("health", None),
            ("eval", "Accuracy per kind (%)"),
        ]:
            page.goto(f"{dashboard_url}/{path}")
            content = (
                page.get_by_text(marker, exact=True).first
                if marker
                else page.locator('[data-testid="stDataFrame"]').first
            )
            expect(content).to_be_visible(timeout=60_000)
            page.wait_for_timeout(1500)  # let charts and tables draw before the picture
            page.screenshot(path=shots / f"dashboard-{path}.png", full_page=True)

        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.goto(f"{dashboard_url}/responses")
        expect(phone.get_by_text("Scores: reviewer × reviewed")).to_be_visible(timeout=60_000)
        phone.wait_for_timeout(1500)
        phone.screenshot(path=shots / "dashboard-phone.png", full_page=True)
        browser.close()
    for name in ("chat", "ask", "responses", "kpis", "history", "health", "eval", "phone"):
        assert (shots / f"dashboard-{name}.png").stat().st_size > 10_000
