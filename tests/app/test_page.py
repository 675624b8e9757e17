"""The page at / in a real browser: Debian's chromium driven by Selenium (chromedriver) against a
real ``python -m app`` with the test checkpoints. Screenshots go to test-artifacts/browser/.

Skips, saying why, where chromium, chromedriver or selenium is missing (``make browser``
installs the first two; ``make install`` the third), unless ``DERMAFAKE_REQUIRE_BROWSER=1``
(.ci/run sets it): then a missing browser fails, so CI cannot pass without having run them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from tests.app.conftest import NPR_NAME, VGG_NAME, Checkpoints, image_bytes
from tests.app.test_server import REPO, serving


def unavailable(reason: str) -> NoReturn:
    """Skip (a user without a browser), or fail where the browser tests must run (CI)."""
    if os.environ.get("DERMAFAKE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"DERMAFAKE_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


try:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    unavailable("selenium is not installed: `make install` installs it")

SHOTS = REPO / "test-artifacts" / "browser"
WAIT_S = 120


def _executables() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        unavailable("no chromium/chromedriver here: `make browser` installs Debian's (needs apt)")
    return chromium, driver


# At collection: nothing (checkpoints, a server) is built for tests that cannot run.
CHROMIUM, CHROMEDRIVER = _executables()


@pytest.fixture(scope="module")
def base(checkpoints: Checkpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("page") / "server.log"
    with serving(checkpoints, log, DERMAFAKE_COMPILE="false") as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def script_errors(driver: webdriver.Chrome) -> list[str]:
    """Console errors from the page's own code (a refused upload's 4xx is logged by Chrome as
    a network entry; that is the page working, not failing)."""
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and e.get("source") != "network"
    ]


def wait(driver: webdriver.Chrome, condition, timeout: float = WAIT_S):
    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def test_check_generate_models_and_a_phone(
    browser: webdriver.Chrome, base: str, tmp_path: Path
) -> None:
    driver = browser
    driver.get(f"{base}/")
    assert driver.title == "dermafake"

    # Check: a photo-like image and one the server generated, chosen together.
    real = tmp_path / "photo.png"
    real.write_bytes(image_bytes("PNG", (160, 120), seed=21))
    generated = tmp_path / "generated.png"
    generated.write_bytes(
        httpx.get(f"{base}/generate", params={"seed": 5}, headers={"Accept": "image/png"}).content
    )
    driver.find_element(By.ID, "files").send_keys(f"{real}\n{generated}")
    cards = wait(
        driver,
        lambda d: (
            (c := d.find_elements(By.CSS_SELECTOR, "#results .card .result")) and len(c) == 2 and c
        ),
    )
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results canvas")) == 4)
    for path in (real, generated):
        api = httpx.post(f"{base}/detect", files={"file": (path.name, path.read_bytes())}).json()
        card = driver.find_element(By.CSS_SELECTOR, f'#results .card[data-file="{path.name}"]')
        expected = api["results"][0]
        assert card.find_element(By.CSS_SELECTOR, ".label").text == expected["label"]
        assert card.find_element(By.CSS_SELECTOR, ".result > .reason").text == expected["reason"]
        for score in expected["scores"]:
            block = f'.score[data-model="{score["model"]}"]'
            shown = card.find_element(By.CSS_SELECTOR, f"{block} .verdict")
            assert shown.text.startswith(score["verdict"])
            reason = card.find_element(By.CSS_SELECTOR, f"{block} .reason").text
            assert reason == score["reason"]
            assert f"{100 * score['probability_synthetic']:.1f}%" in shown.text
    assert {
        c.get_attribute("data-model") for c in cards[0].find_elements(By.CSS_SELECTOR, ".score")
    } == {
        NPR_NAME,
        VGG_NAME,
    }
    # The model's view is drawn (not a blank canvas) under the heatmap.
    spread = driver.execute_script(
        "const c = document.querySelector('#results .card[data-file=\"photo.png\"] canvas');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let lo = 255, hi = 0; for (let i = 0; i < d.length; i += 4) {"
        "lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); } return hi - lo;"
    )
    assert spread > 10
    driver.save_screenshot(str(SHOTS / "check.png"))

    # A refused upload says why, in words, with the server's reason.
    gif = tmp_path / "animation.gif"
    gif.write_bytes(image_bytes("GIF", seed=2))
    driver.find_element(By.ID, "files").send_keys(str(gif))
    error = wait(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, '.card[data-file="animation.gif"] .error-text'),
    )[0]
    assert "Not an image this service accepts" in error.text
    assert "not a supported image" in error.text

    # Generate, twice with the same seed: the same images.
    driver.find_element(By.ID, "tab-generate").click()
    n = driver.find_element(By.ID, "gen-n")
    n.clear()
    n.send_keys("2")
    driver.find_element(By.ID, "gen-seed").send_keys("7")

    def gallery(d: webdriver.Chrome) -> list[tuple[str, str]]:
        figures = d.find_elements(By.CSS_SELECTOR, "#gallery figure")
        return [
            (f.get_attribute("data-seed"), f.find_element(By.TAG_NAME, "img").get_attribute("src"))
            for f in figures
        ]

    driver.find_element(By.CSS_SELECTOR, "#generate-form button").click()
    first = wait(driver, lambda d: len(g := gallery(d)) == 2 and g)
    assert [seed for seed, _ in first] == ["7", "8"]
    driver.execute_script("document.getElementById('gallery').replaceChildren()")
    driver.find_element(By.CSS_SELECTOR, "#generate-form button").click()
    assert wait(driver, lambda d: len(g := gallery(d)) == 2 and g) == first
    driver.save_screenshot(str(SHOTS / "generate.png"))

    # Models, reached from the keyboard: arrow right from the Generate tab.
    driver.find_element(By.ID, "tab-generate").send_keys(Keys.ARROW_RIGHT)
    assert driver.find_element(By.ID, "tab-models").get_attribute("aria-selected") == "true"
    names = wait(
        driver,
        lambda d: len(m := d.find_elements(By.CSS_SELECTOR, "#models .card")) == 3 and m,
    )
    assert [m.get_attribute("data-model") for m in names] == [NPR_NAME, VGG_NAME, "generator"]
    generator_card = names[2].text
    if httpx.get(f"{base}/v1/models").json()["models"][2]["quality"] is not None:
        assert "lesion FD" in generator_card  # the generator's measured quality, shown

    # A phone: nothing wider than the screen on any view.
    driver.set_window_size(360, 800)
    for tab in ("check", "generate", "models"):
        driver.find_element(By.ID, f"tab-{tab}").click()
        wider = driver.execute_script(
            "const w = document.documentElement.clientWidth;"  # without the scrollbar
            "return Array.from(document.querySelectorAll('body *'))"
            ".filter(e => e.getBoundingClientRect().right > w + 0.5)"
            ".map(e => `${e.tagName}.${e.className} ${e.getBoundingClientRect().right}`)"
        )
        assert wider == [], (tab, wider)
        driver.save_screenshot(str(SHOTS / f"phone-{tab}.png"))
    assert script_errors(driver) == []


def test_the_api_key_field_is_used_and_kept_in_the_tab(
    browser: webdriver.Chrome, checkpoints: Checkpoints, tmp_path: Path
) -> None:
    with serving(
        checkpoints,
        tmp_path / "server.log",
        DERMAFAKE_COMPILE="false",
        DERMAFAKE_DETECTORS=NPR_NAME,
        DERMAFAKE_API_KEY="sesame",
    ) as base:
        driver = browser
        driver.set_window_size(1280, 1000)
        driver.get(f"{base}/")
        driver.find_element(By.ID, "tab-models").click()
        status = wait(
            driver, lambda d: "API key" in (t := d.find_element(By.ID, "models-status").text) and t
        )
        assert "needs an API key" in status
        driver.find_element(By.CSS_SELECTOR, "#key-box summary").click()
        driver.find_element(By.ID, "api-key").send_keys("sesame")
        driver.find_element(By.ID, "tab-check").click()
        driver.find_element(By.ID, "tab-models").click()
        wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#models .card")) == 2)
        assert (
            driver.execute_script("return sessionStorage.getItem('dermafake-api-key')") == "sesame"
        )
        assert script_errors(driver) == []
