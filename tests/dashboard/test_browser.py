"""The dashboard in headless Chromium (Debian's ``chromium``, driven by Playwright) over a real
local store with real tasks: every page loads without a script or CSP error, a dead-lettered task
retried from the page completes after a burst worker (seen by the live refresh), a schedule is
paused from the page, ``<script>`` args render as text, and nothing is shown or done without the
token. Screenshots of the pages go to tests/dashboard/screenshots/ (git-ignored)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import FLAKY, SCREENSHOTS, SCRIPT_ARG, TOKEN, Served, backends, start

WAIT_MS = 30_000  # a margin no slow run crosses; the checks end as soon as the page shows it


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium (for the session: only this module uses it); the tests skip,
    saying why, without one. Module-scoped because Playwright's sync API marks an event loop
    running in this thread until it stops: asyncio.run and async tests after it would fail."""
    executable = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    if executable is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("dash-browser")
    s = start(*backends("local", tmp, tmp_path_factory), refresh=0.5)
    FLAKY["fail"] = True
    s.ids["flaky"] = s.app.enqueue("flaky", queue="flaky").id
    s.app.run_worker(queues=["flaky"], burst=True, scheduler=False)
    yield s
    s.stop()
    s.app.close()


@pytest.fixture(scope="module")
def tab(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    """One page for the module (a new one costs ~1 s) in a context that knows the token (basic
    auth), and the script errors it reported."""
    context = browser.new_context(
        http_credentials={"username": "ops", "password": TOKEN},
        viewport={"width": 1280, "height": 720},
    )
    context.set_default_timeout(WAIT_MS)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield p, errors
    context.close()


@pytest.fixture
def page(tab: tuple[Any, list[str]]) -> Iterator[Any]:
    """The module's page; the test fails on any script or CSP error it caused."""
    p, errors = tab
    errors.clear()
    yield p
    p.remove_listener("dialog", _answer_dialogs)
    assert errors == []


def _answer_dialogs(dialog: Any) -> None:
    """Accept each confirmation, or dismiss it when the page's ``DISMISS`` flag says so."""
    dialog.dismiss() if DISMISS["on"] else dialog.accept()


DISMISS = {"on": False}


def confirming(page: Any, accept: bool = True) -> None:
    DISMISS["on"] = not accept
    page.on("dialog", _answer_dialogs)


def shoot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_every_page_loads(page: Any, site: Served) -> None:
    for name, path in [
        ("queues", "/"),
        ("tasks", "/tasks"),
        ("task-failed", f"/tasks/{site.ids['dead']}"),
        ("schedules", "/schedules"),
        ("dead-letter", "/dead-letter"),
    ]:
        response = page.goto(site.url + path)
        assert response.status == 200, path
        assert page.locator("h1").count() == 1
        shoot(page, name)
    page.goto(site.url + "/")
    assert page.locator('tr[data-queue="default"] td').nth(4).inner_text() == "2"
    assert page.locator("svg.chart rect.completed").count() == 12


def test_retry_from_the_dead_letter_then_a_worker_completes_it(page: Any, site: Served) -> None:
    flaky = site.ids["flaky"]
    confirming(page)
    page.goto(f"{site.url}/dead-letter?queue=flaky")
    page.locator(f'tr[data-task="{flaky}"] button', has_text="Retry").click()
    page.locator(".flash", has_text=f"task {flaky} retried").wait_for()
    assert site.task(flaky).status.value == "pending"

    page.goto(f"{site.url}/tasks/{flaky}")
    page.locator(".state.pending").first.wait_for()
    FLAKY["fail"] = False
    site.app.run_worker(queues=["flaky"], burst=True, scheduler=False)
    # No reload: the page's live refresh shows the outcome.
    page.locator("h2", has_text="Result: success").wait_for()
    assert "fine now" in page.locator("pre.result").inner_text()
    assert int(page.evaluate("document.body.dataset.refreshed")) >= 1
    shoot(page, "task-retried")


def test_a_dismissed_confirmation_does_nothing(page: Any, site: Served) -> None:
    pending = site.ids["pending"]
    confirming(page, accept=False)
    page.goto(f"{site.url}/tasks?queue=idle")
    page.locator(f'tr[data-task="{pending}"] button', has_text="Cancel").click()
    page.wait_for_timeout(200)  # (a submitted form would navigate; none must)
    assert site.task(pending).status.value == "pending"


def test_pause_a_schedule(page: Any, site: Served) -> None:
    confirming(page)
    page.goto(f"{site.url}/schedules")
    row = page.locator('tr[data-schedule="hourly"]')
    row.locator("button", has_text="Pause").click()
    row.locator(".state.paused").wait_for()
    assert site.app.get_schedule("hourly").status.value == "paused"
    assert row.locator("button", has_text="Resume").count() == 1
    shoot(page, "schedules-paused")


def test_script_args_render_as_text(page: Any, site: Served) -> None:
    page.goto(f"{site.url}/tasks/{site.ids['script']}")
    assert SCRIPT_ARG in page.locator("pre.args").inner_text()
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main script").count() == 0


def test_refusals_without_the_token(browser: Any, site: Served) -> None:
    from playwright.sync_api import Error

    stranger = browser.new_context()
    try:
        p = stranger.new_page()
        statuses: list[int] = []
        p.on("response", lambda response: statuses.append(response.status))
        for path in ("/", "/api/queues", f"/tasks/{site.ids['dead']}"):
            # Headless Chromium cannot ask for the password: it ends the navigation instead.
            with pytest.raises(Error, match="ERR_INVALID_AUTH_CREDENTIALS"):
                p.goto(site.url + path)
        assert statuses == [401, 401, 401]
    finally:
        stranger.close()


def test_another_sites_form_cannot_act(page: Any, site: Served, tmp_path: Path) -> None:
    """Even with the token cached in the browser, a form on another page posts in vain."""
    page.goto(site.url + "/")  # the browser holds the credentials for the dashboard
    pending = site.ids["pending"]
    evil = tmp_path / "evil.html"
    evil.write_text(
        f'<form method="post" action="{site.url}/api/tasks/{pending}/cancel">'
        '<input name="csrf" value="guessed"><input name="next" value="/"></form>'
    )
    page.goto(evil.as_uri())
    with page.expect_response(lambda r: r.url.endswith("/cancel")) as answer:
        page.eval_on_selector("form", "form => form.submit()")
    assert answer.value.status == 403
    assert site.task(pending).status.value == "pending"
