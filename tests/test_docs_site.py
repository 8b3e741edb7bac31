"""The documentation site (mkdocs.yml, docs/): it builds with --strict, loads nothing from another host
(checked in its HTML, and in headless Chromium with every non-loopback request blocked), its search
works offline, and its configuration page lists every setting of `Settings`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route, expect, sync_playwright

from facegate.config import Settings
from tests.data import REPO
from tests.servers import CHROMIUM, CHROMIUM_ARGS

LOOPBACK = {"127.0.0.1", "localhost", "[::1]"}
# What a page asks for at view time: scripts, styles, images, fonts, frames (not <a href> links).
LOADED = re.compile(
    r"""<(?:script|img|iframe|source)\b[^>]*\bsrc=["']([^"']+)|<link\b[^>]*\bhref=["']([^"']+)"""
)
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(target)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return target


def pages(site: Path) -> list[Path]:
    return sorted(site.rglob("index.html"))


def test_every_docs_page_is_in_the_site(site: Path) -> None:
    built = {page.parent.relative_to(site).as_posix() for page in pages(site)}
    written = {"." if p.stem == "index" else p.stem for p in (REPO / "docs").glob("*.md")}
    assert written <= built


def test_the_html_loads_nothing_from_another_host(site: Path) -> None:
    external = {
        (page.relative_to(site).as_posix(), url)
        for page in pages(site)
        for url in (src or href for src, href in LOADED.findall(page.read_text()))
        if urlsplit(url).netloc and urlsplit(url).hostname not in LOOPBACK
    }
    assert external == set()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # a line per request is noise here
        pass


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    handler = partial(QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser_page(served: str) -> Iterator[tuple[Page, list[str]]]:
    """Headless Chromium (Debian's) on the served site; every request to another host is aborted
    and recorded."""
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt install chromium")
    blocked: list[str] = []

    def only_loopback(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).scheme in ("http", "https", "ws", "wss") and urlsplit(url).hostname not in LOOPBACK:
            blocked.append(url)
            route.abort()
        else:
            route.continue_()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context()
        context.route("**/*", only_loopback)
        context.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        page = context.new_page()
        yield page, blocked
        browser.close()


def test_every_page_renders_with_only_loopback(
    site: Path, served: str, browser_page: tuple[Page, list[str]]
) -> None:
    page, blocked = browser_page
    for built in pages(site):
        path = built.parent.relative_to(site).as_posix()
        page.goto(f"{served}/{'' if path == '.' else path + '/'}", wait_until="networkidle")
        expect(page.locator("article h1").first).to_be_visible()
        # The theme's own script ran (it draws the navigation's state and the search box).
        expect(page.locator("[data-md-component='search']").first).to_be_attached()
    assert blocked == []


def test_search_answers_offline(served: str, browser_page: tuple[Page, list[str]]) -> None:
    page, blocked = browser_page
    page.goto(served + "/", wait_until="networkidle")
    page.locator("input.md-search__input").press_sequentially("calibration", delay=50)  # the header's box
    expect(page.locator(".md-search-result__item").first).to_be_visible()
    assert blocked == []


def test_the_configuration_page_lists_every_setting(
    served: str, browser_page: tuple[Page, list[str]]
) -> None:
    page, _ = browser_page
    page.goto(served + "/configuration/", wait_until="networkidle")
    rows = page.locator("article table tbody tr")
    listed = rows.locator("td:first-child code").all_inner_texts()
    assert listed == [name.upper() for name in Settings.model_fields]
    for row, field in zip(rows.all(), Settings.model_fields.values(), strict=True):
        # Each setting's row carries its description (markdown rendered: compare the plain words).
        assert re.sub(r"[`*]", "", field.description or "")[:40] in row.inner_text()


def test_readme_is_short_and_its_links_lead_somewhere() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "\n./test.sh" in text  # the test command, exactly
    targets = [t for t in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text) if not urlsplit(t).scheme]
    assert "docs/configuration.md" in targets
    assert [t for t in targets if not (REPO / t).exists()] == []
