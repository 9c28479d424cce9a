"""End to end in a real browser: `lmforge dashboard` on a free port, driven by headless Chromium (Debian's
`chromium`, which .ci/run installs) through Playwright with that executable (no browser download).

Opens every page and checks that no error or exception element shows, signs in as a reviewer, approves the
pending model and sees the production alias move. Screenshots of each step are saved under the test's
tmp folder (`<pytest basetemp>/.../screenshots/`, path printed) as artifacts. Without Chromium the test
fails, or skips with the reason under LMFORGE_TEST_ALLOW_SKIPS=1 (tests/services.py, the suite's rule)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from seeding import PASSWORD, REVIEWER, Platform
from services import missing_service

from lmforge_core.metadata import review_repository as reviews

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()),
                shutil.which("chromium"))
PAGES = {"": "Overview", "data_quality": "Data quality", "training": "Training", "evaluation": "Evaluation",
         "bias": "Bias and fairness", "review": "Review and registry", "audit": "Audit"}
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'

pytestmark = pytest.mark.slow


def _need_chromium() -> str:
    if CHROMIUM is None:
        missing_service("no Chromium found at /usr/bin/chromium (apt-get install chromium; .ci/run installs it)")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def backend_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ws' / 'metadata.db'}"


@pytest.fixture
def dashboard_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings of the dashboard process beyond the seeded store's (a test parametrizes it indirectly)."""
    return getattr(request, "param", {})


@pytest.fixture
def dashboard_url(seeded: Platform, dashboard_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """`lmforge dashboard --port P` as a person starts it, on the seeded store; stopped after the test."""
    port = _free_port()
    lmforge = Path(sys.executable).with_name("lmforge")
    command = [str(lmforge)] if lmforge.exists() else [sys.executable, "-m", "flows.cli"]
    env = os.environ | seeded.env | dashboard_env | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    log = (tmp_path / "dashboard.log").open("w")
    proc = subprocess.Popen([*command, "dashboard", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=tmp_path, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, tmp_path / "dashboard.log")
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=20)
        log.close()


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"lmforge dashboard exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"lmforge dashboard did not answer within 90 s: {log.read_text()[-2000:]}")


def _settled(page, title: str) -> None:  # type: ignore[no-untyped-def]
    """The page's title is shown and the script has finished running (no running-status widget)."""
    page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(1500)  # charts and data grids draw after the script's last message


def _visit(page, base: str, path: str, shots: Path) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/{path}")
    _settled(page, PAGES[path])
    page.screenshot(path=str(shots / f"{path or 'overview'}.png"), full_page=True)
    errors = page.locator(ERRORS)
    assert errors.count() == 0, f"{PAGES[path]}: {errors.all_inner_texts()}"


def test_every_page_then_sign_in_approve_and_production_moves(dashboard_url: str, tmp_path: Path) -> None:
    executable = _need_chromium()
    from playwright.sync_api import sync_playwright

    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"screenshots: {shots}")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for path in PAGES:
            _visit(page, dashboard_url, path, shots)
        page.goto(dashboard_url)
        assert "lmforge:v2" in _overview_production(page)

        page.goto(f"{dashboard_url}/review")
        _settled(page, PAGES["review"])
        sidebar = page.locator('[data-testid="stSidebar"]')
        sidebar.get_by_role("textbox", name="Reviewer").fill(REVIEWER)
        sidebar.get_by_role("textbox", name="Password").fill(PASSWORD)
        sidebar.get_by_role("button", name="Sign in").click()
        sidebar.get_by_text(f"Signed in as {REVIEWER}").wait_for(timeout=30_000)
        page.get_by_label("Comment").first.fill("probes fine, approved in the browser")
        page.get_by_role("button", name="Approve").first.click()
        page.get_by_role("button", name="Confirm").click()
        page.get_by_text("Production is now lmforge:v3 (was lmforge:v2)").wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "approved.png"), full_page=True)
        assert page.locator(ERRORS).count() == 0

        page.goto(dashboard_url)
        assert "lmforge:v3" in _overview_production(page)
        page.screenshot(path=str(shots / "overview_after.png"), full_page=True)
        _visit(page, dashboard_url, "audit", shots)
        assert page.get_by_text("review.approve").count() >= 1
        browser.close()
    assert len(list(shots.glob("*.png"))) == len(PAGES) + 2  # audit.png is retaken after the approval


