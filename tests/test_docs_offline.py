"""The API's docs work without internet: Swagger UI and ReDoc come from bundled assets."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Route, expect, sync_playwright

from tests.servers import CHROMIUM, CHROMIUM_ARGS, api_server

TOKEN = "docs-" + uuid.uuid4().hex
LOOPBACK = {"127.0.0.1", "localhost"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_reference_no_other_host(anonymous: TestClient, page: str) -> None:
    html = anonymous.get(page).text
    assert not re.findall(r"(?:https?:)?//[\w.-]+", html.replace("window.location.origin", ""))
    for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert anonymous.get(asset).status_code == 200, asset


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with api_server(tmp_path_factory.mktemp("docs"), TOKEN) as url:
        yield url


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM}: apt install chromium")
def test_swagger_ui_renders_with_other_hosts_cut_off(api: str, tmp_path: Path) -> None:
    refused: list[str] = []

    def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:  # as a machine without internet: nothing but this server answers
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        context.route("**/*", loopback_only)
        page = context.new_page()
        page.goto(f"{api}/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("FaceGate", timeout=30_000)
        expect(page.locator(".opblock-summary-path", has_text="/recognize")).to_be_visible()
        page.screenshot(path=tmp_path / "docs.png")
        context.close()
    assert refused == []
