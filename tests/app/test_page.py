"""The page at / in a real browser: Debian's chromium driven by Selenium (chromedriver) against a
real ``python -m app`` with the test checkpoints. Screenshots go to test-artifacts/browser/.

Skips, saying why, where chromium, chromedriver or selenium is missing (``make browser``
installs the first two; ``make install`` the third), unless ``DERMAFAKE_REQUIRE_BROWSER=1``
(.ci/run sets it): then a missing browser fails, so CI cannot pass without having run them."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from tests.app.conftest import NPR_METRICS, NPR_NAME, VGG_NAME, Checkpoints, image_bytes
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


def canvas_sum(driver: webdriver.Chrome, canvas: object) -> int:
    """The sum of a canvas's pixel values: equal when it shows the same picture."""
    return driver.execute_script(
        "const c = arguments[0]; const d = c.getContext('2d').getImageData(0, 0, c.width, "
        "c.height).data; let s = 0; for (let i = 0; i < d.length; i++) s += d[i]; return s;",
        canvas,
    )


def expected_caption(score: dict) -> tuple[str, float | None]:
    """What the page must say about a model's map, and how strongly it must draw it (None: only
    fainter than full): a map is normalised to its own maximum, so only the verdict and the
    emptiness flag say how much it means."""
    if score["explanation"]["empty"]:
        return "no localized evidence", 0.0
    if score["verdict"] == "synthetic":
        return "evidence for synthetic", 1.0
    if score["verdict"] == "real":
        return "weak: this model scores the image real", None
    return "uncertain", None


def requested_paths(driver: webdriver.Chrome, base: str) -> set[str]:
    """Every resource the page has fetched since it loaded, as paths on ``base`` (anything from
    another origin fails the test)."""
    names = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    paths = set()
    for name in names:
        url = urlsplit(name)
        assert f"{url.scheme}://{url.netloc}" == base, name
        paths.add(url.path)
    return paths


def test_check_generate_models_and_a_phone(
    browser: webdriver.Chrome, base: str, ham_dir: Path, tmp_path: Path
) -> None:
    driver = browser
    driver.get(f"{base}/")
    assert driver.title == "dermafake"

    # Check: a real dermoscopic photo and an image the server generated, chosen together.
    real = tmp_path / "photo.jpg"
    real.write_bytes(sorted(ham_dir.rglob("ISIC_*.jpg"))[0].read_bytes())
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
    maps = []
    for path in (real, generated):
        api = httpx.post(
            f"{base}/detect",
            params={"explain": "true"},
            files={"file": (path.name, path.read_bytes())},
            timeout=WAIT_S,
        ).json()
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
            # The map is drawn as strongly as the model believes it, and captioned in words.
            canvas = card.find_element(By.CSS_SELECTOR, f"{block} canvas")
            caption = card.find_element(By.CSS_SELECTOR, f"{block} figcaption .evidence").text
            words, strength = expected_caption(score)
            assert caption.startswith(words), (caption, score)
            shown_strength = float(canvas.get_attribute("data-strength"))
            if strength is None:
                assert 0 < shown_strength < 1, score
            else:
                assert shown_strength == strength, score
            maps.append((card, canvas, score["explanation"]))
    assert any(not e["empty"] for _, _, e in maps), "every served map was empty"
    # Verdicts the test models may not give these two images, through the page's own function.
    for verdict, p, empty in [("real", 0.05, False), ("inconclusive", 0.5, False)]:
        score = {"verdict": verdict, "probability_synthetic": p, "threshold": 0.7}
        score["explanation"] = {"empty": empty}
        shown = driver.execute_script("return evidence(arguments[0])", score)
        words, _ = expected_caption(score)
        assert shown["caption"].startswith(words) and 0 < shown["strength"] < 1, shown
    faint = {"verdict": "real", "probability_synthetic": 0.01, "threshold": 0.7}
    fainter = driver.execute_script(
        "return [evidence(arguments[0]).strength, evidence(arguments[1]).strength]",
        {**faint, "explanation": {"empty": False}},
        {**faint, "probability_synthetic": 0.3, "explanation": {"empty": False}},
    )
    assert fainter[0] < fainter[1]  # weaker score, fainter map
    assert {
        c.get_attribute("data-model") for c in cards[0].find_elements(By.CSS_SELECTOR, ".score")
    } == {
        NPR_NAME,
        VGG_NAME,
    }
    # The model's view is drawn (not a blank canvas) under the heatmap.
    spread = driver.execute_script(
        "const c = document.querySelector('#results .card[data-file=\"photo.jpg\"] canvas');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let lo = 255, hi = 0; for (let i = 0; i < d.length; i += 4) {"
        "lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); } return hi - lo;"
    )
    assert spread > 10
    # The thumbnails' object URLs are released once drawn (the files are not kept in memory).
    thumbs = driver.find_elements(By.CSS_SELECTOR, "#results .card img.thumb")
    assert all(t.get_attribute("src").startswith("blob:") for t in thumbs)
    assert all(driver.execute_script("return arguments[0].complete", t) for t in thumbs)
    released = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all(Array.from(arguments[0], (t) => fetch(t.src).then(() => false, () => true)))"
        ".then(done);",
        thumbs,
    )
    assert released == [True, True]
    # The heatmap toggle takes a (non-empty) map off the picture and puts it back.
    card, canvas, _ = next(m for m in maps if not m[2]["empty"])
    with_heat = canvas_sum(driver, canvas)
    card.find_element(By.CSS_SELECTOR, ".heat-toggle").click()
    without = wait(driver, lambda d: (s := canvas_sum(d, canvas)) != with_heat and s)
    card.find_element(By.CSS_SELECTOR, ".heat-toggle").click()
    wait(driver, lambda d: canvas_sum(d, canvas) == with_heat)
    assert without != with_heat
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

    schema = httpx.get(f"{base}/openapi.json").json()
    params = schema["paths"]["/generate"]["get"]["parameters"]
    limit = next(p for p in params if p["name"] == "n")["schema"]["maximum"]
    assert n.get_attribute("max") == str(limit)  # the server's own limit

    driver.find_element(By.CSS_SELECTOR, "#generate-form button").click()
    first = wait(driver, lambda d: len(g := gallery(d)) == 2 and g)
    assert [seed for seed, _ in first] == ["7", "8"]
    for link in driver.find_elements(By.CSS_SELECTOR, "#gallery figure a"):
        seed = link.find_element(By.XPATH, "ancestor::figure").get_attribute("data-seed")
        assert link.get_attribute("download") == f"lesion-{seed}.png"
        assert link.get_attribute("href").startswith("data:image/png;base64,")
    driver.execute_script("document.getElementById('gallery').replaceChildren()")
    driver.find_element(By.CSS_SELECTOR, "#generate-form button").click()
    assert wait(driver, lambda d: len(g := gallery(d)) == 2 and g) == first
    # "Again with seed 7" with the seed field emptied: the button brings the seed back.
    driver.find_element(By.ID, "gen-seed").clear()
    driver.execute_script("document.getElementById('gallery').replaceChildren()")
    again = driver.find_element(By.CSS_SELECTOR, "#generate-status button")
    assert again.text == "Again with seed 7"
    again.click()
    assert wait(driver, lambda d: len(g := gallery(d)) == 2 and g) == first
    assert driver.find_element(By.ID, "gen-seed").get_attribute("value") == "7"
    driver.save_screenshot(str(SHOTS / "generate.png"))

    # Models, reached from the keyboard: arrow right from the Generate tab.
    driver.find_element(By.ID, "tab-generate").send_keys(Keys.ARROW_RIGHT)
    assert driver.find_element(By.ID, "tab-models").get_attribute("aria-selected") == "true"
    names = wait(
        driver,
        lambda d: len(m := d.find_elements(By.CSS_SELECTOR, "#models .card")) == 3 and m,
    )
    assert [m.get_attribute("data-model") for m in names] == [NPR_NAME, VGG_NAME, "generator"]
    npr_card = names[0].text
    assert f"validation ROC-AUC\n{NPR_METRICS['validation']['roc_auc']:.3f}" in npr_card
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

    # Everything the page fetched is the public API (paths in its OpenAPI schema, and the
    # schema itself, read for the server's limits) or the page's own files.
    public = set(schema["paths"]) | {"/", "/openapi.json"}
    paths = requested_paths(driver, base)
    assert {"/detect", "/generate", "/v1/models", "/static/app.js"} <= paths
    assert {p for p in paths if p not in public and not p.startswith("/static/")} == set()


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


