"""The browser page end to end, in a real headless Chromium driven by Selenium.

Starts ``python -m glama_deploy.app`` on a free port, opens a photo, picks a sample, paints over an
object with real mouse
events on the canvas (one stroke undone, one kept), runs, downloads the result and checks it
against the photo: known pixels identical, the stroke area changed. Then uses the result as the
new input and removes a second thing in tiled mode. Saves a screenshot of the page as a test artifact
(``$GLAMA_TEST_ARTIFACTS``, default ``<tmp>/glama-test-artifacts/app-browser.png``).

Needs Debian's ``chromium`` and ``chromium-driver`` (``bash .ci/browser-setup.sh``); skipped
with that reason only when they are absent.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT, SAMPLES

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("Debian's chromium and chromium-driver are not installed (bash .ci/browser-setup.sh installs "
                "them)", allow_module_level=True)
from selenium import webdriver  # noqa: E402  (dev extra: a missing one is an error, not a skip)
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

PHOTO = SAMPLES / "lomiri-seeding.jpg"
ARTIFACTS = Path(os.environ.get("GLAMA_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "glama-test-artifacts"))


class App:
    """``python -m glama_deploy.app`` as a user starts it; ``url`` waits for the address it prints
    (the browser starts meanwhile)."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "glama_deploy.app", "--port", "0", "--threads", "2",
                                      "--max-upload-mb", "2"], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")), daemon=True).start()

    @property
    def url(self) -> str:
        deadline = time.monotonic() + 120
        while not any("http://" in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"app did not start: {self.proc.stderr.read()}")
            time.sleep(0.1)
        return "http://" + next(line for line in self.lines if "http://" in line).split("http://")[1].split()[0]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def server():
    app = App()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,900", "--force-device-scale-factor=1",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


def wait_state(driver, state: str, timeout: float = 90) -> None:
    WebDriverWait(driver, timeout).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == state,
        f"page never reached state {state!r}; status: {driver.find_element(By.ID, 'status').text}")


