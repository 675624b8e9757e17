"""The page without a browser: / is HTML, everything it references is served, nothing comes from
another host (the page must work offline), and the browser tests cannot pass CI by skipping."""

from __future__ import annotations

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from app.api.routes.page import STATIC
from app.main import create_app
from app.settings import Settings
from tests.app.conftest import TestClient
from tests.app.test_server import REPO


class References(HTMLParser):
    """Every href and src in a document, except in-page data: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value and not value.startswith("data:"):
                self.found.append(value)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    """The app without its lifespan: the page and its files need no models."""
    empty = tmp_path_factory.mktemp("no-artifacts")
    return TestClient(create_app(Settings(artifacts_dir=empty, device="cpu", compile=False)))


def test_the_page_and_every_file_it_references_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    parser = References()
    parser.feed(page.text)
    static = [ref for ref in parser.found if ref.startswith("static/")]
    assert {"static/app.css", "static/app.js"} <= set(static)
    for ref in parser.found:
        response = client.get(f"/{ref}")
        assert response.status_code == 200, ref
        assert response.content, ref
    assert (
        client.get("/static/app.js")
        .headers["content-type"]
        .startswith(("text/javascript", "application/javascript"))
    )


def test_no_static_file_fetches_anything_from_elsewhere(client: TestClient) -> None:
    files = sorted(p for p in STATIC.rglob("*") if p.is_file())
    assert files
    for path in files:
        served = client.get(f"/static/{path.relative_to(STATIC).as_posix()}")
        assert served.status_code == 200, path
        for scheme in ("http://", "https://"):
            assert scheme not in served.text, f"{path.name} names {scheme}"


def _page_tests_without_a_browser(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Collect and run tests/app/test_page.py with no chromium or chromedriver on PATH."""
    no_tools = tmp_path / "bin"
    no_tools.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k != "DERMAFAKE_REQUIRE_BROWSER"}
    args = ["-q", "-p", "no:cacheprovider", "-rs", "tests/app/test_page.py"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=REPO,
        env={**base, "PATH": str(no_tools), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_browser_tests_skip_for_users_and_fail_in_ci_without_a_browser(tmp_path: Path) -> None:
    user = _page_tests_without_a_browser(tmp_path)
    output = user.stdout + user.stderr
    # Skipped at collection: pytest's "no tests ran" (5), not a failure.
    assert user.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, output
    assert "1 skipped" in user.stdout, output
    assert "make browser" in user.stdout, output  # the reason says how to get one
    ci = _page_tests_without_a_browser(tmp_path, DERMAFAKE_REQUIRE_BROWSER="1")
    output = ci.stdout + ci.stderr
    assert ci.returncode == pytest.ExitCode.INTERRUPTED and "1 error" in ci.stdout, output
    assert "DERMAFAKE_REQUIRE_BROWSER=1 but no chromium/chromedriver" in ci.stdout, output
