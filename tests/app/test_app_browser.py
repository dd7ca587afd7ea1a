"""refrain-app in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

Starts the real console script on 127.0.0.1, fills text2music, generates, waits for the player,
downloads the audio and checks it against its sidecar, then repaints that song from the history.
A screenshot of each tab is saved in the test's output folder. Skipped, saying why, without a browser.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf
from helpers.network import free_port

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER),
        reason="no browser: apt-get install chromium chromium-driver (make test does)",
    ),
]


def browser():  # noqa: ANN201 - selenium's type
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,2400",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def wait_for(condition, timeout: float = 120.0, what: str = "", log: Path | None = None) -> object:  # noqa: ANN001
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = condition()
        except Exception:  # noqa: BLE001 - the page is still changing
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}" + (f": {log.read_text()[-3000:]}" if log else ""))


def type_into(driver, elem_id: str, text: str) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    selector = f"#{elem_id} textarea, #{elem_id} input"
    field = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, selector), 60, f"the field {elem_id}")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(text)
    field.send_keys(Keys.TAB)


def open_tab(driver, name: str) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    tab = next(
        b for b in driver.find_elements(By.CSS_SELECTOR, "button[role='tab']") if b.text.strip() == name
    )
    tab.click()
    time.sleep(0.5)


def test_generate_download_and_repaint_in_chromium(app_world: dict[str, Path], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    port, songs = free_port(), tmp_path / "songs"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "refrain.cli.app",
            "--bundle",
            str(app_world["bundle"]),
            "--lora",
            str(app_world["stem"]),
            "--port",
            str(port),
            "--output_dir",
            str(songs),
        ],
        stdout=(tmp_path / "server.log").open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    driver = None
    try:
        served = lambda: server.poll() is None and urllib.request.urlopen(url, timeout=2).status == 200  # noqa: E731
        wait_for(served, 120, "refrain-app to serve", tmp_path / "server.log")
        driver = browser()
        driver.get(url)
        wait_for(lambda: driver.find_elements(By.ID, "run-text2music"), 60, "the page")
        for name in ("text2music", "retake", "repaint", "edit", "extend", "audio2audio", "stem", "accompany"):
            open_tab(driver, name)
            driver.save_screenshot(str(tmp_path / f"tab_{name}.png"))
        open_tab(driver, "text2music")
        driver.find_element(By.CSS_SELECTOR, "#sampler button, #sampler .label-wrap").click()
        type_into(driver, "opt-steps", "3")
        type_into(driver, "opt-seed", "5")
        type_into(driver, "text2music-prompt", "acoustic, calm")
        type_into(driver, "text2music-duration", "1")
        driver.find_element(By.ID, "run-text2music").click()
        status = lambda: driver.find_element(By.CSS_SELECTOR, "#status textarea").get_attribute("value")  # noqa: E731
        wait_for(lambda: "text2music" in status(), 180, "the text2music result")
        wait_for(
            lambda: driver.find_elements(By.CSS_SELECTOR, "#result-audio audio, #result-audio button"),
            30,
            "the player",
        )
        driver.save_screenshot(str(tmp_path / "result_text2music.png"))
        links = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#downloads a")]
        audio_url = next(h for h in links if h and ".flac" in h)
        sidecar_url = next(h for h in links if h and ".json" in h)
        (tmp_path / "song.flac").write_bytes(urllib.request.urlopen(audio_url, timeout=10).read())
        sidecar = json.loads(urllib.request.urlopen(sidecar_url, timeout=10).read())
        samples, rate = sf.read(tmp_path / "song.flac")
        assert rate == 16000 and samples.shape[0] == round(rate * sidecar["params"]["duration"])
        assert sidecar["params"]["prompt"] == "acoustic, calm" and sidecar["options"]["steps"] == 3
        assert sidecar["options"]["seed"] == 5

        open_tab(driver, "repaint")
        type_into(driver, "repaint-start", "0.2")
        type_into(driver, "repaint-end", "0.6")
        type_into(driver, "repaint-prompt", "acoustic, calm")
        driver.find_element(By.ID, "run-repaint").click()
        wait_for(lambda: "repaint" in status(), 180, "the repaint result")
        driver.save_screenshot(str(tmp_path / "result_repaint.png"))
        assert len(list(songs.glob("*_repaint_*.flac"))) == 1
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=20)
