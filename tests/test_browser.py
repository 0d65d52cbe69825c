"""End to end in a real browser: ``mrvae serve`` on 127.0.0.1, the page in headless Chromium.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``scripts/setup.sh`` installs them
when run as root) and ``selenium``; skipped with the reason when any is missing. The screenshot
of an enhanced example goes to the test's temp folder, or to the path in ``MRVAE_SCREENSHOT``
(``scripts/screenshot_web.py`` makes ``docs/img/web_app.png`` that way);
``MRVAE_SCREENSHOT_MODEL`` serves other weights than the untrained test model.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dark_chelsea.jpg"
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")
# No network here: these flags stop Chromium from reaching out (updates, sync, field trials).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1000,1000"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: "
                       "apt-get install chromium chromium-driver (see docs/WEB.md)"),
    pytest.mark.skipif(not CHROMEDRIVER.exists(), reason="no chromedriver: "
                       "apt-get install chromium-driver (see docs/WEB.md)"),
]
selenium = pytest.importorskip("selenium", reason="pip install selenium (the browser extra)")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mrvae serve`` in a subprocess; yields its URL."""
    model = os.environ.get("MRVAE_SCREENSHOT_MODEL") or str(tiny_weights)
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "mrvae.apps.cli", "serve", "--model",
                                    model, "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"server exited: {log.read_text()}"
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"server did not start: {log.read_text()}"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def dark_photo(astronaut: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A darkened natural photo as a JPEG file."""
    dark = (255 * (astronaut / 255.0) ** 2.5 * 0.6).astype(np.uint8)
    big = Image.fromarray(dark).resize((384, 384), Image.Resampling.BICUBIC)
    path = tmp_path_factory.mktemp("upload") / "dark_astronaut.jpg"
    big.save(path, quality=92)
    return path


def test_page_enhances_an_upload_end_to_end(server: str, browser: webdriver.Chrome,
                                            dark_photo: Path, tmp_path: Path) -> None:
    wait = WebDriverWait(browser, 20)
    browser.get(server)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
    default = httpx.get(f"{server}/api/models").json()["default"]
    assert browser.find_element(By.ID, "model").get_attribute("value") == default
    assert "megapixels" in browser.find_element(By.ID, "limits").text

    browser.find_element(By.ID, "file").send_keys(str(dark_photo))
    wait.until(lambda d: d.execute_script(
        "const img = document.getElementById('after');"
        "return !document.getElementById('result').hidden && img.complete"
        " && img.naturalWidth > 0;"))
    after_size = browser.execute_script(
        "const img = document.getElementById('after'); return [img.naturalWidth, "
        "img.naturalHeight];")
    assert after_size == [384, 384]
    assert browser.find_element(By.ID, "status").text.startswith("Done in")
    download = browser.find_element(By.ID, "download")
    assert download.get_attribute("href").startswith("blob:")
    assert download.get_attribute("download") == "dark_astronaut_enhanced.jpg"
    assert browser.find_element(By.ID, "before").get_attribute("naturalWidth") == "384"

    # The comparison slider moves the split between before and after.
    browser.execute_script("const s = document.getElementById('split'); s.value = 30;"
                           "s.dispatchEvent(new Event('input'));")
    assert "30%" in browser.find_element(By.ID, "after").get_attribute("style")

    # A bad upload shows the server's message on the page.
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not really a png")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    wait.until(lambda d: "error" in d.find_element(By.ID, "status").get_attribute("class"))
    assert "broken.png" in browser.find_element(By.ID, "status").text


def wait_for_result(browser: webdriver.Chrome, previous: str | None = None) -> str:
    """Wait until the page shows a finished result other than ``previous``; its blob URL."""
    WebDriverWait(browser, 120).until(lambda d: d.execute_script(
        "const img = document.getElementById('after');"
        "return !document.getElementById('result').hidden && img.complete"
        " && img.naturalWidth > 0 && img.src !== arguments[0]"
        " && document.getElementById('status').textContent.startsWith('Done');", previous))
    return browser.find_element(By.ID, "after").get_attribute("src")


def shown_result(browser: webdriver.Chrome) -> np.ndarray:
    """The enhanced image the page holds (the download's bytes), decoded."""
    encoded = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(document.getElementById('download').href).then((r) => r.arrayBuffer())"
        ".then((buffer) => { let text = '';"
        " new Uint8Array(buffer).forEach((c) => { text += String.fromCharCode(c); });"
        " done(btoa(text)); });")
    return np.asarray(Image.open(BytesIO(base64.b64decode(encoded))).convert("RGB"))


def set_range(browser: webdriver.Chrome, element_id: str, value: float) -> None:
    """Move a range input as a user does: ``input`` while dragging, ``change`` on release."""
    browser.execute_script(
        "const s = document.getElementById(arguments[0]); s.value = arguments[1];"
        "s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change'));",
        element_id, str(value))


def test_exposure_slider_brightens_the_result(server: str, browser: webdriver.Chrome,
                                              dark_photo: Path) -> None:
    browser.get(server)
    WebDriverWait(browser, 20).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#model option[value='lite']"))
    # the shipped model: the untrained test model's DR does not follow the exposure
    browser.execute_script("document.getElementById('model').value = 'lite';")
    assert browser.find_element(By.ID, "exposure-value").text == "auto"
    browser.find_element(By.ID, "file").send_keys(str(dark_photo))
    auto_url = wait_for_result(browser)
    auto = shown_result(browser)

    set_range(browser, "exposure", 1)
    assert browser.find_element(By.ID, "exposure-value").text == "+1 EV"
    wait_for_result(browser, auto_url)
    brighter = shown_result(browser)
    assert brighter.shape == auto.shape
    assert brighter.mean() > auto.mean() + 5

    set_range(browser, "exposure", -1.5)
    assert browser.find_element(By.ID, "exposure-value").text == "-1.5 EV"


def test_screenshot_of_an_enhanced_example(server: str, browser: webdriver.Chrome,
                                           tmp_path: Path) -> None:
    browser.get(server)
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
    browser.find_element(By.ID, "file").send_keys(str(EXAMPLE))
    wait_for_result(browser)
    assert browser.find_element(By.ID, "status").text.startswith("Done in")
    shot = Image.open(BytesIO(browser.get_screenshot_as_png()))
    assert shot.size[0] > 0
    target = Path(os.environ.get("MRVAE_SCREENSHOT") or tmp_path / "web_app.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    shot.convert("RGB").quantize(256).save(target, optimize=True)  # palette PNG: small docs