def stroke(driver, points: list[tuple[int, int]]) -> None:
    """Press, move through ``points`` (view pixels from the canvas's top-left), release: real mouse input."""
    overlay = driver.find_element(By.ID, "overlay")
    w, h = overlay.size["width"], overlay.size["height"]
    x0, y0 = points[0]
    chain = ActionChains(driver).move_to_element_with_offset(overlay, x0 - w // 2, y0 - h // 2).click_and_hold()
    for (xa, ya), (xb, yb) in zip(points, points[1:], strict=False):
        chain.move_by_offset(xb - xa, yb - ya)
    chain.release().perform()


def stroke_mask(shape: tuple[int, int], points: list[tuple[int, int]], scale: float, brush: int) -> np.ndarray:
    """Where the stroke lies in the full-resolution image (the page's mask, rebuilt from its input)."""
    mask = np.zeros(shape, np.uint8)
    pts = [(round(x / scale), round(y / scale)) for x, y in points]
    for a, b in zip(pts, pts[1:], strict=False):
        cv2.line(mask, a, b, 255, thickness=max(1, round(brush / scale)), lineType=cv2.LINE_8)
    return mask


def download(driver, before: set[str]) -> np.ndarray:
    driver.find_element(By.ID, "download").click()
    deadline = time.monotonic() + 30
    while True:
        new = {p.name for p in driver.downloads.glob("*.png")} - before
        if new:
            path = driver.downloads / new.pop()
            out = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if out is not None:
                return out
        assert time.monotonic() < deadline, "the result was not downloaded"
        time.sleep(0.2)


def check_known_and_filled(result: np.ndarray, photo: np.ndarray, hole: np.ndarray) -> None:
    """Outside the stroke (plus 3 px for the brush's anti-aliased rim) every pixel equals the input;
    inside the stroke's core the picture changed."""
    assert result.shape == photo.shape, "the download is not at the photo's full resolution"
    near = cv2.dilate(hole, np.ones((7, 7), np.uint8)) > 0
    core = cv2.erode(hole, np.ones((7, 7), np.uint8)) > 0
    assert np.array_equal(result[~near], photo[~near]), "known pixels changed"
    diff = np.abs(result.astype(int) - photo.astype(int)).max(axis=2)
    assert (diff[core] > 0).mean() > 0.9, "the painted area was not inpainted"
    assert diff[core].mean() > 5


def exif_rotated_jpeg(path: Path) -> Path:
    """A 300x200 JPEG whose EXIF says "turn 90 degrees" (as phones write them)."""
    jpg = cv2.imencode(".jpg", cv2.imread(str(SAMPLES / "mate-dune.jpg"))[:200, :300])[1].tobytes()
    tiff = b"MM\x00*\x00\x00\x00\x08" + struct.pack(">HHHIHH", 1, 0x0112, 3, 1, 6, 0) + b"\x00" * 4
    app1 = b"Exif\x00\x00" + tiff
    path.write_bytes(jpg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpg[2:])
    return path


def test_paint_run_download(server, browser, tmp_path):
    """A newcomer's path: open a photo, pick a sample, paint over an object, run, download, keep going."""
    driver = browser
    driver.get(server.url)
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#samples button"))
    # a file that is no image: the page says so
    (tmp_path / "notes.png").write_text("not an image")
    driver.find_element(By.ID, "file").send_keys(str(tmp_path / "notes.png"))
    WebDriverWait(driver, 10).until(lambda d: "not an image" in d.find_element(By.ID, "status").text)
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "empty"
    # an upload above the server's limit (2 MB here): the server's 413 message appears on the page
    noise = np.random.default_rng(0).integers(0, 256, (900, 1200, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "noise.png"), noise)
    driver.find_element(By.ID, "file").send_keys(str(tmp_path / "noise.png"))
    wait_state(driver, "ready", 30)
    stroke(driver, [(50, 50), (120, 60)])
    driver.find_element(By.ID, "run").click()
    WebDriverWait(driver, 30).until(lambda d: "Error:" in d.find_element(By.ID, "status").text)
    assert "above this server's limit of 2 MB" in driver.find_element(By.ID, "status").text
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready"
    # "Open…": a phone photo is shown as stored, as the server reads it (else the mask would not fit)
    driver.find_element(By.ID, "file").send_keys(str(exif_rotated_jpeg(tmp_path / "phone.jpg")))
    wait_state(driver, "ready", 30)
    assert "phone.jpg, 300x200" in driver.find_element(By.ID, "input-info").text
    assert "EXIF rotation is ignored" in driver.find_element(By.ID, "status").text
    sample = driver.find_element(By.XPATH, "//span[@id='samples']/button[text()='lomiri-seeding']")
    sample.click()
    WebDriverWait(driver, 30).until(lambda d: "lomiri-seeding" in d.find_element(By.ID, "input-info").text)
    photo = cv2.imread(str(PHOTO))
    h, w = photo.shape[:2]
    scale = driver.execute_script("return document.getElementById('overlay').width") / w
    assert 0.3 < scale <= 1
    brush = int(driver.find_element(By.ID, "size").get_attribute("value"))

    def view(points):  # image pixels -> view pixels on the canvas
        return [(round(x * scale), round(y * scale)) for x, y in points]

    # a stroke that is undone: its area must come back untouched
    stroke(driver, view([(100, 500), (300, 500)]))
    driver.find_element(By.ID, "undo").click()
    # scribble over the dandelion at the lower right
    dandelion = view([(775, 400), (900, 405), (900, 445), (775, 445), (775, 485), (900, 490)])
    stroke(driver, dandelion)
    t0 = time.perf_counter()
    driver.find_element(By.ID, "run").click()
    wait_state(driver, "done")
    status = driver.find_element(By.ID, "status").text
    assert "full mode" in status and f"{w}x{h}" in status, status
    first = download(driver, set())
    check_known_and_filled(first, photo, stroke_mask((h, w), dandelion, scale, brush))
    print(f"run + download: {time.perf_counter() - t0:.1f} s; {status}")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "app-browser.png"
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    # keep going on the result: remove a second thing
    driver.find_element(By.ID, "again").click()
    wait_state(driver, "ready", 30)
    second_stroke = view([(560, 380), (620, 395)])
    stroke(driver, second_stroke)
    Select(driver.find_element(By.ID, "mode")).select_by_value("tiled")  # as big photos run in auto mode
    driver.find_element(By.ID, "run").click()
    wait_state(driver, "done")
    assert "tiled mode" in driver.find_element(By.ID, "status").text
    second = download(driver, {p.name for p in driver.downloads.glob("*.png")})
    check_known_and_filled(second, first, stroke_mask((h, w), second_stroke, scale, brush))