def test_limits_are_explained_on_the_page(
    browser: webdriver.Chrome, checkpoints: Checkpoints, tmp_path: Path
) -> None:
    """A server with tiny limits: an upload over the byte limit (413), one over the pixel limit
    (422) and one past the rate limit (429, with the server's Retry-After), chosen together and
    sent one after another, each answered on its card in words."""
    limit_bytes, limit_pixels = 20_000, 10_000
    with serving(
        checkpoints,
        tmp_path / "server.log",
        DERMAFAKE_COMPILE="false",
        DERMAFAKE_DETECTORS=NPR_NAME,
        DERMAFAKE_MAX_UPLOAD_BYTES=str(limit_bytes),
        DERMAFAKE_MAX_PIXELS=str(limit_pixels),
        DERMAFAKE_RATE_LIMIT_PER_S="0.01",  # a token every 100 s: the third upload waits
        DERMAFAKE_RATE_LIMIT_BURST="2",
        DERMAFAKE_MAX_GENERATE_N="3",
    ) as base:
        driver = browser
        driver.set_window_size(1280, 1000)
        driver.get(f"{base}/")
        big = tmp_path / "big.png"
        big.write_bytes(image_bytes("PNG", (200, 150), seed=4))  # noise: ~90 kB
        wide = tmp_path / "wide.png"
        wide.write_bytes(_flat_png(160, 120))
        third = tmp_path / "third.png"
        third.write_bytes(_flat_png(40, 30))
        assert len(big.read_bytes()) > limit_bytes > len(wide.read_bytes())
        driver.find_element(By.ID, "files").send_keys(f"{big}\n{wide}\n{third}")

        def message(name: str) -> str:
            selector = f'.card[data-file="{name}"] .error-text'
            return wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, selector))[0].text

        too_large = message("big.png")
        assert too_large.startswith("Too large for this server.")
        assert f"limit is {limit_bytes} bytes" in too_large
        too_many_pixels = message("wide.png")
        assert too_many_pixels.startswith("The server could not use this input.")
        assert f"limit {limit_pixels}" in too_many_pixels
        rate_limited = message("third.png")
        assert rate_limited.startswith("Too many requests from you just now. Try again in ")
        retry = int(rate_limited.split("Try again in ")[1].split(" s.")[0])
        assert 1 <= retry <= 100  # the server's Retry-After: a token every 100 s
        assert "rate limit exceeded" in rate_limited
        driver.save_screenshot(str(SHOTS / "limits.png"))

        driver.find_element(By.ID, "tab-generate").click()
        assert driver.find_element(By.ID, "gen-n").get_attribute("max") == "3"
        assert script_errors(driver) == []


def _flat_png(width: int, height: int) -> bytes:
    """One colour: many pixels in a few hundred bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (180, 120, 110)).save(buffer, format="PNG")
    return buffer.getvalue()
