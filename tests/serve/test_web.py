"""The chat page in a real headless browser: Debian's chromium driven by Playwright for Python.

`playwright install` cannot download browsers here, so the system chromium is launched directly.
CI installs it (.ci/run); without it this test FAILS on purpose -- a skipped browser test would let a
broken page through unnoticed.
"""

from __future__ import annotations

import os

import pytest
from serving import Knobs, ThreadServer

from lmforge import runs
from lmforge.serve.app import ServeConfig, create_app

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def server(chat_run):
    loaded = runs.load_run(chat_run)
    knobs = Knobs(loaded.model)
    knobs.delay = 0.01  # slow enough that the answer visibly arrives in several pieces
    srv = ThreadServer(create_app(loaded, ServeConfig(max_tokens_cap=64)))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


def test_typing_a_message_streams_an_answer(server, browser):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.wait_for_function("document.getElementById('model').textContent === 'tiny-chat'")
    page.fill("#max_tokens", "40")
    page.fill("#seed", "1")  # a fixed draw: the same answer every run
    page.fill("#input", "say to")
    page.press("#input", "Enter")
    page.wait_for_selector(".msg.user")
    assert page.inner_text(".msg.user") == "say to"
    answer = page.locator(".msg.assistant").first
    # Streaming: the page counts the pieces it received and showed (data-chunks); more than one means
    # the answer appeared while it was still being generated. (Waiting for the transient "still
    # generating" state instead races the generation, and was flaky on a busy machine.)
    page.wait_for_function("document.querySelector('.msg.assistant').dataset.done === 'true'", timeout=60_000)
    assert int(answer.get_attribute("data-chunks")) > 1
    assert answer.inner_text().strip() and "error" not in (answer.get_attribute("class") or "")
    assert "pieces in" in page.inner_text("#status")
    assert not errors
    page.close()
