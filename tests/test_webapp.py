"""`medtune serve` in a real browser: Debian's chromium, driven by Playwright, on the tiny model and the real guard."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import a_task
from medtune.assistant import SAFETY_NOTE, Assistant
from medtune.modeling import load_causal_lm, load_tokenizer
from medtune.scope import OUT_OF_SCOPE_REPLY
from medtune.webapp import chat_app, launch, model_history, ner_app

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 60_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium: apt-get install chromium (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
        )
        yield browser
        browser.close()


@pytest.fixture()
def open_app(browser):
    """Serve an app, open it in a new tab; afterwards check that the page asked nothing of any other host."""
    apps, hosts = [], set()

    def open_(app):
        apps.append(app)
        url = launch(app, free_port())
        assert urlparse(url).hostname == "127.0.0.1" and not app.share
        page = browser.new_page()
        page.on("request", lambda request: hosts.add(urlparse(request.url).hostname))
        page.goto(url)
        return page

    yield open_
    for app in apps:
        app.close()
    assert hosts == {"127.0.0.1"}


def test_the_chat_page_answers_a_health_question_and_refuses_another(tiny_model_dir, authored_guard, open_app):
    task = a_task(system="You answer health questions.")
    task.generation.max_new_tokens = 8
    assistant = Assistant(load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir), task, authored_guard)
    page = open_app(chat_app(assistant, "medtune qa"))
    box = page.get_by_role("textbox").first
    bot = page.locator(".message-row.bot-row")  # the assistant's messages

    box.fill("What are the warning signs of a stroke?")
    box.press("Enter")
    bot.nth(0).get_by_text(SAFETY_NOTE).wait_for(timeout=TIMEOUT_MS)
    assert OUT_OF_SCOPE_REPLY not in bot.nth(0).inner_text()

    box.fill("What is the capital of France?")
    box.press("Enter")
    bot.nth(1).get_by_text(OUT_OF_SCOPE_REPLY).wait_for(timeout=TIMEOUT_MS)
    assert SAFETY_NOTE not in bot.nth(1).inner_text()


def test_the_model_sees_its_answers_but_not_refusals_or_safety_notes():
    task = a_task(prompt_template="Q: {prompt}")
    assistant = Assistant(None, None, task, guard=None)
    shown = [
        {"role": "user", "content": "Is 39 C a fever?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Yes, it is.\n\n" + SAFETY_NOTE}]},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": OUT_OF_SCOPE_REPLY},
    ]
    assert model_history(assistant, shown) == [
        {"role": "user", "content": "Q: Is 39 C a fever?"},
        {"role": "assistant", "content": "Yes, it is."},
    ]


class MarksAmoxicillin:
    """Stands in for the ner Predictor (tested in test_predict.py) so the page's rendering can be checked exactly."""

    def predict(self, texts: list[str], batch_size: int) -> list[dict]:
        start = texts[0].index("amoxicillin")
        return [{"entities": [{"type": "Medication", "start": start, "end": start + len("amoxicillin")}]}]


def test_the_ner_page_highlights_entities_with_their_type(open_app):
    page = open_app(ner_app(MarksAmoxicillin(), "medtune ner"))
    page.get_by_label("Clinical text").fill("Rash two days after starting amoxicillin.")
    page.get_by_role("button", name="Find entities").click()

    highlighted = page.locator(".token.highlighted")
    highlighted.wait_for(timeout=TIMEOUT_MS)
    assert highlighted.all_inner_texts() == ["amoxicillin"]
    assert page.get_by_test_id("highlighted-text:category-legend").inner_text() == "Medication"
    assert page.get_by_text(SAFETY_NOTE).is_visible()