def _overview_production(page) -> str:  # type: ignore[no-untyped-def]
    _settled(page, PAGES[""])
    return page.locator('[data-testid="stMetric"]').first.inner_text()


def _sign_in(page, base: str, name: str, password: str) -> str:  # type: ignore[no-untyped-def]
    """Sign in on the overview page; returns what the sidebar answered (the caption or the error)."""
    page.goto(base)
    _settled(page, PAGES[""])
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_role("textbox", name="Reviewer").fill(name)
    sidebar.get_by_role("textbox", name="Password").fill(password)
    sidebar.get_by_role("button", name="Sign in").click()
    answer = sidebar.get_by_text("Signed in as").or_(sidebar.locator('[data-testid="stAlertContentError"]'))
    answer.first.wait_for(timeout=30_000)
    return answer.first.inner_text()


LIMITS = {"LMFORGE_DASHBOARD__MAX_FAILED_LOGINS": "2", "LMFORGE_DASHBOARD__LOGIN_WINDOW_S": "600"}
PROXIED = LIMITS | {"LMFORGE_DASHBOARD__TRUSTED_PROXIES": '["127.0.0.1/32", "::1/128"]'}


@pytest.mark.parametrize("dashboard_env", [LIMITS], indirect=True)
def test_a_strangers_failed_logins_do_not_lock_out_a_reviewer(dashboard_url: str, seeded: Platform) -> None:
    """Two browsers on this host (Streamlit tells no address for either): the stranger's wrong logins under
    other names lock those names, never the reviewer's."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_need_chromium(), headless=True, args=["--no-sandbox"])
        stranger = browser.new_context().new_page()
        for name in ("mallory", "mallory", "admin", "admin"):
            assert "wrong password" in _sign_in(stranger, dashboard_url, name, "guess-guess-guess")
        assert "Too many failed logins" in _sign_in(stranger, dashboard_url, "mallory", "guess-guess-guess")
        reviewer = browser.new_context().new_page()
        assert _sign_in(reviewer, dashboard_url, REVIEWER, PASSWORD).startswith(f"Signed in as {REVIEWER}")
        browser.close()


@pytest.mark.parametrize("dashboard_env", [PROXIED], indirect=True)
def test_behind_the_proxy_logins_are_limited_per_forwarded_client(dashboard_url: str, seeded: Platform) -> None:
    """Behind a trusted proxy (here: this host, forwarding X-Forwarded-For), a stranger guessing the reviewer's
    own password locks out the stranger's address, not the reviewer's; a forged left part of the header
    does not move the stranger to another address."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_need_chromium(), headless=True, args=["--no-sandbox"])

        def client(forwarded: str):  # type: ignore[no-untyped-def]
            return browser.new_context(extra_http_headers={"X-Forwarded-For": forwarded}).new_page()

        stranger = client("203.0.113.7")
        for _ in range(2):
            assert "wrong password" in _sign_in(stranger, dashboard_url, REVIEWER, "guess-guess-guess")
        assert "Too many failed logins" in _sign_in(stranger, dashboard_url, REVIEWER, PASSWORD)
        forged = client("198.51.100.2, 203.0.113.7")  # the proxy appends what it saw: the real client is last
        assert "Too many failed logins" in _sign_in(forged, dashboard_url, "bob", "guess-guess-guess")
        reviewer = client("198.51.100.2")
        assert _sign_in(reviewer, dashboard_url, REVIEWER, PASSWORD).startswith(f"Signed in as {REVIEWER}")
        browser.close()
    with seeded.runtime.metadata.session() as session:
        events = [(e.action, e.details.get("client")) for e in reviews.audit_events(session)
                  if e.action.startswith("login")]
    assert events[0] == ("login", "198.51.100.2")
    assert {client for action, client in events[1:]} == {"203.0.113.7"}
